//! Two copies that disagree, and deletions that must be proven: a
//! truncated fetch-back beside an intact object (upload keeps both, migrate
//! lets Synapse's record decide); a file still being written; a multipart
//! object the Python tool uploaded; SSE-C objects on a store that does not
//! check Content-MD5 (read back) and one that does (the store's check);
//! storage classes Synapse cannot read back.

use std::time::Duration;

use sha2::Digest as _;

use crate::common::*;

const SSE_KEY: &str = "0123456789abcdef0123456789abcdef";
const HOUR: Duration = Duration::from_secs(3600);

/// The first half of a file: what an interrupted fetch-back leaves.
fn truncated(data: &[u8]) -> Vec<u8> {
    data[..data.len() / 2].to_vec()
}

/// homeserver.yaml naming `s3` as the storage provider, under no prefix.
fn with_provider(hs: &Homeserver, s3: &S3) {
    hs.write_homeserver_yaml_with(Some(SERVER_NAME), &s3_provider_yaml(&s3.provider_config("")));
}

fn migrate(hs: &Homeserver) -> Out {
    hs.mo(&["--json", "--no-progress", "migrate"])
}

/// One old local media with thumbnails, offloaded by migrate; then Synapse
/// fetches its original back but the fetch breaks off half-way.
fn offloaded_then_truncated(hs: &mut Homeserver, s3: &S3) -> Media {
    with_provider(hs, s3);
    let m = hs.add(Media::local(&hs.new_id()).size(40_000).with_thumbs());
    migrate(hs).ok();
    hs.assert_offloaded(&m, &Dest::S3(s3), "");
    let rel = m.original_rel();
    hs.overwrite(&rel, &truncated(hs.content(&rel)), HOUR);
    m
}

#[test]
fn upload_keeps_a_truncated_fetch_back_and_the_intact_object_and_says_what_to_do() {
    let mut hs = Homeserver::sqlite();
    let s3 = S3::new();
    let m = offloaded_then_truncated(&mut hs, &s3);
    let rel = m.original_rel();
    let media = hs.media_arg();
    hs.mo(&["check-deleted", &media]).ok();
    assert_eq!(cache_known_deleted(&hs.cache_db(), "", &m.media_id), Some(false), "reopened: its file is back");

    let out = hs.upload(&s3, &["--delete"]).status(3);
    assert_eq!(out.j("conflicts"), 1, "{}", out.describe());
    let line = out.stderr_line_with("differs from the local file");
    assert!(line.contains("object 40000 bytes") && line.contains("local file 20000 bytes"), "{line}");
    assert!(line.contains("migrate"), "says what to do: {line}");
    assert_eq!(s3.get(&rel).unwrap(), hs.content(&rel), "the intact object was replaced");
    assert_eq!(std::fs::read(hs.path_of(&rel)).unwrap(), truncated(hs.content(&rel)), "both copies stay");
}

fn migrate_repairs_a_truncated_fetch_back(mut hs: Homeserver) {
    let s3 = S3::new();
    let m = offloaded_then_truncated(&mut hs, &s3);
    let rel = m.original_rel();
    // check finds it by the record, and says who repairs it.
    let found = hs.mo_store(&s3, "", &["--json", "check", "--grace-period", "0s"]).status(4);
    assert_eq!(found.jn("damaged_files.count"), 1, "{}", found.describe());
    let text = hs.mo_store(&s3, "", &["check", "--grace-period", "0s"]).status(4);
    assert!(
        text.stdout.contains(&format!("{rel} (20000 bytes; the homeserver recorded 40000)")),
        "{}",
        text.describe()
    );
    let out = migrate(&hs).ok();
    assert_eq!(out.jn("upload.repaired_local_files"), 1, "{}", out.describe());
    assert_eq!(out.jn("upload.conflicts"), 0);
    let warning = out.stderr_line_with("the local copy is damaged");
    assert!(warning.contains(&rel) && warning.contains("40000 bytes"), "names the file and the record: {warning}");
    assert!(!hs.exists(&rel), "the damaged copy is gone, so Synapse serves the object");
    assert_eq!(s3.get(&rel).unwrap(), hs.content(&rel), "the object is intact");
    assert_eq!(cache_known_deleted(&hs.cache_db(), "", &m.media_id), Some(true));
    // Nothing left to do, nothing inconsistent.
    let again = migrate(&hs).ok();
    assert_eq!(again.jn("upload.repaired_local_files") + again.jn("upload.uploaded_files"), 0);
    hs.mo_store(&s3, "", &["check", "--grace-period", "0s"]).ok();
}

