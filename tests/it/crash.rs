//! kill -9 at arbitrary moments: no local file may be gone without an
//! identical object, and a rerun must complete the job.
//!
//! Timing is used only to decide when to kill; every assertion is about the
//! state left behind, whatever moment the kill hit.

use std::time::Duration;

use crate::common::*;

fn upload_args<'a>(media: &'a str, bucket: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--no-progress", "upload", media, bucket, "--delete"];
    v.extend_from_slice(extra);
    v
}

fn kill_repeatedly_then_finish(hs: &Homeserver, bucket: &str, extra: &[&str], dest: &Dest) {
    let media = hs.media_arg();
    let args = upload_args(&media, bucket, extra);
    let total = hs.generated().len();
    // delays in ms; each run starts where the last one was killed
    for delay in [0u64, 15, 40, 80, 150, 250, 400, 700, 1100] {
        let mut child = spawn(&args, hs.cwd(), &[]);
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let gone = hs.assert_nothing_lost(dest, "");
        eprintln!("killed after {delay} ms: {gone}/{total} files offloaded so far");
        if gone == total {
            break;
        }
    }
    // the kernel dropped the lock with the process: a rerun must not see it held
    rerun_completes_then_nothing_changes(hs, &args, dest);
}

#[test]
fn kill_9_during_s3_upload_delete_never_loses_a_file_and_a_rerun_completes() {
    let hs = realistic_store();
    let s3 = S3::new();
    kill_repeatedly_then_finish(&hs, &s3.bucket.clone(), &["--endpoint-url", &s3.endpoint], &Dest::S3(&s3));
}

#[test]
fn kill_9_during_directory_store_upload_delete_never_loses_a_file_and_a_rerun_completes() {
    let hs = realistic_store();
    let archive = hs.cwd().join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    let a = archive.to_string_lossy().into_owned();
    kill_repeatedly_then_finish(&hs, &a, &[], &Dest::Dir(archive.clone()));
}

#[test]
fn kill_9_during_update_db_and_check_deleted_leaves_a_usable_cache() {
    let mut hs = Homeserver::sqlite();
    hs.add_all((0..3000).map(|i| Media::local(&format!("{i:08}abcdefghijklmnop")).size(1)).collect());
    for delay in [0u64, 20, 60, 150] {
        let mut child = spawn(&["update-db", "30d"], hs.cwd(), &[]);
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
    }
    let media = hs.media_arg();
    for delay in [0u64, 30, 100] {
        let mut child = spawn(&["update", &media, "30d"], hs.cwd(), &[]);
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
    }
    hs.update_db("30d");
    let rows = cache_rows(&hs.cache_db());
    assert_eq!(rows.len(), 3000);
    assert!(rows.iter().all(|r| !r.known_deleted), "files are all present");
}
