//! The rules that keep media from being lost: a local file goes only after an
//! identical object exists; --dry-run changes nothing; failures delete
//! nothing; the lock keeps runs apart.

use std::fs::File;
use std::time::{Duration, SystemTime};

use crate::common::*;

fn one_media(size: usize) -> (Homeserver, Media) {
    let mut hs = Homeserver::sqlite();
    let m = hs.add(Media::local(&hs.new_id()).size(size));
    hs.update_db("30d");
    (hs, m)
}

// ------------------------------------------------------ verified delete ---

/// An existing object that differs from the local file: plain `upload`
/// has no record to decide by, so it keeps both, names the conflict and
/// exits 3; the object is never replaced.
#[track_caller]
fn conflict_keeps_both(hs: &Homeserver, s3: &S3, m: &Media, object: &[u8]) {
    let key = m.original_rel();
    let out = hs.upload(s3, &["--delete"]).status(3);
    assert_eq!(out.j("conflicts"), 1, "{}", out.describe());
    assert_eq!(out.j("deleted_files"), 0);
    let line = out.stderr_line_with("differs from the local file");
    assert!(line.contains(&key) && line.contains("migrate") && line.contains("--overwrite-mismatched"), "{line}");
    assert!(line.contains(&md5_hex(hs.content(&key))), "the local MD5 is named: {line}");
    hs.assert_local_intact(m);
    assert_eq!(s3.get(&key).as_deref(), Some(object), "the object was replaced");
    assert_eq!(cache_known_deleted(&hs.cache_db(), "", &m.media_id), Some(false));
}

#[test]
fn an_existing_object_of_another_size_is_a_conflict_and_both_are_kept() {
    let (hs, m) = one_media(5000);
    let s3 = S3::new();
    s3.put(&m.original_rel(), b"truncated", &[]);
    conflict_keeps_both(&hs, &s3, &m, b"truncated");
}

#[test]
fn an_existing_object_of_the_same_size_and_another_md5_etag_is_a_conflict() {
    // a single-part object's ETag is its MD5: the difference is proven
    // without downloading it, whatever metadata claims
    let (hs, m) = one_media(5000);
    let s3 = S3::new();
    let wrong = content_for("something else", 5000);
    let local_md5 = md5_hex(hs.content(&m.original_rel()));
    s3.put(&m.original_rel(), &wrong, &[("md5", &local_md5)]);
    conflict_keeps_both(&hs, &s3, &m, &wrong);
}

#[test]
fn overwrite_mismatched_replaces_the_object_and_then_offloads() {
    let (hs, m) = one_media(5000);
    let s3 = S3::new();
    s3.put(&m.original_rel(), b"truncated", &[]);
    let out = hs.upload(&s3, &["--delete", "--overwrite-mismatched"]).ok();
    hs.assert_offloaded(&m, &Dest::S3(&s3), "");
    assert_eq!(out.j("uploaded_files"), 1, "{}", out.describe());
    assert_eq!(out.j("conflicts"), 0);
    out.stderr_line_with("--overwrite-mismatched");
}

#[test]
fn identical_existing_object_is_not_uploaded_again_and_the_local_file_goes() {
    let (hs, m) = one_media(5000);
    let s3 = S3::new();
    let key = m.original_rel();
    let data = hs.content(&key).to_vec();
    s3.put(&key, &data, &[("md5", &md5_hex(&data)), ("marker", "pre-existing")]);
    let out = hs.upload(&s3, &["--delete"]).ok();
    hs.assert_offloaded(&m, &Dest::S3(&s3), "");
    assert_eq!(
        s3.head(&key).unwrap().metadata.get("marker").map(String::as_str),
        Some("pre-existing"),
        "the identical object must not have been overwritten"
    );
    assert_eq!(out.j("uploaded_files"), 0);
    assert_eq!(out.j("already_present_files"), 1);
    assert_eq!(out.j("deleted_files"), 1);
}

