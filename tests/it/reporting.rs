//! What people and journals read: quiet no-op runs, dry runs that say
//! "would" and list in a stable order, plurals, sizes with units, help
//! that lists what each subcommand uses, S3 failures in one short line,
//! and demo hints that run as printed.

use crate::common::*;

fn offloadable(n: usize) -> Homeserver {
    let mut hs = Homeserver::sqlite();
    hs.add_all((0..n).map(|i| Media::local(&hs.new_id()).size(1000 + i).with_thumbs()).collect());
    hs
}

#[test]
fn a_no_op_run_under_q_prints_nothing_and_one_that_did_something_prints_its_summary() {
    let hs = offloadable(3);
    let s3 = S3::new();
    let first = hs.mo_store(&s3, "", &["-q", "--no-progress", "migrate"]).ok();
    assert!(first.stdout.contains("Uploaded 3 media out of 3"), "{}", first.describe());
    let again = hs.mo_store(&s3, "", &["-q", "--no-progress", "migrate"]).ok();
    assert_eq!((again.stdout.as_str(), again.stderr.as_str()), ("", ""), "{}", again.describe());
    let check = hs.mo_store(&s3, "", &["-q", "check"]).ok();
    assert_eq!(check.stdout, "", "{}", check.describe());
    // Without -q the summary is there, all zeros.
    let loud = hs.mo_store(&s3, "", &["--no-progress", "migrate"]).ok();
    assert!(loud.stdout.contains("Uploaded 0 files"), "{}", loud.describe());
}

#[test]
fn dry_runs_say_would_on_every_line_and_list_in_the_same_order_every_time() {
    let hs = offloadable(30);
    let s3 = S3::new();
    let run = || hs.mo_store(&s3, "", &["--no-progress", "migrate", "--dry-run", "--concurrency", "8"]).ok();
    let (a, b) = (run(), run());
    let listing = |o: &Out| o.stdout.lines().filter(|l| l.starts_with("would ")).map(str::to_owned).collect::<Vec<_>>();
    let (la, lb) = (listing(&a), listing(&b));
    assert_eq!(la.len(), 30 * 3 * 2, "an upload and a delete line per file: {}", a.describe());
    assert_eq!(la, lb, "two dry runs list the same lines in the same order");
    let mut sorted = la.clone();
    sorted.sort();
    assert_eq!(la, sorted, "listed in a stable order");
    let summary: Vec<&str> = a.stdout.lines().filter(|l| !l.starts_with("would ")).collect();
    assert!(!summary.is_empty());
    for line in &summary {
        assert!(line.starts_with("Would "), "a dry run's summary line without 'would': {line:?}\n{}", a.describe());
    }
    assert!(!a.stderr.contains("/s"), "no transfer rate in a dry run: {}", a.describe());
}

#[test]
fn counts_have_the_right_plural() {
    let hs = offloadable(1);
    let s3 = S3::new();
    let out = hs.mo_store(&s3, "", &["--no-progress", "migrate"]).ok();
    assert!(out.stdout.contains("Synced 1 new row\n"), "{}", out.describe());
    assert!(out.stdout.contains("Uploaded 3 files"), "{}", out.describe());
    let check = hs.mo_store(&s3, "", &["check"]).ok();
    assert!(check.stdout.starts_with("Checked 1 media row, 0 files, 3 objects"), "{}", check.describe());
}

#[test]
fn size_gt_takes_units() {
    let mut hs = Homeserver::sqlite();
    let small = hs.add(Media::local(&hs.new_id()).size(1000));
    let big = hs.add(Media::local(&hs.new_id()).size(2 * 1024 * 1024));
    let out = hs.mo(&["--json", "purge", "--local-older-than", "30d", "--size-gt", "1MiB"]).ok();
    assert_eq!(out.jn("local.media"), 1, "{}", out.describe());
    hs.assert_local_gone(&big);
    hs.assert_local_intact(&small);
    hs.mo(&["purge", "--local-older-than", "30d", "--size-gt", "lots"]).clean_error(2, &["lots", "10M"]);
}

