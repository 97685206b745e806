//! kill -9 at every named crash point (`MEDIA_OFFLOAD_CRASH_AT`), not at a
//! lucky moment: after each kill no local file may be gone without an
//! identical object, and a rerun must complete the job, after which one
//! more run changes nothing.
//!
//! The points, in the order a file meets them: after its PUT (stored, not
//! verified), after its verification (local file still there), after its
//! unlink (media not yet recorded), before a batch of finished media is
//! marked in cache.db. Each is hit at the first, an early and a late
//! occurrence, so kills land in the first media, in the middle and near
//! the end.

use crate::common::*;

const UPLOAD_POINTS: &[&str] = &["after-put", "after-verify", "after-unlink", "before-mark"];

fn upload_args<'a>(media: &'a str, bucket: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--no-progress", "upload", media, bucket, "--delete"];
    v.extend_from_slice(extra);
    v
}

fn crash_at_every_point_then_finish(hs: &Homeserver, bucket: &str, extra: &[&str], dest: &Dest) {
    let media = hs.media_arg();
    let args = upload_args(&media, bucket, extra);
    let total = hs.generated().len();
    let mut kills = 0;
    for point in UPLOAD_POINTS {
        for n in [1, 9, 60] {
            let at = format!("{point}:{n}");
            let killed = crashed_at(&args, hs.cwd(), &at);
            kills += usize::from(killed);
            let gone = hs.assert_nothing_lost(dest, "");
            eprintln!(
                "{}: {gone}/{total} files offloaded so far",
                if killed { at } else { format!("{at} not reached") }
            );
        }
    }
    assert!(kills >= UPLOAD_POINTS.len() * 2, "only {kills} runs reached their crash point");
    // The kernel dropped the locks with the process: a rerun must not see them held.
    rerun_completes_then_nothing_changes(hs, &args, dest);
}

#[test]
fn kill_9_at_each_crash_point_of_s3_upload_delete_never_loses_a_file_and_a_rerun_completes() {
    let hs = realistic_store();
    let s3 = S3::new();
    crash_at_every_point_then_finish(&hs, &s3.bucket.clone(), &["--endpoint-url", &s3.endpoint], &Dest::S3(&s3));
}

#[test]
fn kill_9_at_each_crash_point_of_directory_store_upload_delete_never_loses_a_file() {
    let hs = realistic_store();
    let archive = hs.cwd().join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    let a = archive.to_string_lossy().into_owned();
    crash_at_every_point_then_finish(&hs, &a, &[], &Dest::Dir(archive.clone()));
    assert!(
        files_under(&archive).keys().all(|k| !k.ends_with(".media-offload.tmp")),
        "temporary files left in the store"
    );
}

#[test]
fn kill_9_at_each_crash_point_of_update_db_and_check_deleted_leaves_a_usable_cache() {
    let mut hs = Homeserver::sqlite();
    hs.add_all((0..25_000).map(|i| Media::local(&format!("{i:08}abcdefghijklmnop")).no_original()).collect());
    for at in ["update-db-batch:1", "update-db-batch:2", "update-db-commit"] {
        assert!(crashed_at(&["update-db", "30d"], hs.cwd(), at), "{at} was not reached");
        // The transaction never committed: cache.db is as before (empty),
        // with the indexes the filling run had dropped until its commit.
        assert_eq!(cache_rows(&hs.cache_db()).len(), 0, "{at}");
        assert_eq!(cache_indexes(&hs.cache_db()), ALL_INDEXES, "{at}");
    }
    // A dry run reads the cache.db a killed run left (a hot journal) as is.
    assert!(crashed_at(&["update-db", "30d"], hs.cwd(), "update-db-commit"));
    let archive = hs.cwd().join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    std::fs::create_dir_all(hs.path_of("local_content")).unwrap();
    let a = archive.to_string_lossy().into_owned();
    let out = hs.mo(&["--json", "migrate", "--dry-run", "--bucket", &a]).ok();
    assert_eq!(out.jn("update_db.new_rows"), 25_000, "{}", out.describe());
    hs.update_db("30d");
    assert_eq!(cache_rows(&hs.cache_db()).len(), 25_000);
    let media = hs.media_arg();
    for at in ["check-deleted-page:1", "check-deleted-page:5"] {
        assert!(crashed_at(&["check-deleted", &media], hs.cwd(), at), "{at} was not reached");
        assert!(cache_rows(&hs.cache_db()).iter().all(|r| !r.known_deleted), "{at}: nothing committed");
        assert_eq!(cache_indexes(&hs.cache_db()), ALL_INDEXES, "{at}: deleted_idx back");
    }
    let out = hs.mo(&["--json", "check-deleted", &media]).ok();
    assert_eq!(out.j("marked_deleted"), 25_000, "no media has files: {}", out.describe());
    assert!(cache_rows(&hs.cache_db()).iter().all(|r| r.known_deleted));
    assert_eq!(cache_indexes(&hs.cache_db()), ALL_INDEXES);
    let conn = rusqlite::Connection::open(hs.cache_db()).unwrap();
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
}

/// cache.db's indexes: the Python tool's two and media-offload's one.
const ALL_INDEXES: [&str; 3] = ["deleted_idx", "media_id_idx", "media_offload_remote_fsid_idx"];

fn cache_indexes(path: &std::path::Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt =
        conn.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name").unwrap();
    stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
}
