//! Shortcuts for the runs most tests make, and the checks they share.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::cache::cache_rows;
use super::run::{Out, run, run_python, spawn, wait_output};
use super::s3::S3;
use super::store::{Homeserver, Media, files_under};
use super::yaml::{Params, pstr};
use super::{now_ms, test_env};

/// Where uploads go: an S3 bucket, a Swift container or a local directory store.
pub enum Dest<'a> {
    S3(&'a S3),
    Swift(&'a super::swift::Swift),
    Dir(PathBuf),
}

impl Dest<'_> {
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        match self {
            Dest::S3(s3) => s3.get(key),
            Dest::Swift(sw) => sw.get(key),
            Dest::Dir(d) => std::fs::read(d.join(key)).ok(),
        }
    }

    pub fn keys(&self) -> Vec<String> {
        match self {
            Dest::S3(s3) => s3.keys(),
            Dest::Swift(sw) => sw.keys(),
            Dest::Dir(d) => files_under(d).into_keys().collect(),
        }
    }

    /// Stores `data` at `key` as another tool would (no metadata).
    pub fn put(&self, key: &str, data: &[u8]) {
        match self {
            Dest::S3(s3) => s3.put(key, data, &[]),
            Dest::Swift(sw) => sw.put(key, data),
            Dest::Dir(d) => {
                let p = d.join(key);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, data).unwrap();
            }
        }
    }

    /// Stores every file of `files` (relative path -> content) at `prefix + path`.
    pub fn put_all(&self, prefix: &str, files: &std::collections::BTreeMap<String, Vec<u8>>) {
        for (rel, data) in files {
            self.put(&format!("{prefix}{rel}"), data);
        }
    }
}

impl Homeserver {
    /// media-offload in this homeserver's directory.
    pub fn mo(&self, args: &[&str]) -> Out {
        run(args, self.cwd(), &[])
    }

    pub fn mo_env(&self, args: &[&str], envs: &[(&str, &str)]) -> Out {
        run(args, self.cwd(), envs)
    }

    /// `media-offload ARGS --bucket B --endpoint-url MOTO --prefix P`: ARGS
    /// (ending with migrate, purge or check and its own flags) with the
    /// store flags those subcommands share.
    pub fn mo_store(&self, s3: &S3, prefix: &str, args: &[&str]) -> Out {
        self.mo_store_env(s3, prefix, args, &[])
    }

    pub fn mo_store_env(&self, s3: &S3, prefix: &str, args: &[&str], envs: &[(&str, &str)]) -> Out {
        let flags = s3.store_flags(prefix);
        let mut all: Vec<&str> = args.to_vec();
        all.extend(flags.iter().map(String::as_str));
        self.mo_env(&all, envs)
    }

    /// The Python tool in this homeserver's directory.
    pub fn py(&self, args: &[&str]) -> Out {
        run_python(args, self.cwd(), &[])
    }

    /// `media-offload --json update-db DURATION`, which must succeed.
    #[track_caller]
    pub fn update_db(&self, duration: &str) -> Out {
        self.mo(&["--json", "update-db", duration]).ok()
    }

    /// `media-offload --json --no-progress upload MEDIA BUCKET --endpoint-url MOTO EXTRA...`
    pub fn upload(&self, s3: &S3, extra: &[&str]) -> Out {
        self.upload_via(&s3.endpoint, &s3.bucket, extra)
    }

    /// The same through another endpoint (a proxy in front of moto).
    pub fn upload_via(&self, endpoint: &str, bucket: &str, extra: &[&str]) -> Out {
        let media = self.media_arg();
        let mut args: Vec<&str> = vec!["--json", "--no-progress", "upload", &media, bucket, "--endpoint-url", endpoint];
        args.extend_from_slice(extra);
        self.mo(&args)
    }

    /// The same against a local directory store.
    pub fn upload_dir(&self, dir: &Path, extra: &[&str]) -> Out {
        let media = self.media_arg();
        let d = dir.to_string_lossy().into_owned();
        let mut args: Vec<&str> = vec!["--json", "--no-progress", "upload", &media, &d];
        args.extend_from_slice(extra);
        self.mo(&args)
    }

    /// The Python tool's `upload` to moto.
    pub fn py_upload(&self, s3: &S3, extra: &[&str]) -> Out {
        let media = self.media_arg();
        let ep = &test_env().s3_endpoint;
        let mut args: Vec<&str> = vec!["--no-progress", "upload", &media, &s3.bucket, "--endpoint-url", ep];
        args.extend_from_slice(extra);
        self.py(&args)
    }