on_sqlite_and_postgres!(
    migrate_repairs_a_fetch_back_on_sqlite,
    migrate_repairs_a_fetch_back_on_postgres,
    migrate_repairs_a_truncated_fetch_back
);

#[test]
fn a_damaged_fetch_back_of_a_media_in_use_is_reopened_and_repaired() {
    // Viewed a moment ago: a good fetch-back would stay on disk, but this
    // one disagrees with the record.
    let mut hs = Homeserver::sqlite();
    let s3 = S3::new();
    let m = offloaded_then_truncated(&mut hs, &s3);
    hs.sql(&format!(
        "UPDATE local_media_repository SET last_access_ts = {} WHERE media_id = '{}';",
        now_ms(),
        m.media_id
    ));
    let out = migrate(&hs).ok();
    assert_eq!(out.jn("check_deleted.reopened"), 1, "{}", out.describe());
    assert_eq!(out.jn("upload.repaired_local_files"), 1);
    assert!(!hs.exists(&m.original_rel()));
}

#[test]
fn a_good_fetch_back_of_a_media_in_use_stays_on_disk() {
    let mut hs = Homeserver::sqlite();
    let s3 = S3::new();
    with_provider(&hs, &s3);
    let m = hs.add(Media::local(&hs.new_id()).size(5000));
    migrate(&hs).ok();
    hs.restore(&m.original_rel());
    hs.sql(&format!(
        "UPDATE local_media_repository SET last_access_ts = {} WHERE media_id = '{}';",
        now_ms(),
        m.media_id
    ));
    let out = migrate(&hs).ok();
    assert_eq!(out.jn("check_deleted.reopened"), 0, "{}", out.describe());
    assert_eq!(out.jn("check_deleted.in_use"), 1);
    hs.assert_local_intact(&m);
    // Once it is past the cut-off again, it goes.
    hs.sql(&format!(
        "UPDATE local_media_repository SET last_access_ts = {} WHERE media_id = '{}';",
        now_ms() - 40 * DAY_MS,
        m.media_id
    ));
    let out = migrate(&hs).ok();
    assert_eq!(out.jn("check_deleted.reopened"), 1);
    hs.assert_offloaded(&m, &Dest::S3(&s3), "");
}

#[test]
fn migrate_replaces_an_object_that_disagrees_with_the_record_by_the_local_file() {
    let mut hs = Homeserver::postgres();
    let s3 = S3::new();
    with_provider(&hs, &s3);
    let m = hs.add(Media::local(&hs.new_id()).size(30_000).with_thumbs());
    let thumb = m.rel_paths()[1].clone();
    s3.put(&thumb, b"half a thumbnail", &[]);
    let out = migrate(&hs).ok();
    assert_eq!(out.jn("upload.replaced_objects"), 1, "{}", out.describe());
    out.stderr_line_with("differs from the homeserver's record");
    hs.assert_offloaded(&m, &Dest::S3(&s3), "");
}

/// Without a recorded hash, an object of the recorded length proves nothing
/// about its bytes: a shorter local file goes only if it is the object cut
/// short, not when it is other bytes (the object may be the wrong one).
#[test]
fn migrate_keeps_a_shorter_local_file_that_is_not_a_truncated_copy_of_the_object() {
    let mut hs = Homeserver::sqlite();
    let s3 = S3::new();
    with_provider(&hs, &s3);
    let m = hs.add(Media::local(&hs.new_id()).size(8000));
    let rel = m.original_rel();
    let wrong = content_for("another upload", 8000);
    s3.put(&rel, &wrong, &[]);
    let shorter = content_for("other bytes", 3000);
    hs.overwrite(&rel, &shorter, HOUR);
    let out = migrate(&hs).status(3);
    assert_eq!(out.jn("upload.conflicts"), 1, "{}", out.describe());
    assert_eq!(out.jn("upload.repaired_local_files"), 0);
    let line = out.stderr_line_with("not a truncated copy");
    assert!(line.contains("8000 bytes"), "{line}");
    assert_eq!(std::fs::read(hs.path_of(&rel)).unwrap(), shorter, "the local file stays");
    assert_eq!(s3.get(&rel).unwrap(), wrong, "the object stays");
}