#[test]
fn identical_object_uploaded_by_the_python_tool_lets_the_local_copy_go() {
    let (hs, m) = one_media(5000);
    let s3 = S3::new();
    hs.py_upload(&s3, &[]).ok();
    hs.upload(&s3, &["--delete"]).ok();
    hs.assert_offloaded(&m, &Dest::S3(&s3), "");
}

#[test]
fn directory_store_keeps_a_differing_file_and_an_identical_one_untouched() {
    let mut hs = Homeserver::sqlite();
    let wrong = hs.add(Media::local(&hs.new_id()).size(3000));
    let same = hs.add(Media::local(&hs.new_id()).size(3000));
    hs.update_db("30d");
    let archive = hs.cwd().join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    let put = |rel: &str, data: &[u8]| {
        let p = archive.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        p
    };
    let other = content_for("other", 3000);
    put(&wrong.original_rel(), &other);
    let same_path = put(&same.original_rel(), hs.content(&same.original_rel()));
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    File::options().write(true).open(&same_path).unwrap().set_modified(old).unwrap();

    let out = hs.upload_dir(&archive, &["--delete"]).status(3);
    assert_eq!(out.j("conflicts"), 1);
    let dest = Dest::Dir(archive.clone());
    hs.assert_local_intact(&wrong);
    assert_eq!(dest.get(&wrong.original_rel()).unwrap(), other, "the differing file was replaced");
    hs.assert_offloaded(&same, &dest, "");
    assert_eq!(out.json()["deleted_by"]["read_back"], 1, "a directory store is read back: {}", out.describe());
    assert_eq!(std::fs::metadata(&same_path).unwrap().modified().unwrap(), old, "the identical file was rewritten");
}

// -------------------------------------------------------------- dry run ---

#[test]
fn dry_run_changes_no_file_no_object_and_no_cache_row() {
    let mut hs = Homeserver::sqlite();
    let items = hs.add_all(vec![
        Media::local(&hs.new_id()).with_thumbs(),
        Media::local(&hs.new_id()).size(2000),
        Media::remote("remote.example", "rid", "fsidDRYRUNabcdefgh").with_thumbs(),
        Media::local(&hs.new_id()).no_original(),
    ]);
    hs.update_db("30d");
    let s3 = S3::new();
    // one object already there but wrong, one already identical
    s3.put(&items[1].original_rel(), b"wrong", &[]);
    let ident = items[0].original_rel();
    s3.put(&ident, hs.content(&ident), &[("md5", &md5_hex(hs.content(&ident)))]);

    let files = hs.local_files();
    let objects = s3.objects();
    let cache = cache_dump(&hs.cache_db());
    let cache_bytes = std::fs::read(hs.cache_db()).unwrap();

    // the wrong object is a conflict (exit 3), in a dry run too
    let out = hs.upload(&s3, &["--delete", "--dry-run"]).status(3);
    assert_eq!(out.json()["dry_run"], true);
    assert_eq!(out.j("conflicts"), 1);
    assert!(hs.local_files() == files, "dry run deleted or changed local files");
    assert!(s3.objects() == objects, "dry run changed objects");
    assert_eq!(cache_dump(&hs.cache_db()), cache);
    assert!(std::fs::read(hs.cache_db()).unwrap() == cache_bytes, "dry run wrote to cache.db");

    // a dry run into a directory store creates nothing there either
    let archive = hs.cwd().join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    hs.upload_dir(&archive, &["--delete", "--dry-run"]).ok();
    assert!(files_under(&archive).is_empty());
    assert!(hs.local_files() == files);
}

// ------------------------------------------------- store mix-ups -------

