//! Taking turns with the real Python tool (s3_media_upload from
//! synapse-s3-storage-provider 1.7.0) on one cache.db, and doing what it does.

use crate::common::*;

/// The same media in a homeserver: ids are fixed, contents are derived from
/// the paths, so two homeservers built from this are identical.
fn standard_media() -> Vec<Media> {
    vec![
        Media::local("aaaaBBBBccccDDDDeeeeFFFF").with_thumbs(),
        Media::local("bbbbCCCCddddEEEEffffGGGG").size(12345),
        Media::local("ccccDDDDeeeeFFFFggggHHHH").no_original().with_thumbs(),
        Media::local("ddddEEEEffffGGGGhhhhIIII").accessed_days_ago(45),
        Media::remote("remote.example", "remoteAAAA", "fsidAAAAbbbbCCCCddddEEEE").with_thumbs(),
        Media::remote("matrix.example:8448", "remoteBBBB", "fsidBBBBccccDDDDeeeeFFFF").size(1),
        // never selected: keeps the media store from being emptied entirely
        // (the Python tool removes empty directories up to the store itself)
        Media::local("zzzzYOUNGyoungYOUNGyoung").created_days_ago(1).with_thumbs(),
        Media::local("zzzzURLCACHEurlcacheURLc").url_cache("https://example.org/").with_thumbs(),
        Media::remote("remote.example", "remoteYOUNG", "fsidYOUNGyoungYOUNGyoung").created_days_ago(3),
    ]
}

fn selected() -> Vec<Media> {
    standard_media().into_iter().filter(|m| !m.media_id.contains("zzzz") && !m.media_id.contains("YOUNG")).collect()
}

fn standard_homeserver() -> Homeserver {
    let mut hs = Homeserver::sqlite();
    hs.add_all(standard_media());
    hs
}

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn cache_db_we_create_has_the_python_tools_schema_and_rows() {
    let ours = standard_homeserver();
    let theirs = standard_homeserver();
    ours.update_db("30d");
    theirs.py(&["--no-progress", "update-db", "30d"]).ok();
    assert_eq!(cache_schema(&ours.cache_db()), cache_schema(&theirs.cache_db()));
    assert_eq!(cache_dump(&ours.cache_db()), cache_dump(&theirs.cache_db()));
    let want: Vec<CacheRow> = {
        let mut v: Vec<CacheRow> = selected().iter().map(|m| m.cache_row()).collect();
        v.sort();
        v
    };
    assert_eq!(cache_rows(&ours.cache_db()), want);
}

#[test]
fn python_update_db_then_our_upload_delete_offloads_everything() {
    let hs = standard_homeserver();
    hs.py(&["--no-progress", "update-db", "30d"]).ok();
    let schema = cache_master_sql(&hs.cache_db());
    let s3 = S3::new();
    let out = hs.upload(&s3, &["--delete"]).ok();
    for m in selected() {
        hs.assert_offloaded(&m, &Dest::S3(&s3), "");
    }
    assert_eq!(out.j("deleted_media"), 6);
    assert!(cache_rows(&hs.cache_db()).iter().all(|r| r.known_deleted));
    assert_eq!(cache_master_sql(&hs.cache_db()), schema, "our run changed the schema the Python tool made");
}

#[test]
fn our_update_db_then_python_check_deleted_and_write_work_on_our_cache() {
    let hs = standard_homeserver();
    hs.update_db("30d");
    let sel = selected();
    // one media disappears entirely
    for rel in sel[1].rel_paths() {
        hs.remove(&rel);
    }
    let py = hs.py(&["--no-progress", "check-deleted", &hs.media_arg()]).ok();
    assert!(py.stdout.contains("Updated 1 as deleted"), "{}", py.describe());
    assert_eq!(cache_known_deleted(&hs.cache_db(), "", &sel[1].media_id), Some(true));

    let py_write = hs.py(&["write"]).ok();
    let our_write = hs.mo(&["write"]).ok();
    assert_eq!(sorted_lines(&our_write.stdout), sorted_lines(&py_write.stdout));
    let mut want: Vec<String> =
        sel.iter().filter(|m| m.media_id != sel[1].media_id).flat_map(|m| m.write_lines()).collect();
    want.sort();
    assert_eq!(sorted_lines(&py_write.stdout), want);
}