    /// Asserts every file of `m` is gone locally and stored, byte-identical,
    /// at `prefix + relative path`.
    #[track_caller]
    pub fn assert_offloaded(&self, m: &Media, dest: &Dest, prefix: &str) {
        for rel in m.rel_paths() {
            assert!(!self.exists(&rel), "{rel} should have been deleted locally");
            let key = format!("{prefix}{rel}");
            let got = dest.get(&key).unwrap_or_else(|| panic!("object {key} is missing"));
            assert!(got == self.content(&rel), "object {key} differs from the original file");
        }
    }

    /// Asserts every file of `m` is still local and stored, byte-identical.
    #[track_caller]
    pub fn assert_copied(&self, m: &Media, dest: &Dest, prefix: &str) {
        self.assert_local_intact(m);
        for rel in m.rel_paths() {
            let key = format!("{prefix}{rel}");
            let got = dest.get(&key).unwrap_or_else(|| panic!("object {key} is missing"));
            assert!(got == self.content(&rel), "object {key} differs from the original file");
        }
    }

    /// The safety invariant: every generated file that is no longer on disk
    /// has a byte-identical object. Returns how many files are gone.
    #[track_caller]
    pub fn assert_nothing_lost(&self, dest: &Dest, prefix: &str) -> usize {
        let mut gone = 0;
        for (rel, data) in self.generated() {
            if !self.exists(rel) {
                gone += 1;
                let key = format!("{prefix}{rel}");
                match dest.get(&key) {
                    Some(obj) if &obj == data => {}
                    Some(obj) => panic!(
                        "LOST DATA: {rel} was deleted but its object has {} bytes (file had {})",
                        obj.len(),
                        data.len()
                    ),
                    None => panic!("LOST DATA: {rel} was deleted but there is no object {key}"),
                }
            }
        }
        gone
    }
}

/// A realistic small store: many small files, some medium ones and one
/// large enough for a multipart upload, local and remote, with thumbnails;
/// its rows already in cache.db.
pub fn realistic_store() -> Homeserver {
    let mut hs = Homeserver::sqlite();
    let mut items = Vec::new();
    for i in 0..160usize {
        let m = if i % 5 == 0 {
            Media::remote("remote.example", &format!("remote{i}"), &format!("fsid{i:04}abcdefghijklmnop"))
        } else {
            Media::local(&hs.new_id())
        };
        let m = m.size(512 + (i * 7919) % 40_000);
        items.push(if i % 4 == 0 { m.with_thumbs() } else { m });
    }
    for _ in 0..4 {
        items.push(Media::local(&hs.new_id()).size(2 * 1024 * 1024 + 3));
    }
    items.push(Media::local(&hs.new_id()).size(12 * 1024 * 1024 + 5));
    hs.add_all(items);
    hs.update_db("30d");
    hs
}

/// `n` local media of different sizes with thumbnails; their rows in cache.db.
pub fn local_media_store(n: usize) -> Homeserver {
    let mut hs = Homeserver::sqlite();
    hs.add_all((0..n).map(|i| Media::local(&hs.new_id()).size(2000 + i * 100).with_thumbs()).collect());
    hs.update_db("30d");
    hs
}

/// After interrupted or failed runs: one more `upload --delete` (`args`)
/// must succeed and leave every file offloaded with an identical copy and
/// every cache row marked deleted; a further run must find nothing to do.
#[track_caller]
pub fn rerun_completes_then_nothing_changes(hs: &Homeserver, args: &[&str], dest: &Dest) {
    let out = hs.mo(args).ok();
    out.no_panic();
    assert!(hs.local_files().is_empty(), "rerun left files: {:?}", hs.local_files().keys().collect::<Vec<_>>());
    assert_eq!(hs.assert_nothing_lost(dest, ""), hs.generated().len());
    for row in cache_rows(&hs.cache_db()) {
        assert!(row.known_deleted, "{row:?}");
    }
    let mut again = args.to_vec();
    if !again.contains(&"--json") {
        again.insert(0, "--json");
    }
    let out = hs.mo(&again).ok();
    assert_eq!(out.j("uploaded_files"), 0);
    assert_eq!(out.j("deleted_files"), 0);
}

/// Keys `media` would be stored under.
pub fn keys_of(media: &[&Media], prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = media.iter().flat_map(|m| m.rel_paths()).map(|r| format!("{prefix}{r}")).collect();
    v.sort();
    v
}