#[test]
fn a_bucket_spelled_as_a_url_or_with_a_path_is_refused_and_nothing_moves() {
    let (hs, m) = one_media(1000);
    let cache = cache_dump(&hs.cache_db());
    let media = hs.media_arg();
    for bucket in ["s3://my-bucket", "my-bucket/media"] {
        let line = hs.mo(&["upload", &media, bucket, "--delete"]).clean_error(1, &[bucket]);
        assert!(line.contains("--prefix") || line.contains("--endpoint-url"), "{line}");
        hs.assert_local_intact(&m);
        assert_eq!(cache_dump(&hs.cache_db()), cache);
        assert!(!hs.cwd().join("s3:").exists() && !hs.cwd().join("my-bucket").exists(), "no folder was created");
    }
}

#[test]
fn a_directory_store_that_does_not_exist_is_refused() {
    let (hs, m) = one_media(1000);
    let missing = hs.cwd().join("no-such-archive");
    let out = hs.upload_dir(&missing, &["--delete"]);
    out.clean_error(1, &["no-such-archive"]);
    assert!(!missing.exists());
    hs.assert_local_intact(&m);
}

#[test]
fn a_directory_store_that_is_the_media_store_itself_is_refused() {
    let (hs, m) = one_media(1000);
    let media = std::path::PathBuf::from(hs.media_arg());
    let out = hs.upload_dir(&media, &["--delete"]);
    out.clean_error(1, &["media store itself"]);
    hs.assert_local_intact(&m);
}

// ------------------------------------------------------------- failures ---

#[test]
fn upload_to_a_missing_bucket_fails_cleanly_and_deletes_nothing() {
    let (hs, m) = one_media(1000);
    let s3 = S3::new();
    let missing = S3::existing(&s3.endpoint, &format!("{}-missing", s3.bucket));
    let cache = cache_dump(&hs.cache_db());
    let out = hs.upload(&missing, &["--delete"]);
    assert!(matches!(out.code(), 1 | 3), "expected a failure exit: {}", out.describe());
    out.no_panic();
    hs.assert_local_intact(&m);
    assert_eq!(cache_dump(&hs.cache_db()), cache);
}

#[test]
fn upload_to_an_unreachable_endpoint_fails_cleanly_and_deletes_nothing() {
    let (hs, m) = one_media(1000);
    // a port nothing listens on (bound, then released)
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dead = S3::existing(&format!("http://127.0.0.1:{port}"), "bucket");
    let cache = cache_dump(&hs.cache_db());
    let out = hs.upload(&dead, &["--delete"]);
    assert!(matches!(out.code(), 1 | 3), "expected a failure exit: {}", out.describe());
    out.no_panic();
    hs.assert_local_intact(&m);
    assert_eq!(cache_dump(&hs.cache_db()), cache);
}

#[test]
fn per_file_failures_keep_files_and_exit_3() {
    // the thumbnail "file" is a FIFO: reading it would block, so it cannot be
    // uploaded; the regular files of the same run still go
    let mut hs = Homeserver::sqlite();
    let odd = hs.add(Media::local(&hs.new_id()));
    let fine = hs.add(Media::local(&hs.new_id()).with_thumbs());
    hs.update_db("30d");
    let odd_dir = hs.path_of(&odd.thumb_dir_rel());
    std::fs::create_dir_all(&odd_dir).unwrap();
    let fifo = odd_dir.join("32-32-image-png-crop");
    let st = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success());
    let s3 = S3::new();
    let out = hs.upload(&s3, &["--delete"]);
    out.no_panic();
    hs.assert_offloaded(&fine, &Dest::S3(&s3), "");
    assert!(fifo.exists(), "the FIFO must be left alone");
    assert_eq!(cache_known_deleted(&hs.cache_db(), "", &odd.media_id), Some(false));
    // the original of the odd media may go (it is a regular file with a verified copy)
    hs.assert_nothing_lost(&Dest::S3(&s3), "");
    assert!(matches!(out.code(), 0 | 3), "{}", out.describe());
}

// ---------------------------------------------------------------- locks ---

fn hold_lock(path: &std::path::Path) -> File {
    let f = File::options().create(true).truncate(false).read(true).write(true).open(path).unwrap();
    f.try_lock().expect("the test could not take the lock itself");
    f
}

