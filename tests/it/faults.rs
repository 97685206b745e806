//! Faults the tool must survive without losing a file: an S3 service that
//! errs, throttles, resets and stalls (a fault-injecting proxy in front of
//! moto), one that fails every request, kill -9 at random moments, two runs
//! at once, and a full disk under cache.db.
//!
//! Random choices are seeded; each test prints its seed, and
//! `MO_FAULT_SEED=N` replays it. Timing only decides when to kill; every
//! assertion is about the state left behind.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

/// Asserts that every generated file missing from disk has an object, read
/// straight from moto, with the same MD5 as the original bytes; files
/// already checked (in `verified`) are skipped. Returns how many are gone.
#[track_caller]
fn assert_gone_files_have_identical_objects(hs: &Homeserver, s3: &S3, verified: &mut BTreeSet<String>) -> usize {
    let mut gone = 0;
    for (rel, data) in hs.generated() {
        if hs.exists(rel) {
            continue;
        }
        gone += 1;
        if verified.contains(rel) {
            continue;
        }
        let object = s3.get(rel).unwrap_or_else(|| panic!("LOST DATA: {rel} was deleted but there is no object"));
        assert_eq!(md5_hex(&object), md5_hex(data), "LOST DATA: {rel} was deleted but its object differs");
        verified.insert(rel.clone());
    }
    gone
}

fn upload_args<'a>(hs_media: &'a str, bucket: &'a str, endpoint: &'a str) -> Vec<&'a str> {
    vec!["--no-progress", "upload", hs_media, bucket, "--endpoint-url", endpoint, "--delete"]
}

// --------------------------------------------------------- flaky service ---

#[test]
fn with_ten_percent_faults_upload_delete_completes_and_every_deleted_file_has_an_identical_object() {
    let seed = fault_seed("10% faults");
    let hs = realistic_store();
    let s3 = S3::new();
    let proxy = FaultProxy::start(&s3.endpoint, FaultPlan::random(0.10, seed));
    let out = hs.upload_via(&proxy.endpoint, &s3.bucket, &["--delete"]);
    let counts = proxy.counts();
    eprintln!("10% faults: {counts}");
    out.no_panic();
    // every fault kind was really injected, and a fair share of requests failed
    for kind in Fault::ALL {
        assert!(counts.of(kind) > 0, "no {kind:?} was injected: {counts}");
    }
    assert!(counts.failures() * 20 >= counts.requests, "fewer faults than planned: {counts}");
    // nothing lost, whatever the outcome
    let mut verified = BTreeSet::new();
    assert_gone_files_have_identical_objects(&hs, &s3, &mut verified);
    // the retries carried every file through
    assert_eq!(out.code(), 0, "the run did not complete through the faults ({counts}): {}", out.describe());
    assert!(hs.local_files().is_empty(), "files left: {:?}", hs.local_files().keys().collect::<Vec<_>>());
    assert_eq!(assert_gone_files_have_identical_objects(&hs, &s3, &mut verified), hs.generated().len());
    let expected: Vec<String> = hs.generated().keys().cloned().collect();
    assert_eq!(s3.keys(), expected, "the bucket holds exactly the offloaded files");
    // A conditional PUT whose answer was lost finds its object there on the
    // retry: counted as already present, proven by its ETag.
    assert_eq!((out.j("uploaded_files") + out.j("already_present_files")) as usize, hs.generated().len());
    assert!(cache_rows(&hs.cache_db()).iter().all(|r| r.known_deleted));
}

#[test]
fn when_the_answer_to_a_finished_upload_is_lost_the_retry_still_ends_verified() {
    // The server stored the object (PutObject) or assembled it
    // (CompleteMultipartUpload), then the connection broke before the tool
    // heard so: the retry must cope, and the file go only once verified.
    let mut hs = Homeserver::sqlite();
    let mut items: Vec<Media> = (0..5).map(|i| Media::local(&hs.new_id()).size(3000 + i)).collect();
    items.push(Media::local(&hs.new_id()).size(12 * 1024 * 1024 + 5));
    hs.add_all(items);
    hs.update_db("30d");
    let s3 = S3::new();
    let plan = FaultPlan {
        kinds: vec![Fault::ResetResponse, Fault::StallReset],
        stall: Duration::from_millis(500),
        only: Some(|line: &str| {
            let completes = line.starts_with("POST ") && line.contains("uploadId=");
            let puts_whole = line.starts_with("PUT ") && !line.contains("partNumber=");
            completes || puts_whole
        }),
        limit: Some(4),
        ..FaultPlan::random(1.0, fault_seed("lost answers"))
    };
    let proxy = FaultProxy::start(&s3.endpoint, plan);
    let out = hs.upload_via(&proxy.endpoint, &s3.bucket, &["--delete"]);
    eprintln!("lost answers: {}", proxy.counts());
    assert_eq!(proxy.counts().total(), 4, "{}", proxy.counts());
    out.ok();
    let mut verified = BTreeSet::new();
    assert_eq!(assert_gone_files_have_identical_objects(&hs, &s3, &mut verified), hs.generated().len());
}

