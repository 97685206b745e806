//! upload: what goes where, with which metadata, and what is deleted after.

use crate::common::*;

/// A store with old local media (with and without thumbnails), old remote
/// media, and media that must not be selected (too young, URL previews).
struct Scene {
    hs: Homeserver,
    selected: Vec<Media>,
    not_selected: Vec<Media>,
}

fn scene() -> Scene {
    let mut hs = Homeserver::sqlite();
    let selected = hs.add_all(vec![
        Media::local(&hs.new_id()).size(4321).with_thumbs(),
        Media::local(&hs.new_id()).size(77),
        Media::remote("remote.example:8448", "remoteMediaId1", "fsidREMOTEabcdefghijklmn").size(999).with_thumbs(),
        Media::remote("other.example", "remoteMediaId2", "fsidOTHERabcdefghijklmno").size(5),
    ]);
    let not_selected = hs.add_all(vec![
        Media::local(&hs.new_id()).created_days_ago(2).with_thumbs(),
        Media::local(&hs.new_id()).url_cache("https://example.org/").with_thumbs(),
        Media::remote("remote.example:8448", "remoteYoung", "fsidYOUNGabcdefghijklmn").created_days_ago(1),
    ]);
    hs.update_db("30d");
    Scene { hs, selected, not_selected }
}

fn total_files(ms: &[Media]) -> i64 {
    ms.iter().map(|m| m.rel_paths().len() as i64).sum()
}

fn total_bytes(ms: &[Media]) -> i64 {
    ms.iter().map(|m| m.total_bytes() as i64).sum()
}

#[test]
fn upload_delete_moves_old_local_and_remote_media_with_thumbnails_to_s3() {
    let sc = scene();
    let s3 = S3::new();
    let out = sc.hs.upload(&s3, &["--delete"]).ok();

    let dest = Dest::S3(&s3);
    for m in &sc.selected {
        sc.hs.assert_offloaded(m, &dest, "");
    }
    for m in &sc.not_selected {
        sc.hs.assert_local_intact(m);
    }
    let sel: Vec<&Media> = sc.selected.iter().collect();
    assert_eq!(s3.keys(), keys_of(&sel, ""), "exactly the selected media's files are uploaded");
    for row in cache_rows(&sc.hs.cache_db()) {
        assert!(row.known_deleted, "{row:?} should be marked deleted after upload --delete");
    }

    let v = out.json();
    assert_eq!(v["command"], "upload");
    assert_eq!(v["dry_run"], false);
    assert_eq!(out.j("media_total"), 4);
    assert_eq!(out.j("uploaded_media"), 4);
    assert_eq!(out.j("uploaded_files"), total_files(&sc.selected));
    assert_eq!(out.j("uploaded_bytes"), total_bytes(&sc.selected));
    assert_eq!(out.j("already_present_files"), 0);
    assert_eq!(out.j("deleted_media"), 4);
    assert_eq!(out.j("deleted_files"), total_files(&sc.selected));
    assert_eq!(out.j("deleted_bytes"), total_bytes(&sc.selected));
    assert_eq!(out.j("failed_files"), 0);
    assert_eq!(out.j("invalid_rows"), 0);
}

#[test]
fn upload_without_delete_copies_and_keeps_local_files_and_rows_open() {
    let sc = scene();
    let s3 = S3::new();
    let out = sc.hs.upload(&s3, &[]).ok();
    let dest = Dest::S3(&s3);
    for m in &sc.selected {
        sc.hs.assert_copied(m, &dest, "");
    }
    assert_eq!(out.j("uploaded_files"), total_files(&sc.selected));
    assert_eq!(out.j("deleted_files"), 0);
    assert_eq!(out.j("deleted_media"), 0);
    for row in cache_rows(&sc.hs.cache_db()) {
        assert!(!row.known_deleted, "{row:?}: nothing was deleted, the row must stay open");
    }
}

#[test]
fn every_uploaded_object_carries_the_md5_of_its_content_as_metadata() {
    let sc = scene();
    let s3 = S3::new();
    sc.hs.upload(&s3, &["--delete"]).ok();
    for key in s3.keys() {
        let h = s3.head(&key).unwrap();
        let want = md5_hex(sc.hs.content(&key));
        assert_eq!(h.metadata.get("md5"), Some(&want), "x-amz-meta-md5 of {key}");
        assert_eq!(h.size as usize, sc.hs.content(&key).len());
    }
}

