//! Running the binary under test and the Python reference tool.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::env::test_env;

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_media-offload")
}

/// A hang guard, not a performance assertion: no single run in this suite
/// comes anywhere near it.
const HANG_GUARD: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct Out {
    pub what: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn code(&self) -> i32 {
        self.code.unwrap_or(-1)
    }

    pub fn describe(&self) -> String {
        format!(
            "{}\n  exit: {:?}\n  stdout:\n{}\n  stderr:\n{}",
            self.what,
            self.code,
            indent(&self.stdout),
            indent(&self.stderr)
        )
    }

    /// Asserts exit status 0 and returns self.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "expected success from {}", self.describe());
        self
    }

    /// Asserts the given exit status and returns self.
    #[track_caller]
    pub fn status(self, code: i32) -> Self {
        assert_eq!(self.code, Some(code), "expected exit {code} from {}", self.describe());
        self
    }

    /// The JSON summary (`--json`): the last non-empty stdout line.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        let line = self
            .stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_else(|| panic!("no JSON summary on stdout of {}", self.describe()));
        serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("stdout's last line is not JSON ({e}): {}", self.describe()))
    }

    /// An integer field of the JSON summary.
    #[track_caller]
    pub fn j(&self, field: &str) -> i64 {
        let v = self.json();
        v.get(field)
            .and_then(|x| x.as_i64())
            .unwrap_or_else(|| panic!("JSON summary has no integer {field:?}: {v}\n{}", self.describe()))
    }

    /// An integer in the JSON summary at a dotted path (`remote.media`).
    #[track_caller]
    pub fn jn(&self, path: &str) -> i64 {
        let v = self.json();
        let mut at = &v;
        for part in path.split('.') {
            at = at.get(part).unwrap_or_else(|| panic!("JSON summary has no {path:?}: {v}\n{}", self.describe()));
        }
        at.as_i64().unwrap_or_else(|| panic!("JSON summary's {path:?} is not an integer: {v}\n{}", self.describe()))
    }

    /// Asserts the run did not panic and printed no backtrace.
    #[track_caller]
    pub fn no_panic(&self) -> &Self {
        for bad in ["panicked", "stack backtrace", "RUST_BACKTRACE", "Backtrace"] {
            assert!(
                !self.stderr.contains(bad) && !self.stdout.contains(bad),
                "output mentions {bad:?}: {}",
                self.describe()
            );
        }
        self
    }

    /// Asserts a clean failure as README.md (exit codes) defines it: the given
    /// exit status, no panic or backtrace, and exactly one line starting with
    /// `error: ` on stderr, which must contain every `needle`
    /// (case-insensitive). Returns that line.
    #[track_caller]
    pub fn clean_error(&self, code: i32, needles: &[&str]) -> String {
        assert_eq!(self.code, Some(code), "expected exit {code} from {}", self.describe());
        self.no_panic();
        let errors: Vec<&str> = self.stderr.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(
            errors.len(),
            1,
            "expected exactly one line starting with `error: ` on stderr, got {errors:?}: {}",
            self.describe()
        );
        let line = errors[0].to_string();
        for n in needles {
            assert!(
                line.to_lowercase().contains(&n.to_lowercase()),
                "error line {line:?} does not mention {n:?}: {}",
                self.describe()
            );
        }
        line
    }

    /// Asserts stderr mentions `needle` on some line; returns that line.
    #[track_caller]
    pub fn stderr_line_with(&self, needle: &str) -> String {
        self.stderr
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("stderr has no line mentioning {needle:?}: {}", self.describe()))
            .to_string()
    }
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    | {l}")).collect::<Vec<_>>().join("\n")
}

/// A command with the environment every child gets: the test env's AWS
/// settings, no inherited MEDIA_OFFLOAD_* variables, no way to reach an
/// instance-metadata service or a user's AWS config, backtraces on (so that a
/// panic would be visible in the output).
pub fn command(program: &Path, args: &[&str], cwd: &Path, envs: &[(&str, &str)]) -> Command {
    // Every end-to-end test fails (never skips) outside scripts/test.sh.
    test_env();
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(cwd);
    for (k, _) in std::env::vars() {
        // Nor a user's Swift or OpenStack login (ST_*, OS_*).
        if k.starts_with("MEDIA_OFFLOAD_")
            || (k.starts_with("AWS_") && k != "AWS_DEFAULT_REGION")
            || k.starts_with("ST_")
            || k.starts_with("OS_")
        {
            cmd.env_remove(&k);
        }
    }
    cmd.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
        // A user's ~/.config/openstack/clouds.yaml stays out of it too.
        .env("XDG_CONFIG_HOME", "/nonexistent/xdg-config")
        .env("RUST_BACKTRACE", "1")
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env_remove("PGPASSWORD")
        .env_remove("PGHOST")
        .env_remove("PGPORT")
        .env_remove("PGUSER")
        .env_remove("PGDATABASE")
        .env_remove("PGSSLMODE");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// Waits for a spawned child, collecting its output (with a hang guard).
pub fn wait_output(mut child: Child, what: String) -> Out {
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t1 = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = so.read_to_end(&mut b);
        b
    });
    let t2 = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = se.read_to_end(&mut b);
        b
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > HANG_GUARD {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} hung for {HANG_GUARD:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = String::from_utf8_lossy(&t1.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&t2.join().unwrap()).into_owned();
    Out { what, code: status.code(), stdout, stderr }
}

/// Runs media-offload with `args` in `cwd` with extra `envs`.
pub fn run(args: &[&str], cwd: &Path, envs: &[(&str, &str)]) -> Out {
    let child = command(Path::new(bin()), args, cwd, envs).spawn().expect("spawning media-offload");
    wait_output(child, format!("media-offload {}", args.join(" ")))
}

/// Runs `program` (media-offload under another name) with `args` in `cwd`.
pub fn run_program(program: &str, args: &[&str], cwd: &Path, envs: &[(&str, &str)]) -> Out {
    let child = command(Path::new(program), args, cwd, envs).spawn().expect("spawning media-offload");
    wait_output(child, format!("{program} {}", args.join(" ")))
}

/// Starts media-offload without waiting for it.
pub fn spawn(args: &[&str], cwd: &Path, envs: &[(&str, &str)]) -> Child {
    command(Path::new(bin()), args, cwd, envs).spawn().expect("spawning media-offload")
}

/// Runs media-offload as another user (`uid`, `gid`), as root may.
pub fn run_as(uid: u32, gid: u32, args: &[&str], cwd: &Path) -> Out {
    use std::os::unix::process::CommandExt;
    let child = command(Path::new(bin()), args, cwd, &[]).uid(uid).gid(gid).spawn().expect("spawning media-offload");
    wait_output(child, format!("media-offload {} (as uid {uid})", args.join(" ")))
}

/// Runs the Python reference tool `s3_media_upload` 1.7.0 (which always uses
/// `./cache.db` in `cwd`).
pub fn run_python(args: &[&str], cwd: &Path, envs: &[(&str, &str)]) -> Out {
    let tool = &test_env().python_tool;
    let child = command(tool, args, cwd, envs).spawn().expect("spawning s3_media_upload");
    wait_output(child, format!("s3_media_upload {}", args.join(" ")))
}