#[test]
fn after_our_upload_delete_the_python_tool_sees_nothing_left_to_do() {
    let hs = standard_homeserver();
    hs.update_db("30d");
    let s3 = S3::new();
    hs.upload(&s3, &["--delete"]).ok();
    let objects = s3.objects();
    let py = hs.py_upload(&s3, &["--delete"]).ok();
    assert!(py.stdout.contains("Uploading  0  files"), "{}", py.describe());
    assert!(s3.objects() == objects);
    assert!(hs.py(&["write"]).ok().stdout.trim().is_empty());
}

#[test]
fn both_tools_produce_the_same_objects_and_the_same_cache_after_upload_delete() {
    let ours = standard_homeserver();
    let theirs = standard_homeserver();
    ours.update_db("30d");
    theirs.py(&["--no-progress", "update-db", "30d"]).ok();
    let (s3_ours, s3_theirs) = (S3::new(), S3::new());
    ours.upload(&s3_ours, &["--delete", "--prefix", "pre/"]).ok();
    theirs.py_upload(&s3_theirs, &["--delete", "--prefix", "pre/"]).ok();
    assert_eq!(s3_ours.keys(), s3_theirs.keys());
    assert!(s3_ours.objects() == s3_theirs.objects());
    assert_eq!(cache_dump(&ours.cache_db()), cache_dump(&theirs.cache_db()));
    assert!(ours.local_files() == theirs.local_files(), "different files left on disk");
}

#[test]
fn python_upload_without_delete_then_our_upload_delete_verifies_and_deletes() {
    let hs = standard_homeserver();
    hs.py(&["--no-progress", "update-db", "30d"]).ok();
    let s3 = S3::new();
    hs.py_upload(&s3, &[]).ok();
    let out = hs.upload(&s3, &["--delete"]).ok();
    for m in selected() {
        hs.assert_offloaded(&m, &Dest::S3(&s3), "");
    }
    assert_eq!(out.j("failed_files"), 0);
}

#[test]
fn taking_turns_with_the_python_tool_keeps_the_schema_byte_for_byte() {
    let mut hs = standard_homeserver();
    hs.py(&["--no-progress", "update-db", "30d"]).ok();
    let schema = cache_master_sql(&hs.cache_db());
    let s3 = S3::new();

    hs.upload(&s3, &[]).ok();
    assert_eq!(cache_master_sql(&hs.cache_db()), schema);
    hs.py(&["--no-progress", "check-deleted", &hs.media_arg()]).ok();
    let new = hs.add(Media::local("nnnnNEWnewNEWnewNEWnewNE"));
    hs.mo(&["update", &hs.media_arg(), "30d"]).ok();
    assert_eq!(cache_master_sql(&hs.cache_db()), schema);
    hs.py_upload(&s3, &["--delete"]).ok();
    hs.mo(&["check-deleted", &hs.media_arg()]).ok();
    hs.upload(&s3, &["--delete"]).ok();
    assert_eq!(cache_master_sql(&hs.cache_db()), schema);
    hs.assert_offloaded(&new, &Dest::S3(&s3), "");
    for m in selected() {
        hs.assert_offloaded(&m, &Dest::S3(&s3), "");
    }
    assert!(hs.py(&["write"]).ok().stdout.trim().is_empty());
}

#[test]
fn python_and_we_select_the_same_rows_from_postgres() {
    let mut ours = Homeserver::postgres();
    ours.add_all(standard_media());
    ours.update_db("30d");
    // the Python tool reads the same database from another directory
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(ours.cwd().join("homeserver.yaml"), dir.path().join("homeserver.yaml")).unwrap();
    run_python(&["--no-progress", "update-db", "30d"], dir.path(), &[]).ok();
    assert_eq!(cache_dump(&ours.cache_db()), cache_dump(&dir.path().join("cache.db")));
}

#[test]
fn the_python_tool_reads_a_cache_db_our_upload_left_half_done() {
    let hs = standard_homeserver();
    hs.update_db("30d");
    let s3 = S3::new();
    // our run without --delete, then the Python tool finishes with --delete
    hs.upload(&s3, &[]).ok();
    hs.py_upload(&s3, &["--delete"]).ok();
    for m in selected() {
        hs.assert_offloaded(&m, &Dest::S3(&s3), "");
    }
    let out = hs.mo(&["--json", "check-deleted", &hs.media_arg()]).ok();
    assert_eq!(out.j("reopened"), 0);
}