#[test]
fn object_key_is_the_prefix_followed_by_the_relative_path() {
    for prefix in ["archive/", "plain-concatenation-", "a/b/c/"] {
        let sc = scene();
        let s3 = S3::new();
        sc.hs.upload(&s3, &["--delete", "--prefix", prefix]).ok();
        let sel: Vec<&Media> = sc.selected.iter().collect();
        assert_eq!(s3.keys(), keys_of(&sel, prefix), "prefix {prefix:?}");
        for m in &sc.selected {
            sc.hs.assert_offloaded(m, &Dest::S3(&s3), prefix);
        }
    }
}

#[test]
fn file_of_20_mib_is_uploaded_in_parts_and_arrives_byte_identical() {
    let mut hs = Homeserver::sqlite();
    let big = hs.add(Media::local(&hs.new_id()).size(20 * 1024 * 1024 + 12345).with_thumbs());
    hs.update_db("30d");
    let s3 = S3::new();
    let out = hs.upload(&s3, &["--delete"]).ok();
    hs.assert_offloaded(&big, &Dest::S3(&s3), "");
    let key = big.original_rel();
    let h = s3.head(&key).unwrap();
    assert_eq!(h.size, 20 * 1024 * 1024 + 12345);
    assert_eq!(h.metadata.get("md5"), Some(&md5_hex(hs.content(&key))), "md5 metadata is of the whole content");
    assert!(h.etag.contains('-'), "a 20 MiB file should go up as a multipart upload (ETag {:?})", h.etag);
    assert_eq!(out.j("uploaded_bytes"), big.total_bytes() as i64);
}

#[test]
fn zero_byte_files_are_uploaded_and_then_deleted() {
    let mut hs = Homeserver::sqlite();
    let empty = hs.add(Media::local(&hs.new_id()).size(0).thumb("1-1-image-png-crop", 0));
    hs.update_db("30d");
    let s3 = S3::new();
    let out = hs.upload(&s3, &["--delete"]).ok();
    hs.assert_offloaded(&empty, &Dest::S3(&s3), "");
    for rel in empty.rel_paths() {
        assert_eq!(s3.head(&rel).unwrap().size, 0);
    }
    assert_eq!(out.j("uploaded_files"), 2);
    assert_eq!(out.j("deleted_files"), 2);
    assert!(cache_rows(&hs.cache_db())[0].known_deleted);
}

#[test]
fn second_upload_delete_run_uploads_nothing_deletes_nothing_and_leaves_cache_unchanged() {
    let sc = scene();
    let s3 = S3::new();
    sc.hs.upload(&s3, &["--delete"]).ok();
    let cache_before = cache_dump(&sc.hs.cache_db());
    let objects_before = s3.objects();
    let files_before = sc.hs.local_files();

    let out = sc.hs.upload(&s3, &["--delete"]).ok();
    assert_eq!(out.j("uploaded_files"), 0);
    assert_eq!(out.j("uploaded_media"), 0);
    assert_eq!(out.j("deleted_files"), 0);
    assert_eq!(out.j("deleted_media"), 0);
    assert_eq!(out.j("failed_files"), 0);
    assert_eq!(cache_dump(&sc.hs.cache_db()), cache_before);
    assert!(s3.objects() == objects_before);
    assert!(sc.hs.local_files() == files_before);
}

#[test]
fn upload_after_a_copy_only_run_finds_everything_present_and_deletes_it() {
    let sc = scene();
    let s3 = S3::new();
    sc.hs.upload(&s3, &[]).ok();
    let proxy = SsecProxy::start(&test_env().s3_endpoint);
    let via = S3::existing(&proxy.endpoint, &s3.bucket);
    let out = sc.hs.upload(&via, &["--delete"]).ok();
    assert_eq!(out.j("uploaded_files"), 0);
    assert_eq!(out.j("already_present_files"), total_files(&sc.selected));
    assert_eq!(out.j("deleted_files"), total_files(&sc.selected));
    assert!(proxy.object_writes().is_empty(), "nothing may be re-uploaded: {:#?}", proxy.object_writes());
    for m in &sc.selected {
        sc.hs.assert_offloaded(m, &Dest::S3(&s3), "");
    }
}