#[test]
fn migrate_keeps_both_when_the_record_cannot_tell_then_sha256_decides() {
    let mut hs = Homeserver::sqlite();
    let s3 = S3::new();
    with_provider(&hs, &s3);
    let m = hs.add(Media::local(&hs.new_id()).size(8000));
    let rel = m.original_rel();
    let other = content_for("another upload", 8000);
    s3.put(&rel, &other, &[]);
    // Same length as the record on both sides, no sha256: undecidable.
    let out = migrate(&hs).status(3);
    assert_eq!(out.jn("upload.conflicts"), 1, "{}", out.describe());
    let line = out.stderr_line_with("does not tell which is right");
    assert!(line.contains("8000 bytes"), "{line}");
    hs.assert_local_intact(&m);
    assert_eq!(s3.get(&rel).unwrap(), other);
    // With Synapse's sha256 of the media, the local file is the right one.
    let sha = hex::encode(sha2::Sha256::digest(hs.content(&rel)));
    hs.sql(&format!("UPDATE local_media_repository SET sha256 = '{sha}' WHERE media_id = '{}';", m.media_id));
    let out = migrate(&hs).ok();
    assert_eq!(out.jn("upload.replaced_objects"), 1, "{}", out.describe());
    hs.assert_offloaded(&m, &Dest::S3(&s3), "");
}

#[test]
fn migrate_removes_the_local_copy_when_sha256_says_the_object_is_right() {
    let mut hs = Homeserver::sqlite();
    let s3 = S3::new();
    with_provider(&hs, &s3);
    let m = hs.add(Media::local(&hs.new_id()).size(8000));
    let rel = m.original_rel();
    s3.put(&rel, hs.content(&rel), &[]);
    let sha = hex::encode(sha2::Sha256::digest(hs.content(&rel)));
    hs.sql(&format!("UPDATE local_media_repository SET sha256 = '{sha}' WHERE media_id = '{}';", m.media_id));
    // Same length, other bytes on disk: a damaged copy by the record's hash.
    hs.overwrite(&rel, &content_for("bit rot", 8000), HOUR);
    let out = migrate(&hs).ok();
    assert_eq!(out.jn("upload.repaired_local_files"), 1, "{}", out.describe());
    assert!(!hs.exists(&rel));
    assert_eq!(s3.get(&rel).unwrap(), hs.content(&rel));
}

// ------------------------------------------------------------ settle time ---

#[test]
fn files_modified_within_the_settle_time_are_left_for_the_next_run() {
    let mut hs = Homeserver::sqlite();
    let s3 = S3::new();
    let settled = hs.add(Media::local(&hs.new_id()).size(3000));
    let busy = hs.add(Media::local(&hs.new_id()).size(3000).with_thumbs());
    hs.update_db("30d");
    // Being written right now (a fetch-back, say).
    hs.overwrite(&busy.original_rel(), &truncated(hs.content(&busy.original_rel())), Duration::ZERO);
    let out = hs.upload(&s3, &["--delete"]).ok();
    assert_eq!(out.j("settling_files"), 1, "{}", out.describe());
    assert!(out.stdout.is_empty() || out.json()["settling_files"] == 1);
    hs.assert_offloaded(&settled, &Dest::S3(&s3), "");
    assert!(hs.exists(&busy.original_rel()), "the file being written is left alone");
    assert!(s3.get(&busy.original_rel()).is_none(), "and not uploaded");
    assert_eq!(cache_known_deleted(&hs.cache_db(), "", &busy.media_id), Some(false), "nor marked");
    let text = hs
        .mo(&["--no-progress", "upload", &hs.media_arg(), &s3.bucket, "--endpoint-url", &s3.endpoint, "--delete"])
        .ok();
    assert!(text.stdout.contains("1 file modified in the last 10min was left for the next run"), "{}", text.describe());
    // Once settled (or with --settle-time 0), it goes; the run decides by
    // what is on disk then.
    hs.restore(&busy.original_rel());
    hs.upload(&s3, &["--delete", "--settle-time", "0"]).ok();
    hs.assert_offloaded(&busy, &Dest::S3(&s3), "");
}