/// A few media (one multipart-sized), their rows in cache.db.
fn few_media() -> Homeserver {
    let mut hs = Homeserver::sqlite();
    hs.add_all(vec![
        Media::local(&hs.new_id()).size(2000).thumb("32-32-image-png-crop", 300),
        Media::local(&hs.new_id()).size(9 * 1024 * 1024),
    ]);
    hs.update_db("30d");
    hs
}

#[test]
fn a_store_that_fails_every_request_stops_the_run_with_one_error_and_deletes_nothing() {
    let hs = few_media();
    let s3 = S3::new();
    let cache = cache_dump(&hs.cache_db());
    let proxy = FaultProxy::start(&s3.endpoint, FaultPlan::every_request_fails(fault_seed("every request fails")));
    let out = hs.upload_via(&proxy.endpoint, &s3.bucket, &["--delete"]);
    eprintln!("every request fails: {}\n{}", proxy.counts(), out.describe());
    let line = out.clean_error(1, &["could not reach", &proxy.endpoint]);
    assert!(!line.contains("ServiceError {"), "an error line, not a dump of the SDK's structures: {line}");
    assert_eq!(proxy.counts().failures(), proxy.counts().requests, "{}", proxy.counts());
    assert!(proxy.counts().requests > 1, "the tool gave up without retrying: {}", proxy.counts());
    assert!(hs.local_files() == *hs.generated(), "files were deleted or changed");
    assert_eq!(cache_dump(&hs.cache_db()), cache);
    assert!(s3.keys().is_empty());
}

#[test]
fn a_store_that_fails_every_object_request_fails_each_file_and_keeps_them_all() {
    let hs = few_media();
    let s3 = S3::new();
    let cache = cache_dump(&hs.cache_db());
    // the bucket answers, so the run starts; then every object request fails
    let plan = FaultPlan {
        spare_bucket_requests: true,
        ..FaultPlan::every_request_fails(fault_seed("every object request fails"))
    };
    let proxy = FaultProxy::start(&s3.endpoint, plan);
    let out = hs.upload_via(&proxy.endpoint, &s3.bucket, &["--delete"]);
    eprintln!("every object request fails: {}\n{}", proxy.counts(), out.describe());
    out.clean_error(3, &["3 item(s) failed", "kept"]);
    for line in out.stderr.lines().filter(|l| l.contains(" ERROR ")) {
        assert!(!line.contains("ServiceError {"), "a per-file error line, not a dump of the SDK's structures: {line}");
    }
    assert_eq!(out.j("failed_files"), 3);
    assert_eq!(out.j("deleted_files"), 0);
    assert_eq!(proxy.counts().failures() + 1, proxy.counts().requests, "{}", proxy.counts());
    assert!(hs.local_files() == *hs.generated(), "files were deleted or changed");
    assert_eq!(cache_dump(&hs.cache_db()), cache);
    assert!(s3.keys().is_empty(), "no complete object can exist: {:?}", s3.keys());
}

// --------------------------------------------------------------- kill -9 ---

#[test]
fn kill_9_at_20_random_moments_never_loses_a_file_and_a_rerun_completes() {
    let mut rng = SeededRng::new(fault_seed("kill -9"));
    let mut hs = realistic_store();
    let s3 = S3::new();
    let media = hs.media_arg();
    let args = upload_args(&media, &s3.bucket, &s3.endpoint);
    let mut verified = BTreeSet::new();
    let (mut kills, mut runs) = (0, 0);
    while kills < 20 {
        runs += 1;
        assert!(runs <= 100, "only {kills} of 100 runs were still working when killed");
        if hs.local_files().is_empty() {
            // all offloaded: more work, so that the next kill lands in a run that has some
            let mut items: Vec<Media> =
                (0..100).map(|i| Media::local(&hs.new_id()).size(1000 + i * 997).with_thumbs()).collect();
            items.push(Media::local(&hs.new_id()).size(9 * 1024 * 1024 + 7));
            hs.add_all(items);
            hs.update_db("30d");
        }
        let delay = rng.below(1000);
        let killed = killed_after(&args, hs.cwd(), delay);
        let gone = assert_gone_files_have_identical_objects(&hs, &s3, &mut verified);
        let total = hs.generated().len();
        if killed {
            kills += 1;
            eprintln!("kill {kills} after {delay} ms: {gone}/{total} files offloaded so far");
        } else {
            // it had finished before the kill: not one of the 20 moments
            eprintln!("run {runs} finished before {delay} ms: {gone}/{total} files offloaded");
        }
    }
    // the kernel dropped the lock with each process: a rerun finishes the job
    rerun_completes_then_nothing_changes(&hs, &args, &Dest::S3(&s3));
}

// ----------------------------------------------------------- two at once ---