#[test]
fn media_without_any_local_file_is_marked_deleted_without_uploading() {
    let mut hs = Homeserver::sqlite();
    let ghost = hs.add(Media::local(&hs.new_id()).no_original());
    let real = hs.add(Media::local(&hs.new_id()));
    hs.update_db("30d");
    let s3 = S3::new();
    hs.upload(&s3, &["--delete"]).ok();
    assert_eq!(s3.keys(), vec![real.original_rel()]);
    assert_eq!(cache_known_deleted(&hs.cache_db(), "", &ghost.media_id), Some(true));
}

#[test]
fn media_whose_original_is_gone_still_gets_its_thumbnails_offloaded() {
    let mut hs = Homeserver::sqlite();
    let thumbs_only = hs.add(Media::local(&hs.new_id()).no_original().with_thumbs());
    hs.update_db("30d");
    let s3 = S3::new();
    hs.upload(&s3, &["--delete"]).ok();
    hs.assert_offloaded(&thumbs_only, &Dest::S3(&s3), "");
    assert_eq!(s3.keys().len(), 2);
    assert_eq!(cache_known_deleted(&hs.cache_db(), "", &thumbs_only.media_id), Some(true));
}

#[test]
fn rows_already_known_deleted_are_not_looked_at() {
    let mut hs = Homeserver::sqlite();
    let m = hs.add(Media::local(&hs.new_id()));
    hs.update_db("30d");
    // a stale row says deleted although the file is there: upload trusts the cache
    rusqlite::Connection::open(hs.cache_db()).unwrap().execute("UPDATE media SET known_deleted = 1", []).unwrap();
    let s3 = S3::new();
    let out = hs.upload(&s3, &["--delete"]).ok();
    assert_eq!(out.j("media_total"), 0);
    assert!(s3.keys().is_empty());
    hs.assert_local_intact(&m);
}

#[test]
fn storage_class_flag_sets_the_objects_storage_class() {
    let mut hs = Homeserver::sqlite();
    let small = hs.add(Media::local(&hs.new_id()));
    let big = hs.add(Media::local(&hs.new_id()).size(9 * 1024 * 1024));
    hs.update_db("30d");
    let s3 = S3::new();
    hs.upload(&s3, &["--delete", "--storage-class", "STANDARD_IA"]).ok();
    for m in [&small, &big] {
        let h = s3.head(&m.original_rel()).unwrap();
        assert_eq!(h.storage_class.as_deref(), Some("STANDARD_IA"), "{}", m.original_rel());
    }
}

#[test]
fn many_files_upload_correctly_with_one_or_many_workers() {
    for conc in ["1", "16"] {
        let mut hs = Homeserver::sqlite();
        let items = hs.add_all(
            (0..60)
                .map(|i| {
                    let m = Media::local(&hs.new_id()).size(100 + i * 37);
                    if i % 3 == 0 { m.with_thumbs() } else { m }
                })
                .collect(),
        );
        hs.update_db("30d");
        let s3 = S3::new();
        let out = hs.upload(&s3, &["--delete", "--concurrency", conc]).ok();
        for m in &items {
            hs.assert_offloaded(m, &Dest::S3(&s3), "");
        }
        assert_eq!(out.j("deleted_media"), 60, "--concurrency {conc}");
    }
}

#[test]
fn relative_base_path_is_resolved_against_cwd() {
    let mut hs = Homeserver::sqlite();
    let m = hs.add(Media::local(&hs.new_id()).with_thumbs());
    hs.update_db("30d");
    let s3 = S3::new();
    hs.mo(&["--json", "upload", "media", &s3.bucket, "--endpoint-url", &s3.endpoint, "--delete"]).ok();
    hs.assert_offloaded(&m, &Dest::S3(&s3), "");
}

#[test]
fn check_deleted_after_upload_delete_finds_everything_deleted() {
    let sc = scene();
    let s3 = S3::new();
    sc.hs.upload(&s3, &["--delete"]).ok();
    let out = sc.hs.mo(&["--json", "check-deleted", &sc.hs.media_arg()]).ok();
    assert_eq!(out.j("marked_deleted"), 0);
    assert_eq!(out.j("reopened"), 0);
    assert!(sc.hs.mo(&["write"]).ok().stdout.trim().is_empty());
}