#[test]
fn the_settle_time_of_migrate_comes_from_the_flag_or_the_config_file() {
    let mut hs = Homeserver::sqlite();
    let s3 = S3::new();
    with_provider(&hs, &s3);
    let m = hs.add(Media::local(&hs.new_id()).size(3000));
    let rel = m.original_rel();
    hs.overwrite(&rel, hs.content(&rel), Duration::from_secs(20 * 60));
    let cfg = hs.write_file("mo.yaml", "settle_time: 1h\n");
    let out = hs.mo(&["--json", "--config", cfg.to_str().unwrap(), "migrate"]).ok();
    assert_eq!(out.jn("upload.settling_files"), 1, "20 minutes old, 1h settle time: {}", out.describe());
    let out = hs.mo(&["--json", "--config", cfg.to_str().unwrap(), "migrate", "--settle-time", "15min"]).ok();
    assert_eq!(out.jn("upload.settling_files"), 0, "the flag wins: {}", out.describe());
    hs.assert_offloaded(&m, &Dest::S3(&s3), "");
    let err = hs.mo(&["migrate", "--settle-time", "10m"]);
    err.clean_error(2, &["10min"]);
}

// ------------------------------------------------- proofs before delete ---

#[test]
fn a_multipart_object_from_the_python_tool_is_proven_by_recomputed_part_etags() {
    let mut hs = Homeserver::sqlite();
    let same = hs.add(Media::local(&hs.new_id()).size(9 * 1024 * 1024 + 77));
    let other = hs.add(Media::local(&hs.new_id()).size(9 * 1024 * 1024 + 77));
    hs.update_db("30d");
    let s3 = S3::new();
    hs.py_upload(&s3, &[]).ok();
    let etag = s3.head(&same.original_rel()).unwrap().etag;
    assert!(etag.ends_with("-2\"") || etag.ends_with("-2"), "boto3 uploads this in two parts: {etag}");
    // The same size, other bytes: only the part ETags can tell.
    let rel = other.original_rel();
    hs.overwrite(&rel, &content_for("not what was uploaded", 9 * 1024 * 1024 + 77), HOUR);
    let out = hs.upload(&s3, &["--delete"]).status(3);
    assert_eq!(out.json()["deleted_by"]["part_etags"], 1, "{}", out.describe());
    assert_eq!(out.j("conflicts"), 1);
    hs.assert_offloaded(&same, &Dest::S3(&s3), "");
    assert!(hs.exists(&rel), "a size match is not a proof");
}

#[test]
fn sse_c_objects_on_a_store_that_does_not_check_content_md5_are_read_back() {
    let (hs, m) = {
        let mut hs = Homeserver::sqlite();
        let m = hs.add(Media::local(&hs.new_id()).size(20_000).with_thumbs());
        hs.update_db("30d");
        (hs, m)
    };
    let s3 = S3::new();
    let proxy = SsecProxy::start(&test_env().s3_endpoint);
    let key_file = hs.write_file("sse.key", SSE_KEY);
    std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let kf = key_file.to_str().unwrap();
    let out = hs.upload_via(&proxy.endpoint, &s3.bucket, &["--delete", "--sse-customer-key-file", kf]).ok();
    assert_eq!(out.json()["deleted_by"]["read_back"], 3, "{}", out.describe());
    out.stderr_line_with("does not check Content-MD5");
    hs.assert_offloaded(&m, &Dest::S3(&s3), "");
    assert!(proxy.requests().iter().any(|r| r.method == "GET" && r.ssec_md5.is_some()), "read back with the key");
    assert!(s3.keys().iter().all(|k| !k.contains("probe")), "the probe object is gone: {:?}", s3.keys());
}

#[test]
fn sse_c_metadata_is_not_a_proof_an_existing_object_is_read_back() {
    // The object carries md5 metadata equal to the local file's MD5 and has
    // the right size, but other bytes.
    let mut hs = Homeserver::sqlite();
    let m = hs.add(Media::local(&hs.new_id()).size(6000));
    hs.update_db("30d");
    let s3 = S3::new();
    let proxy = SsecProxy::start(&test_env().s3_endpoint);
    let via = S3::existing(&proxy.endpoint, &s3.bucket);
    let rel = m.original_rel();
    via.put_ssec(&rel, &content_for("impostor", 6000), SSE_KEY);
    let key_file = hs.write_file("sse.key", SSE_KEY);
    let kf = key_file.to_str().unwrap();
    let out = hs.upload_via(&proxy.endpoint, &s3.bucket, &["--delete", "--sse-customer-key-file", kf]).status(3);
    assert_eq!(out.j("conflicts"), 1, "{}", out.describe());
    hs.assert_local_intact(&m);
}