#[test]
fn help_puts_global_options_apart_and_lists_only_what_a_subcommand_uses() {
    let hs = Homeserver::sqlite();
    let purge = hs.mo(&["purge", "--help"]).ok().stdout;
    assert!(purge.contains("Global options:") && purge.contains("Homeserver and store:"), "{purge}");
    for unused in ["--storage-class", "--sse-customer-key-file", "--settle-time"] {
        assert!(!purge.contains(unused), "purge --help lists {unused}: {purge}");
    }
    let check = hs.mo(&["check", "--help"]).ok().stdout;
    assert!(!check.contains("--concurrency"), "{check}");
    let upload = hs.mo(&["upload", "--help"]).ok().stdout;
    assert!(upload.contains("starting with /, ./, ../ or file://"), "the BUCKET rule as applied: {upload}");
}

#[test]
fn s3_failures_are_one_short_line_and_a_closed_endpoint_fails_in_seconds() {
    let hs = offloadable(2);
    hs.update_db("30d");
    let media = hs.media_arg();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    for (endpoint, needle) in [
        (format!("http://127.0.0.1:{port}"), "connection refused"),
        ("http://no-such-host.invalid:9000".to_owned(), "could not be resolved"),
        ("s3.example.net".to_owned(), "add http:// or https://"),
    ] {
        let started = std::time::Instant::now();
        let out = hs.mo(&["--no-progress", "upload", &media, "bucket", "--endpoint-url", &endpoint, "--delete"]);
        let line = out.clean_error(1, &[needle]);
        for dump in ["DispatchFailure", "ConnectorError", "source:", "Some(", "{ "] {
            assert!(!out.stderr.contains(dump), "a debug dump ({dump}) in {}", out.describe());
        }
        assert!(line.len() < 300, "one short line: {line}");
        // Not a timing assertion on the tool's speed: the retries are few and
        // logged as they happen, so there is no silent minute-long wait.
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "{}", out.describe());
        if needle == "connection refused" {
            assert!(out.stderr.contains("(attempt 1 of 3); retrying"), "the retries are logged: {}", out.describe());
        }
    }
    assert!(hs.local_files() == *hs.generated());
}

#[test]
fn the_demos_hints_run_as_printed() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let d = demo.to_string_lossy().into_owned();
    // Not on PATH: the hints must name the binary by its path.
    let out = run(&["demo", "--dir", &d, "--files", "60"], dir.path(), &[("PATH", "/usr/bin:/bin")]).ok();
    let hints: Vec<&str> =
        out.stdout.lines().filter(|l| l.starts_with("  ") && l.contains(" --config ")).map(str::trim).collect();
    assert_eq!(hints.len(), 2, "{}", out.describe());
    for hint in hints {
        let st = std::process::Command::new("sh")
            .arg("-c")
            .arg(hint)
            .current_dir("/")
            .env("PATH", "/usr/bin:/bin")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "the hint {hint:?} does not run as printed: {st:?}");
    }
}

#[test]
fn progress_shows_files_bytes_and_the_elapsed_time_at_a_terminal_and_in_logs() {
    let hs = offloadable(12);
    hs.update_db("30d");
    let s3 = S3::new();
    let media = hs.media_arg();
    // Without a terminal: plain lines, the last one with the totals and the time.
    let out = hs.mo(&["upload", &media, &s3.bucket, "--endpoint-url", &s3.endpoint]).ok();
    let last = out.stderr_line_with("upload: 12/12 media (100%)");
    assert!(last.contains(", 36 files, ") && last.contains(" uploaded at ") && last.contains(", done in "), "{last}");
    // At a terminal (script(1) gives the run one): a bar, ending the same way.
    let hs = offloadable(12);
    hs.update_db("30d");
    let media = hs.media_arg();
    let bin = crate::common::bin();
    let cmd = format!("{bin} upload {media} {} --endpoint-url {} --delete", s3.bucket, s3.endpoint);
    let tty = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(hs.cwd())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("TERM", "xterm")
        .output()
        .unwrap();
    let screen = String::from_utf8_lossy(&tty.stdout);
    assert!(tty.status.success(), "{screen}");
    assert!(screen.contains("12/12 media, 36 files, "), "{screen}");
    assert!(screen.contains(", done in "), "{screen}");
    hs.assert_nothing_lost(&Dest::S3(&s3), "");
}