// ---------------------------------------------------------------- SSE-C ---

const SSE_KEY: &str = "0123456789abcdefghijklmnopqrstuv"; // 32 characters, like boto3 takes it

fn ssec_scene() -> (Homeserver, Vec<Media>) {
    let mut hs = Homeserver::sqlite();
    let items = hs.add_all(vec![
        Media::local(&hs.new_id()).with_thumbs(),
        Media::remote("remote.example", "rid", "fsidSSECabcdefghij"),
        // large enough for a multipart upload: every part must carry the key
        Media::local(&hs.new_id()).size(9 * 1024 * 1024 + 7),
    ]);
    hs.update_db("30d");
    (hs, items)
}

fn assert_ssec_protected(hs: &Homeserver, items: &[Media], via: &S3, key: &str) {
    for m in items {
        for rel in m.rel_paths() {
            assert!(!hs.exists(&rel), "{rel} should be deleted");
            let err = via.try_get(&rel, None).expect_err("an SSE-C object must not be readable without the key");
            assert!(err.contains("400") || err.contains("InvalidRequest"), "{err}");
            assert!(via.try_get(&rel, Some("ffffffffffffffffffffffffffffffff")).is_err(), "wrong key must fail");
            let got = via.try_get(&rel, Some(key)).unwrap_or_else(|e| panic!("GET {rel} with the key: {e}"));
            assert!(got == hs.content(&rel), "{rel} content");
        }
    }
}

#[test]
fn sse_c_upload_makes_objects_readable_only_with_the_key() {
    let (hs, items) = ssec_scene();
    let s3 = S3::new();
    let proxy = SsecProxy::start(&test_env().s3_endpoint);
    let via = S3::existing(&proxy.endpoint, &s3.bucket);
    hs.upload(&via, &["--delete", "--sse-customer-key", SSE_KEY]).ok();
    assert_ssec_protected(&hs, &items, &via, SSE_KEY);
    let (_, key_md5) = ssec_headers(SSE_KEY);
    for w in proxy.object_writes() {
        assert_eq!(w.ssec_md5.as_deref(), Some(key_md5.as_str()), "every write carries the key: {w:?}");
    }
}

#[test]
fn sse_c_key_can_come_from_a_file_or_the_environment() {
    for how in ["file", "env", "algo"] {
        let (hs, items) = ssec_scene();
        let s3 = S3::new();
        let proxy = SsecProxy::start(&test_env().s3_endpoint);
        let via = S3::existing(&proxy.endpoint, &s3.bucket);
        let media = hs.media_arg();
        let mut args = vec![
            "--json",
            "upload",
            media.as_str(),
            via.bucket.as_str(),
            "--endpoint-url",
            via.endpoint.as_str(),
            "--delete",
        ];
        let key_file = hs.write_file("sse.key", &format!("{SSE_KEY}\n"));
        let key_file = key_file.to_string_lossy().into_owned();
        let out = match how {
            "file" => {
                args.extend(["--sse-customer-key-file", key_file.as_str()]);
                hs.mo(&args)
            }
            "env" => hs.mo_env(&args, &[("MEDIA_OFFLOAD_SSE_CUSTOMER_KEY", SSE_KEY)]),
            _ => {
                args.extend(["--sse-customer-key", SSE_KEY, "--sse-customer-algo", "AES256"]);
                hs.mo(&args)
            }
        };
        out.ok();
        assert_ssec_protected(&hs, &items, &via, SSE_KEY);
    }
}

#[test]
fn sse_c_rerun_recognises_its_objects_without_uploading_again() {
    let (hs, items) = ssec_scene();
    let s3 = S3::new();
    let proxy = SsecProxy::start(&test_env().s3_endpoint);
    let via = S3::existing(&proxy.endpoint, &s3.bucket);
    // copy first, then a second run with --delete must verify (with the key) and delete
    hs.upload(&via, &["--sse-customer-key", SSE_KEY]).ok();
    proxy.clear_log();
    let out = hs.upload(&via, &["--delete", "--sse-customer-key", SSE_KEY]).ok();
    assert!(proxy.object_writes().is_empty(), "re-uploaded: {:#?}", proxy.object_writes());
    assert_eq!(out.j("uploaded_files"), 0);
    assert_eq!(out.j("already_present_files"), total_files(&items));
    assert_ssec_protected(&hs, &items, &via, SSE_KEY);
}

