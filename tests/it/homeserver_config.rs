//! The right database and the right store: Synapse's configuration read
//! as Synapse reads it (several config paths, Debian's conf.d/ folder),
//! each setting's source said at INFO, and a purge or a fix refused on a
//! database that is not the live one.

use std::path::PathBuf;

use crate::common::*;

/// Debian's layout: etc/homeserver.yaml as the package ships it (SQLite,
/// a default media path) and etc/conf.d/ with the admin's real settings
/// (PostgreSQL, the media store, the S3 provider).
fn debian_layout(hs: &Homeserver, s3: &S3) -> (PathBuf, PathBuf) {
    let stale = hs.cwd().join("homeserver.db");
    rusqlite::Connection::open(&stale)
        .unwrap()
        .execute_batch(crate::common::synapse_schema::SYNAPSE_MEDIA_SCHEMA_SQLITE)
        .unwrap();
    let etc = hs.cwd().join("etc");
    let main = hs.write_file(
        "etc/homeserver.yaml",
        &format!(
            "server_name: {SERVER_NAME}\nreport_stats: false\nmedia_store_path: /nonexistent/media\n\
             database:\n  name: sqlite3\n  args:\n    database: {}\n",
            stale.display()
        ),
    );
    hs.write_file("etc/conf.d/database.yaml", &database_section_psycopg2(&hs.pg().socket_params()));
    hs.write_file("etc/conf.d/media.yaml", &format!("media_store_path: {}\n", hs.media.display()));
    hs.write_file("etc/conf.d/s3.yaml", &s3_provider_yaml(&s3.provider_config("")));
    hs.write_file("etc/conf.d/README", "not a .yaml file: Synapse ignores it\ndatabase: nonsense\n");
    std::fs::remove_file(hs.cwd().join("homeserver.yaml")).unwrap();
    (main, etc.join("conf.d"))
}

#[test]
fn debians_conf_d_is_read_with_homeserver_yaml_and_every_source_is_named() {
    let mut hs = Homeserver::postgres();
    let s3 = S3::new();
    let (main, conf_d) = debian_layout(&hs, &s3);
    let old = hs.add_all(vec![
        Media::local(&hs.new_id()).with_thumbs(),
        Media::remote("r.example", &hs.new_id(), &hs.new_id()),
    ]);
    let main_arg = main.to_string_lossy().into_owned();
    let out = hs.mo(&["--json", "--no-progress", "migrate", "--homeserver-config-path", &main_arg]).ok();
    for m in &old {
        hs.assert_offloaded(m, &Dest::S3(&s3), "");
    }
    let conf_d_text = conf_d.display().to_string();
    out.stderr_line_with(&format!("reading {conf_d_text} too"));
    let db = out.stderr_line_with("homeserver database: PostgreSQL");
    assert!(db.contains(&format!("{conf_d_text}/database.yaml")), "{db}");
    let store = out.stderr_line_with("media store: ");
    assert!(store.contains(&format!("{conf_d_text}/media.yaml: media_store_path")), "{store}");
    let bucket = out.stderr_line_with("object store: ");
    assert!(bucket.contains(&format!("{conf_d_text}/s3.yaml: media_storage_providers[1].config.bucket")), "{bucket}");

    // The same files given one by one, and the s3_media_upload interface.
    let conf_arg = conf_d.to_string_lossy().into_owned();
    hs.mo(&["migrate", "--homeserver-config-path", &main_arg, "--homeserver-config-path", &conf_arg]).ok();
    let fresh = hs.add(Media::local(&hs.new_id()));
    let out = hs.mo(&["--json", "update-db", "30d", "--homeserver-config-path", &main_arg]).ok();
    assert_eq!(out.j("new_rows"), 1, "read from PostgreSQL, not the stale SQLite file: {}", out.describe());
    assert!(hs.has_row(&fresh));
}

#[test]
fn a_database_yaml_that_overrides_homeserver_yaml_says_so() {
    let hs = Homeserver::sqlite();
    hs.write_file("database.yaml", &database_yaml_sqlite(hs.sqlite_path()));
    let out = hs.mo(&["update-db", "30d"]).ok();
    out.stderr_line_with("./database.yaml, which overrides the database section of homeserver.yaml");
}

/// A SQLite database left behind: its newest event is a month old, its
/// media older; the media store lives on with a file from two hours ago.
fn stale_scene() -> (Homeserver, Media) {
    let mut hs = Homeserver::sqlite();
    let m = hs.add(Media::remote("remote.example", &hs.new_id(), &hs.new_id()).with_thumbs());
    hs.last_event_ago(30 * DAY_MS);
    hs.add(Media::local(&hs.new_id()).files_only().created_ms_ago(2 * HOUR_MS));
    (hs, m)
}

#[test]
fn purge_refuses_a_database_that_is_not_the_live_one() {
    let (hs, m) = stale_scene();
    let before = hs.db_snapshot();
    for extra in [&[][..], &["--dry-run"][..]] {
        let mut args = vec!["purge", "--remote-older-than", "30d"];
        args.extend_from_slice(extra);
        let line = hs.mo(&args).clean_error(1, &["refusing to purge", "--force", "local_content/"]);
        assert!(line.contains(&hs.sqlite_path().display().to_string()), "names the database: {line}");
    }
    assert_eq!(hs.db_snapshot(), before);
    hs.assert_local_intact(&m);
    let out = hs.mo(&["--json", "purge", "--remote-older-than", "30d", "--force"]).ok();
    out.stderr_line_with("going on because of --force");
    assert_eq!(out.jn("remote.media"), 1);
    hs.assert_local_gone(&m);
}

#[test]
fn check_fix_refuses_a_database_that_is_not_the_live_one_but_check_reports() {
    let (hs, _) = stale_scene();
    let s3 = S3::new();
    let out = hs.mo_store(&s3, "", &["--json", "check"]).status(4);
    assert_eq!(out.jn("unknown_files.count"), 1, "{}", out.describe());
    hs.mo_store(&s3, "", &["check", "--fix"]).clean_error(1, &["refusing to fix", "--force"]);
    assert_eq!(hs.local_files().len(), 4, "nothing was deleted");
    let out = hs.mo_store(&s3, "", &["--json", "check", "--fix", "--force"]).ok();
    assert_eq!(out.jn("unknown_files.fixed"), 1, "{}", out.describe());
}