impl S3 {
    /// `--bucket B --endpoint-url MOTO --prefix P`.
    pub fn store_flags(&self, prefix: &str) -> Vec<String> {
        ["--bucket", &self.bucket, "--endpoint-url", &self.endpoint, "--prefix", prefix]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// The S3 storage provider's `config` for this bucket on moto, keys
    /// under `prefix` (credentials are up to the caller).
    pub fn provider_config(&self, prefix: &str) -> Params {
        vec![
            pstr("bucket", &self.bucket),
            pstr("endpoint_url", &self.endpoint),
            pstr("region_name", "us-east-1"),
            pstr("prefix", prefix),
        ]
    }
}

/// The seed of a test's random choices: `MO_FAULT_SEED` if set, else a new
/// one. Printed either way, so a failure can be replayed.
pub fn fault_seed(test: &str) -> u64 {
    let seed = match std::env::var("MO_FAULT_SEED") {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("MO_FAULT_SEED={v:?} is not a whole number")),
        Err(_) => now_ms() as u64 % 1_000_000_007,
    };
    eprintln!("{test}: seed {seed} (replay with MO_FAULT_SEED={seed})");
    seed
}

/// A small seeded generator (an LCG): the same seed, the same choices.
pub struct SeededRng(u64);

impl SeededRng {
    pub fn new(seed: u64) -> SeededRng {
        SeededRng(seed)
    }

    /// The next number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Runs media-offload with `args` in `cwd`, to be killed with SIGKILL at
/// the crash point `at` (`name` or `name:n`, the n-th time it is reached;
/// see `src/faults.rs`). True when it was killed there; false when it
/// finished first, which it must have done successfully.
#[track_caller]
pub fn crashed_at(args: &[&str], cwd: &Path, at: &str) -> bool {
    let child = spawn(args, cwd, &[("MEDIA_OFFLOAD_CRASH_AT", at)]);
    let out = wait_output(child, format!("media-offload {} (crash at {at})", args.join(" ")));
    if out.code.is_none() {
        return true; // killed by the signal it sent itself
    }
    assert_eq!(out.code, Some(0), "failed on its own before reaching {at}: {}", out.describe());
    false
}

/// A run paused at a named point (`MEDIA_OFFLOAD_PAUSE_AT`): the test acts
/// while it waits, then lets it go on.
pub struct Paused {
    child: Option<std::process::Child>,
    dir: tempfile::TempDir,
    what: String,
}

impl Paused {
    /// Starts media-offload with `args` and waits until it reaches `point`.
    #[track_caller]
    pub fn start(args: &[&str], cwd: &Path, point: &str) -> Paused {
        Paused::start_env(args, cwd, point, &[])
    }

    /// The same with extra environment variables.
    #[track_caller]
    pub fn start_env(args: &[&str], cwd: &Path, point: &str, envs: &[(&str, &str)]) -> Paused {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_string_lossy().into_owned();
        let mut all = vec![("MEDIA_OFFLOAD_PAUSE_AT", point), ("MEDIA_OFFLOAD_PAUSE_DIR", d.as_str())];
        all.extend_from_slice(envs);
        let mut child = spawn(args, cwd, &all);
        let what = format!("media-offload {} (paused at {point})", args.join(" "));
        let start = std::time::Instant::now();
        while !dir.path().join("paused").exists() {
            if let Some(status) = child.try_wait().unwrap() {
                let out = wait_output(child, what);
                panic!("finished ({status:?}) without reaching {point}: {}", out.describe());
            }
            assert!(start.elapsed() < Duration::from_secs(120), "{what}: never reached the point");
            std::thread::sleep(Duration::from_millis(10));
        }
        Paused { child: Some(child), dir, what }
    }

    /// Lets the run go on and waits for it.
    pub fn resume(mut self) -> Out {
        std::fs::write(self.dir.path().join("resume"), b"").unwrap();
        wait_output(self.child.take().unwrap(), self.what.clone())
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = std::fs::write(self.dir.path().join("resume"), b"");
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts media-offload with `args` in `cwd`, sends it SIGKILL after
/// `delay_ms` and waits for it. True when the kill hit the running process;
/// false when it had already finished, which it must have done successfully.
#[track_caller]
pub fn killed_after(args: &[&str], cwd: &Path, delay_ms: u64) -> bool {
    let mut child = spawn(args, cwd, &[]);
    std::thread::sleep(Duration::from_millis(delay_ms));
    let _ = child.kill(); // SIGKILL
    let status = child.wait().unwrap();
    if status.signal() == Some(9) {
        return true;
    }
    assert_eq!(status.code(), Some(0), "media-offload {} failed on its own before the kill", args.join(" "));
    false
}