#[test]
fn a_held_lock_makes_every_writer_exit_75_naming_the_lock_file() {
    let (hs, m) = one_media(1000);
    let lock_path = hs.cwd().join("cache.db.lock");
    let guard = hold_lock(&lock_path);
    let s3 = S3::new();
    let media = hs.media_arg();
    for args in [vec!["update-db", "30d"], vec!["check-deleted", media.as_str()], vec!["update", media.as_str(), "30d"]]
    {
        let out = hs.mo(&args);
        out.no_panic();
        assert_eq!(out.code(), 75, "{}", out.describe());
        out.stderr_line_with("cache.db.lock");
    }
    let out = hs.upload(&s3, &["--delete"]);
    assert_eq!(out.code(), 75, "{}", out.describe());
    out.stderr_line_with("cache.db.lock");
    hs.assert_local_intact(&m);
    assert!(s3.keys().is_empty());
    drop(guard);
    hs.upload(&s3, &["--delete"]).ok();
    hs.assert_offloaded(&m, &Dest::S3(&s3), "");
}

#[test]
fn lock_file_sits_next_to_a_cache_db_given_by_flag() {
    let (hs, _m) = one_media(1000);
    std::fs::create_dir_all(hs.cwd().join("state")).unwrap();
    let _guard = hold_lock(&hs.cwd().join("state/other.db.lock"));
    let out = hs.mo(&["--cache-db", "state/other.db", "update-db", "30d"]);
    assert_eq!(out.code(), 75, "{}", out.describe());
    out.stderr_line_with("other.db.lock");
    // the default cache.db is not locked
    hs.mo(&["update-db", "30d"]).ok();
}

#[test]
fn with_wait_a_run_waits_for_the_lock_and_then_proceeds() {
    let (hs, m) = one_media(1000);
    let guard = hold_lock(&hs.cwd().join("cache.db.lock"));
    let s3 = S3::new();
    let media = hs.media_arg();
    let mut child = spawn(
        &["--wait", "--json", "upload", &media, &s3.bucket, "--endpoint-url", &s3.endpoint, "--delete"],
        hs.cwd(),
        &[],
    );
    // while the lock is held the run must not finish (and must not give up)
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(st) = child.try_wait().unwrap() {
            let out = wait_output(child, "upload --wait".into());
            panic!("finished with {st:?} while the lock was held: {}", out.describe());
        }
    }
    hs.assert_local_intact(&m);
    drop(guard);
    let out = wait_output(child, "upload --wait".into()).ok();
    assert_eq!(out.j("deleted_media"), 1);
    hs.assert_offloaded(&m, &Dest::S3(&s3), "");
}

#[test]
fn two_simultaneous_runs_never_both_work_and_nothing_is_lost() {
    let hs = local_media_store(80);
    let s3 = S3::new();
    let media = hs.media_arg();
    let args =
        ["--json", "upload", media.as_str(), s3.bucket.as_str(), "--endpoint-url", s3.endpoint.as_str(), "--delete"];
    let a = spawn(&args, hs.cwd(), &[]);
    let b = spawn(&args, hs.cwd(), &[]);
    let (a, b) = (wait_output(a, "run a".into()), wait_output(b, "run b".into()));
    for o in [&a, &b] {
        o.no_panic();
        assert!(matches!(o.code(), 0 | 75), "{}", o.describe());
    }
    if a.code() == 0 && b.code() == 0 {
        // they ran one after the other: the second found nothing to do
        let second_uploaded = a.j("uploaded_files").min(b.j("uploaded_files"));
        assert_eq!(second_uploaded, 0, "both runs uploaded: {}\n{}", a.describe(), b.describe());
    }
    hs.assert_nothing_lost(&Dest::S3(&s3), "");
    hs.upload(&s3, &["--delete"]).ok();
    assert!(hs.local_files().is_empty());
    hs.assert_nothing_lost(&Dest::S3(&s3), "");
}