#[test]
fn of_two_runs_started_together_one_works_and_the_other_exits_75_naming_the_lock() {
    let hs = local_media_store(20);
    let s3 = S3::new();
    // Object requests wait at the proxy until the test lets them through, so
    // the run that takes the lock cannot finish before the other has tried.
    let proxy = FaultProxy::start(&s3.endpoint, FaultPlan::none());
    proxy.close_gate();
    let media = hs.media_arg();
    let mut args = upload_args(&media, &s3.bucket, &proxy.endpoint);
    args.insert(0, "--json");
    let mut runs = vec![spawn(&args, hs.cwd(), &[]), spawn(&args, hs.cwd(), &[])];

    let loser = wait_for_first_exit(&mut runs);
    let out = wait_output(runs.remove(loser), "the run that did not get the lock".into());
    let line = out.clean_error(75, &["another media-offload run (pid ", "holds the lock", "cache.db.lock"]);
    assert!(line.contains(", started "), "the holder's start time: {line}");
    assert!(out.stdout.trim().is_empty(), "the refused run printed a summary: {}", out.describe());
    assert!(hs.local_files() == *hs.generated(), "nothing may move while the winner waits at the gate");

    proxy.open_gate();
    let out = wait_output(runs.remove(0), "the run that holds the lock".into()).ok();
    assert_eq!(out.j("uploaded_files") as usize, hs.generated().len());
    assert!(hs.local_files().is_empty());
    assert_eq!(hs.assert_nothing_lost(&Dest::S3(&s3), ""), hs.generated().len());
}

/// Index of the first child to exit (a hang guard, not a timing assertion).
fn wait_for_first_exit(children: &mut [std::process::Child]) -> usize {
    let start = Instant::now();
    loop {
        for (i, c) in children.iter_mut().enumerate() {
            if c.try_wait().unwrap().is_some() {
                return i;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(300), "neither run finished");
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ------------------------------------------------------------ full disk ---

/// A small tmpfs, unmounted when dropped (also when the test fails).
struct SmallFs {
    path: PathBuf,
}

impl SmallFs {
    fn mount(path: &Path, size: &str) -> SmallFs {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "mo-test-tmpfs"])
            .arg(path)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs under cache.db and needs root (CAP_SYS_ADMIN) for it: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallFs { path: path.to_owned() }
    }

    /// Fills the file system with `filler` until it is full.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        loop {
            match f.write_all(&chunk) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => panic!("filling {}: {e}", self.path.display()),
            }
        }
        // and the last bytes a page-sized write could not take
        while f.write_all(&[0]).is_ok() {}
        filler
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.path).status().is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

fn integrity_check(db: &Path) -> String {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap()
}

/// cache.db lives on a real file system that fills up: a 1 MiB tmpfs the
/// test mounts (it needs root, as the whole suite does) and fills with a
/// filler file. SQLite then fails at its first journal write: update-db with
/// new rows, and upload when it records the media it offloaded.
#[test]
fn a_full_disk_under_cache_db_stops_with_an_error_and_loses_nothing() {
    let mut hs = Homeserver::sqlite();
    hs.add_all((0..40).map(|i| Media::local(&hs.new_id()).size(500 + i * 50).with_thumbs()).collect());
    let fs = SmallFs::mount(&hs.cwd().join("small"), "1m");
    let db = fs.path.join("cache.db");
    let db_arg = db.to_string_lossy().into_owned();
    hs.mo(&["--cache-db", &db_arg, "update-db", "30d"]).ok();
    let earlier = cache_rows(&db);
    assert_eq!(earlier.len(), 40);
    let filler = fs.fill();

    // update-db: 3000 new rows do not fit
    hs.add_all((0..3000).map(|i| Media::local(&format!("{i:08}fullfullfullfull")).no_original()).collect());
    let out = hs.mo(&["--cache-db", &db_arg, "update-db", "30d"]);
    eprintln!("full disk, update-db: {}", out.clean_error(1, &[&db_arg]));
    assert_eq!(integrity_check(&db), "ok");
    assert_eq!(cache_rows(&db), earlier, "the rows from before the disk filled up");

    // upload --delete: files go only with verified copies; recording that
    // fails, and says so
    let s3 = S3::new();
    let media = hs.media_arg();
    let mut args = vec!["--cache-db", db_arg.as_str()];
    args.extend(upload_args(&media, &s3.bucket, &s3.endpoint));
    let out = hs.mo(&args);
    eprintln!("full disk, upload: {}", out.clean_error(1, &[&db_arg]));
    assert_eq!(integrity_check(&db), "ok");
    assert_eq!(cache_rows(&db), earlier);
    let gone = hs.assert_nothing_lost(&Dest::S3(&s3), "");
    assert!(gone > 0, "the run failed only when recording files it had offloaded");

    // with space again, a rerun completes the job
    std::fs::remove_file(&filler).unwrap();
    hs.mo(&args).ok();
    assert!(hs.local_files().is_empty());
    assert_eq!(hs.assert_nothing_lost(&Dest::S3(&s3), ""), hs.generated().len());
    assert!(cache_rows(&db).iter().all(|r| r.known_deleted));
    assert_eq!(integrity_check(&db), "ok");
}