#[test]
fn sse_c_uploads_to_a_store_that_checks_content_md5_are_proven_by_that_check() {
    let mut hs = Homeserver::sqlite();
    let m = hs.add(Media::local(&hs.new_id()).size(20_000).with_thumbs());
    let big = hs.add(Media::local(&hs.new_id()).size(9 * 1024 * 1024));
    hs.update_db("30d");
    let s3 = S3::new_s3s();
    let proxy = SsecProxy::start(&test_env().s3s_endpoint);
    let key_file = hs.write_file("sse.key", SSE_KEY);
    let kf = key_file.to_str().unwrap();
    let out = hs.upload_via(&proxy.endpoint, &s3.bucket, &["--delete", "--sse-customer-key-file", kf]).ok();
    assert_eq!(out.json()["deleted_by"]["content_md5"], 4, "{}", out.describe());
    out.stderr_line_with("checks Content-MD5");
    assert!(!proxy.requests().iter().any(|r| r.method == "GET"), "nothing read back: {:#?}", proxy.requests());
    hs.assert_offloaded(&m, &Dest::S3(&s3), "");
    hs.assert_offloaded(&big, &Dest::S3(&s3), "");
}

#[test]
fn plain_uploads_are_proven_by_their_etags() {
    let mut hs = Homeserver::sqlite();
    let m = hs.add(Media::local(&hs.new_id()).size(5000).with_thumbs());
    let big = hs.add(Media::local(&hs.new_id()).size(9 * 1024 * 1024 + 1));
    hs.update_db("30d");
    let s3 = S3::new_s3s();
    let out = hs.upload(&s3, &["--delete"]).ok();
    assert_eq!(out.json()["deleted_by"]["etag"], 3, "{}", out.describe());
    assert_eq!(out.json()["deleted_by"]["part_etags"], 1);
    let text = hs.mo(&["--no-progress", "upload", &hs.media_arg(), &s3.bucket, "--endpoint-url", &s3.endpoint]).ok();
    assert!(text.stdout.contains("Uploaded 0 files"), "{}", text.describe());
    hs.assert_offloaded(&m, &Dest::S3(&s3), "");
    hs.assert_offloaded(&big, &Dest::S3(&s3), "");
}

// --------------------------------------------------------- storage class ---

#[test]
fn archive_storage_classes_are_refused_for_delete_unless_allowed() {
    let mut hs = Homeserver::sqlite();
    let m = hs.add(Media::local(&hs.new_id()).size(2000));
    hs.update_db("30d");
    let s3 = S3::new();
    for class in ["GLACIER", "DEEP_ARCHIVE"] {
        let out = hs.upload(&s3, &["--delete", "--storage-class", class]);
        out.clean_error(1, &[class, "restore", "--allow-archive-storage-class"]);
    }
    assert!(s3.keys().is_empty());
    hs.assert_local_intact(&m);
    // Without --delete nothing is at risk; GLACIER_IR reads back at once.
    hs.upload(&s3, &["--storage-class", "GLACIER"]).ok();
    let out = hs.upload(&s3, &["--delete"]).ok();
    assert_eq!(out.j("archived_kept"), 1, "the GLACIER object does not let the file go: {}", out.describe());
    out.stderr_line_with("cannot read back without a restore");
    hs.assert_local_intact(&m);
    let out = hs.upload(&s3, &["--delete", "--allow-archive-storage-class"]).ok();
    assert_eq!(out.j("deleted_files"), 1, "{}", out.describe());
}

#[test]
fn migrate_refuses_an_archive_class_from_homeserver_yaml() {
    let mut hs = Homeserver::sqlite();
    let s3 = S3::new();
    let mut config = s3.provider_config("");
    config.push(pstr("storage_class", "DEEP_ARCHIVE"));
    hs.write_homeserver_yaml_with(Some(SERVER_NAME), &s3_provider_yaml(&config));
    let m = hs.add(Media::local(&hs.new_id()));
    hs.mo(&["migrate"]).clean_error(1, &["DEEP_ARCHIVE", "allow_archive_storage_class"]);
    hs.assert_local_intact(&m);
}
