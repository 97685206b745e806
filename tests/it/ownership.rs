//! Runs as root over a store that belongs to the service user (where
//! s3_media_upload often ran, from root's cron), and one run at a time per
//! media store, whatever the state file.

use crate::common::*;

/// A homeserver whose folder, database and media belong to the owner.
fn owned_homeserver() -> (Homeserver, Vec<Media>) {
    assert!(is_root(), "these tests run as root, as CI does");
    let mut hs = Homeserver::sqlite();
    let media = hs.add_all(vec![Media::local(&hs.new_id()).with_thumbs(), Media::local(&hs.new_id())]);
    chown_tree(hs.cwd(), owner());
    (hs, media)
}

#[test]
fn a_run_as_root_gives_what_it_creates_to_the_owner_and_the_owner_carries_on() {
    let (mut hs, old) = owned_homeserver();
    let s3 = S3::new();
    let (uid, gid) = owner();
    hs.mo(&["update-db", "30d"]).ok();
    let out = hs.upload(&s3, &["--delete"]).ok();
    let warning = out.stderr_line_with("running as root over the media store");
    assert!(warning.contains(&test_env().owner) && warning.contains("runuser -u"), "{warning}");
    for m in &old {
        hs.assert_offloaded(m, &Dest::S3(&s3), "");
    }
    for file in ["cache.db", "cache.db.lock"] {
        assert_eq!(owned_by(&hs.cwd().join(file)), uid, "{file} was left to root");
    }
    // The service user's own run on the same state, later.
    let new = hs.add(Media::local(&hs.new_id()).with_thumbs());
    chown_tree(hs.cwd(), (uid, gid));
    run_as(uid, gid, &["update-db", "30d"], hs.cwd()).ok();
    let media = hs.media_arg();
    let args = ["--json", "--no-progress", "upload", &media, &s3.bucket, "--endpoint-url", &s3.endpoint, "--delete"];
    let out = run_as(uid, gid, &args, hs.cwd()).ok();
    assert_eq!(out.j("deleted_media"), 1, "{}", out.describe());
    assert!(!out.stderr.contains("running as root"));
    hs.assert_offloaded(&new, &Dest::S3(&s3), "");
}

#[test]
fn files_an_older_root_run_left_are_used_or_named_with_what_to_chown() {
    let (hs, _) = owned_homeserver();
    let (uid, gid) = owner();
    hs.mo(&["update-db", "30d"]).ok();
    let (cache, lock) = (hs.cwd().join("cache.db"), hs.cwd().join("cache.db.lock"));
    // As a version that did not hand them over would have left them.
    for f in [&cache, &lock] {
        std::os::unix::fs::chown(f, Some(0), Some(0)).unwrap();
        std::fs::set_permissions(f, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    }
    // A readable lock file is enough (flock needs no write access); the
    // cache.db is not, and the message says what to chown.
    let out = run_as(uid, gid, &["update-db", "30d"], hs.cwd());
    let line = out.clean_error(1, &["cache.db", "chown", &test_env().owner]);
    assert!(!line.contains("lock"), "the lock was usable: {line}");
    std::os::unix::fs::chown(&cache, Some(uid), Some(gid)).unwrap();
    run_as(uid, gid, &["update-db", "30d"], hs.cwd()).ok();
    // A lock file the user cannot even read: named, with the chown to run.
    std::fs::set_permissions(&lock, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = run_as(uid, gid, &["update-db", "30d"], hs.cwd());
    out.clean_error(1, &["cache.db.lock", "permission denied", "chown"]);
}

#[test]
fn two_runs_with_different_state_files_on_one_media_store_exclude_each_other() {
    let mut hs = Homeserver::sqlite();
    let m = hs.add(Media::local(&hs.new_id()).size(3000));
    hs.update_db("30d");
    hs.mo(&["--cache-db", "other.db", "update-db", "30d"]).ok();
    let s3 = S3::new();
    let media = hs.media_arg();
    let upload = |cache: &'static str| -> Vec<String> {
        ["--json", "--no-progress", "--cache-db", cache, "upload", &media, &s3.bucket, "--endpoint-url", &s3.endpoint]
            .iter()
            .map(|s| s.to_string())
            .chain(["--delete".to_string()])
            .collect()
    };
    let first = upload("cache.db");
    let first: Vec<&str> = first.iter().map(String::as_str).collect();
    let paused = Paused::start(&first, hs.cwd(), "after-verify");
    let second = upload("other.db");
    let second: Vec<&str> = second.iter().map(String::as_str).collect();
    let out = hs.mo(&second);
    let line = out.clean_error(75, &["another media-offload run (pid ", "holds the media store", &media]);
    assert!(line.contains("--wait"), "{line}");
    hs.assert_local_intact(&m);
    paused.resume().ok();
    hs.assert_offloaded(&m, &Dest::S3(&s3), "");
}