// ---------------------------------------------------- local directory store ---

#[test]
fn bucket_with_a_slash_selects_a_local_directory_store() {
    let sc = scene();
    let archive = sc.hs.cwd().join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    let out = sc.hs.upload_dir(&archive, &["--delete"]).ok();
    let dest = Dest::Dir(archive.clone());
    for m in &sc.selected {
        sc.hs.assert_offloaded(m, &dest, "");
    }
    let sel: Vec<&Media> = sc.selected.iter().collect();
    assert_eq!(dest.keys(), keys_of(&sel, ""));
    assert_eq!(out.j("deleted_media"), 4);
}

#[test]
fn directory_store_accepts_relative_and_file_url_forms_and_a_prefix() {
    for form in ["relative", "file-url"] {
        let sc = scene();
        let archive = sc.hs.cwd().join("arch");
        std::fs::create_dir_all(&archive).unwrap();
        let bucket = match form {
            "relative" => "./arch".to_string(),
            _ => format!("file://{}", archive.display()),
        };
        let media = sc.hs.media_arg();
        sc.hs.mo(&["--json", "upload", &media, &bucket, "--delete", "--prefix", "p/"]).ok();
        let dest = Dest::Dir(archive.clone());
        for m in &sc.selected {
            sc.hs.assert_offloaded(m, &dest, "p/");
        }
        let sel: Vec<&Media> = sc.selected.iter().collect();
        assert_eq!(dest.keys(), keys_of(&sel, "p/"), "form {form}");
    }
}

#[test]
fn directory_store_rerun_changes_nothing() {
    let sc = scene();
    let archive = sc.hs.cwd().join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    sc.hs.upload_dir(&archive, &["--delete"]).ok();
    let before = files_under(&archive);
    let cache_before = cache_dump(&sc.hs.cache_db());
    let out = sc.hs.upload_dir(&archive, &["--delete"]).ok();
    assert_eq!(out.j("uploaded_files"), 0);
    assert_eq!(out.j("deleted_files"), 0);
    assert!(files_under(&archive) == before);
    assert_eq!(cache_dump(&sc.hs.cache_db()), cache_before);
}

/// A store that ignores `If-None-Match` (a proxy drops the header before
/// moto sees it): the probe after the first small upload finds the second
/// PUT accepted, so every later upload asks HEAD first, and the conflict
/// rules hold as they do with a store that honours the condition.
#[test]
fn a_store_ignoring_if_none_match_gets_a_head_before_each_put() {
    let mut hs = Homeserver::sqlite();
    let s3 = S3::new();
    let fresh = hs.add_all((0..2).map(|_| Media::local(&hs.new_id()).size(2000)).collect());
    hs.update_db("0s");
    let same = hs.add(Media::local(&hs.new_id()).size(3000));
    let differs = hs.add(Media::local(&hs.new_id()).size(3000));
    hs.update_db("0s");
    s3.put(&same.original_rel(), hs.content(&same.original_rel()), &[]);
    let key = differs.original_rel();
    let mut other = hs.content(&key).to_vec();
    other[7] ^= 1;
    s3.put(&key, &other, &[]);

    let proxy = DenyProxy::dropping_header(&s3.endpoint, "if-none-match");
    let out = hs.upload_via(&proxy.endpoint, &s3.bucket, &["--delete", "--concurrency", "1", "-v"]).status(3);
    assert!(
        out.stderr.contains("does not refuse a PUT over an existing object with If-None-Match"),
        "the probe finds the condition ignored: {}",
        out.describe()
    );
    for m in fresh.iter().chain([&same]) {
        hs.assert_offloaded(m, &Dest::S3(&s3), "");
    }
    hs.assert_local_intact(&differs);
    assert_eq!(s3.get(&key).unwrap(), other, "the differing object is not overwritten");
    assert_eq!(out.j("conflicts"), 1, "{}", out.describe());
    assert_eq!(out.j("already_present_files"), 1);
    assert_eq!(out.j("uploaded_files"), 2);
}
