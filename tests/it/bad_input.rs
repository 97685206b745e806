//! Bad input: broken configs, unreachable databases, invalid durations,
//! broken state files, and rows whose ids would lead out of the media store.
//! Each must give a clear error (no panic, no backtrace), a non-zero exit
//! status, and must delete nothing.

use crate::common::*;

fn simple() -> (Homeserver, Media) {
    let mut hs = Homeserver::sqlite();
    let m = hs.add(Media::local(&hs.new_id()).with_thumbs());
    (hs, m)
}

// ------------------------------------------------------------- configs ---

#[test]
fn malformed_homeserver_yaml_is_a_one_line_error_naming_the_file() {
    let (hs, m) = simple();
    hs.write_file("homeserver.yaml", "database:\n  name: sqlite3\n  args: [unclosed\n   - : :\n");
    hs.mo(&["update-db", "30d"]).clean_error(1, &["homeserver.yaml"]);
    hs.mo(&["update", &hs.media_arg(), "30d"]).clean_error(1, &["homeserver.yaml"]);
    hs.assert_local_intact(&m);
}

#[test]
fn homeserver_yaml_that_is_not_a_mapping_is_an_error() {
    let (hs, _) = simple();
    for text in ["just a string\n", "- a\n- list\n", ""] {
        hs.write_file("homeserver.yaml", text);
        hs.mo(&["update-db", "30d"]).clean_error(1, &[]);
    }
}

#[test]
fn homeserver_yaml_without_a_database_section_is_an_error_naming_it() {
    let (hs, _) = simple();
    hs.write_file("homeserver.yaml", "server_name: test.example\nmedia_store_path: /nonexistent\n");
    hs.mo(&["update-db", "30d"]).clean_error(1, &["database"]);
}

#[test]
fn sqlite_config_without_a_database_path_is_an_error() {
    let (hs, _) = simple();
    hs.write_file("homeserver.yaml", "database:\n  name: sqlite3\n  args: {}\n");
    hs.mo(&["update-db", "30d"]).clean_error(1, &["database"]);
    hs.write_file("homeserver.yaml", "database:\n  name: sqlite3\n");
    hs.mo(&["update-db", "30d"]).clean_error(1, &[]);
}

#[test]
fn missing_homeserver_yaml_is_an_error_naming_the_file() {
    let (hs, _) = simple();
    std::fs::remove_file(hs.cwd().join("homeserver.yaml")).unwrap();
    hs.mo(&["update-db", "30d"]).clean_error(1, &["homeserver.yaml"]);
    hs.mo(&["update-db", "30d", "--homeserver-config-path", "elsewhere.yaml"]).clean_error(1, &["elsewhere.yaml"]);
}

#[test]
fn malformed_or_incomplete_database_yaml_is_an_error_naming_it() {
    let (hs, _) = simple();
    hs.write_file("database.yaml", "sqlite: [oops\n");
    hs.mo(&["update-db", "30d"]).clean_error(1, &["database.yaml"]);
    hs.write_file("database.yaml", "sqlite:\n  not_database: x\n");
    hs.mo(&["update-db", "30d"]).clean_error(1, &[]);
}

#[test]
fn sqlite_homeserver_db_that_is_missing_or_has_no_synapse_tables_is_an_error() {
    let (hs, _) = simple();
    hs.write_file("homeserver.yaml", &homeserver_yaml_sqlite(&hs.cwd().join("no/such/dir/homeserver.db"), &hs.media));
    hs.mo(&["update-db", "30d"]).clean_error(1, &[]);
    let empty = hs.cwd().join("empty.db");
    rusqlite::Connection::open(&empty).unwrap().execute_batch("CREATE TABLE unrelated (x);").unwrap();
    hs.write_file("homeserver.yaml", &homeserver_yaml_sqlite(&empty, &hs.media));
    hs.mo(&["update-db", "30d"]).clean_error(1, &[]);
}

// ----------------------------------------------------------- durations ---

#[test]
fn invalid_durations_are_usage_errors_naming_the_value() {
    let (hs, _) = simple();
    let media = hs.media_arg();
    for bad in ["5x", "d", "-1d", "1.5d", "5", "1D", "5 d", "+-3h", "99999999999999999999d"] {
        hs.mo(&["update-db", "--", bad]).clean_error(2, &[bad]);
        hs.mo(&["update", &media, "--", bad]).clean_error(2, &[bad]);
        if !bad.starts_with('-') {
            hs.mo(&["update-db", bad]).clean_error(2, &[bad]);
        }
    }
    // without "--", a leading '-' makes it look like a flag; still a usage error
    hs.mo(&["update-db", "-1d"]).clean_error(2, &["-1"]);
    // the empty string
    hs.mo(&["update-db", ""]).clean_error(2, &[]);
    assert!(!hs.cache_db().exists() || cache_rows(&hs.cache_db()).is_empty());
}

#[test]
fn absurdly_long_durations_do_not_crash() {
    let (hs, _) = simple();
    for d in ["999999999999y", "18446744073709551615s"] {
        let out = hs.mo(&["update-db", d]);
        out.no_panic();
        assert!(matches!(out.code(), 0 | 2), "{}", out.describe());
    }
}

// -------------------------------------------------------- command line ---

#[test]
fn usage_errors_exit_2() {
    let (hs, _) = simple();
    let media = hs.media_arg();
    for args in [
        vec![],
        vec!["no-such-command"],
        vec!["upload", media.as_str()],
        vec!["upload", media.as_str(), "bucket", "--storage-class", "BOGUS"],
        vec!["update-db", "30d", "--no-such-flag"],
        vec!["check-deleted"],
    ] {
        let out = hs.mo(&args);
        out.no_panic();
        assert_eq!(out.code(), 2, "{}", out.describe());
    }
}

// ----------------------------------------------------------- cache.db ---

#[test]
fn a_cache_db_that_is_not_sqlite_is_a_fatal_error_and_is_left_alone() {
    let (hs, m) = simple();
    let garbage = content_for("not a database", 8192);
    std::fs::write(hs.cache_db(), &garbage).unwrap();
    let s3 = S3::new();
    hs.mo(&["update-db", "30d"]).clean_error(1, &[]);
    hs.mo(&["check-deleted", &hs.media_arg()]).clean_error(1, &[]);
    hs.mo(&["write"]).clean_error(1, &[]);
    hs.upload(&s3, &["--delete"]).clean_error(1, &[]);
    assert!(std::fs::read(hs.cache_db()).unwrap() == garbage, "cache.db was modified");
    hs.assert_local_intact(&m);
    assert!(s3.keys().is_empty());
}

#[test]
fn a_cache_db_with_a_different_table_layout_is_refused() {
    let (hs, m) = simple();
    rusqlite::Connection::open(hs.cache_db())
        .unwrap()
        .execute_batch("CREATE TABLE media (something_else TEXT); INSERT INTO media VALUES ('x');")
        .unwrap();
    let s3 = S3::new();
    let out = hs.upload(&s3, &["--delete"]);
    out.no_panic();
    assert_ne!(out.code(), 0, "{}", out.describe());
    hs.assert_local_intact(&m);
}

// -------------------------------------------------------------- upload ---

#[test]
fn sse_c_key_of_the_wrong_length_fails_cleanly_and_deletes_nothing() {
    let (hs, m) = simple();
    hs.update_db("30d");
    let s3 = S3::new();
    let proxy = SsecProxy::start(&test_env().s3_endpoint);
    let via = S3::existing(&proxy.endpoint, &s3.bucket);
    let out = hs.upload(&via, &["--delete", "--sse-customer-key", "tooshort"]);
    out.no_panic();
    assert!(matches!(out.code(), 1..=3), "{}", out.describe());
    hs.assert_local_intact(&m);
}

#[test]
fn check_deleted_with_a_wrong_base_path_marks_nothing_deleted() {
    let (hs, _) = simple();
    hs.update_db("30d");
    let before = cache_dump(&hs.cache_db());
    let out = hs.mo(&["check-deleted", &hs.cwd().join("not-the-media-store").to_string_lossy()]);
    out.no_panic();
    assert_eq!(cache_dump(&hs.cache_db()), before, "a typo in BASE_PATH must not mark media deleted");
}

// --------------------------------------------- rows that escape the store ---

/// Rows whose ids climb out of the media store (or are otherwise unusable),
/// with "victim" files placed where a naive path join would land. The store
/// is `DIR/d1/d2/d3/media`, so every such path is still inside the test's
/// temporary directory.
struct Evil {
    hs: Homeserver,
    good: Vec<Media>,
    evil_rows: Vec<CacheRow>,
    /// substrings of each evil row that its error line must mention
    names: Vec<&'static str>,
    victims: Vec<(std::path::PathBuf, Vec<u8>)>,
}

fn evil_scene() -> Evil {
    let mut hs = Homeserver::sqlite_with_media_at("d1/d2/d3/media");
    let good = hs.add_all(vec![
        Media::local("abcdGOODgoodGOODgoodGOOD").with_thumbs(),
        Media::local(&hs.new_id()),
        Media::remote("remote.example", "goodRemote", "fsidGOODremoteGOODremote").with_thumbs(),
    ]);
    let evil_rows = vec![
        CacheRow::local("....x"),
        CacheRow::local("....yvictimdir"),
        CacheRow::local("a/b"),
        CacheRow::local("abcd"),
        CacheRow::local("ab\\cdefgh"),
        CacheRow::local("nul\0byte"),
        CacheRow::remote("../..", "evilOrigin", "abcdefgh"),
        CacheRow::remote("remote.example", "evilFsid", "......zz"),
    ];
    let names = vec!["....x", "....yvictimdir", "a/b", "abcd", "cdefgh", "nul", "evilOrigin", "evilFsid"];
    let d3 = hs.media.parent().unwrap().to_path_buf();
    let m = hs.media.clone();
    let mut victims = Vec::new();
    let mut victim = |p: std::path::PathBuf| {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let data = content_for(&p.to_string_lossy(), 321);
        std::fs::write(&p, &data).unwrap();
        victims.push((p, data));
    };
    victim(d3.join("x")); // ....x
    victim(d3.join("yvictimdir/victim.png")); // thumbnails of ....yvictimdir
    victim(m.join("local_thumbnails/a/b/victim.png")); // thumbnails of a/b
    victim(m.join("local_content/a/b/victim")); // a/b as a directory
    victim(d3.join("ab/cd/efgh")); // remote origin ../..
    victim(m.join("..zz")); // remote filesystem_id ......zz
    cache_insert(&hs.cache_db(), &good.iter().map(|g| g.cache_row()).collect::<Vec<_>>());
    cache_insert(&hs.cache_db(), &evil_rows);
    Evil { hs, good, evil_rows, names, victims }
}

impl Evil {
    #[track_caller]
    fn assert_victims_intact(&self) {
        for (p, data) in &self.victims {
            let got = std::fs::read(p).unwrap_or_else(|e| panic!("{} was touched: {e}", p.display()));
            assert!(&got == data, "{} was modified", p.display());
        }
    }

    #[track_caller]
    fn assert_rows_named(&self, out: &Out) {
        for n in &self.names {
            assert!(
                out.stderr.lines().any(|l| l.contains(n)),
                "no line names the refused row {n:?}: {}",
                out.describe()
            );
        }
    }

    #[track_caller]
    fn assert_evil_rows_untouched(&self) {
        let rows = cache_rows(&self.hs.cache_db());
        for e in &self.evil_rows {
            let r = rows
                .iter()
                .find(|r| r.origin == e.origin && r.media_id == e.media_id)
                .unwrap_or_else(|| panic!("row {e:?} vanished"));
            assert!(!r.known_deleted, "refused row {e:?} must not be marked");
        }
    }
}

#[test]
fn upload_delete_refuses_rows_escaping_the_media_store_and_touches_nothing_of_theirs() {
    let ev = evil_scene();
    let s3 = S3::new();
    let out = ev.hs.upload(&s3, &["--delete"]);
    out.no_panic();
    assert_eq!(out.code(), 3, "{}", out.describe());
    ev.assert_rows_named(&out);
    assert_eq!(out.j("invalid_rows"), ev.evil_rows.len() as i64);
    ev.assert_victims_intact();
    ev.assert_evil_rows_untouched();
    let good: Vec<&Media> = ev.good.iter().collect();
    assert_eq!(s3.keys(), keys_of(&good, ""), "only the valid media may be uploaded");
    for m in &ev.good {
        ev.hs.assert_offloaded(m, &Dest::S3(&s3), "");
    }
}

#[test]
fn directory_store_upload_refuses_escaping_rows_too() {
    let ev = evil_scene();
    let archive = ev.hs.cwd().join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    let out = ev.hs.upload_dir(&archive, &["--delete"]);
    out.no_panic();
    assert_eq!(out.code(), 3, "{}", out.describe());
    ev.assert_victims_intact();
    let good: Vec<&Media> = ev.good.iter().collect();
    assert_eq!(files_under(&archive).into_keys().collect::<Vec<_>>(), keys_of(&good, ""));
    // nothing was written beside the archive either
    let beside: Vec<String> = std::fs::read_dir(ev.hs.cwd())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for name in beside {
        assert!(
            ["archive", "d1", "homeserver.yaml", "homeserver.db", "cache.db", "cache.db.lock"].contains(&name.as_str())
                || name.starts_with("cache.db"),
            "unexpected {name} next to the archive"
        );
    }
}

#[test]
fn check_deleted_refuses_escaping_rows_and_leaves_them_as_they_are() {
    let ev = evil_scene();
    // one good media disappears: it must still be marked
    for rel in ev.good[1].rel_paths() {
        ev.hs.remove(&rel);
    }
    let out = ev.hs.mo(&["--json", "check-deleted", &ev.hs.media_arg()]);
    out.no_panic();
    assert_eq!(out.code(), 3, "{}", out.describe());
    ev.assert_rows_named(&out);
    ev.assert_evil_rows_untouched();
    ev.assert_victims_intact();
    assert_eq!(cache_known_deleted(&ev.hs.cache_db(), "", &ev.good[1].media_id), Some(true));
    assert_eq!(cache_known_deleted(&ev.hs.cache_db(), "", &ev.good[0].media_id), Some(false));
}

#[test]
fn row_pointing_at_etc_is_refused_without_reading_outside_the_store() {
    // Without --delete, so that even a broken build could not harm /etc.
    let mut hs = Homeserver::sqlite();
    let good = hs.add(Media::local(&hs.new_id()));
    cache_insert(
        &hs.cache_db(),
        &[
            good.cache_row(),
            CacheRow::local("../../etc"),
            CacheRow::remote("../../../../../../etc", "evil", "passwdxx"),
        ],
    );
    let s3 = S3::new();
    let out = hs.upload(&s3, &[]);
    out.no_panic();
    assert_eq!(out.code(), 3, "{}", out.describe());
    out.stderr_line_with("../../etc");
    assert_eq!(s3.keys(), vec![good.original_rel()], "nothing from outside the store may be uploaded");
    let out = hs.mo(&["check-deleted", &hs.media_arg()]);
    out.no_panic();
    assert_eq!(out.code(), 3, "{}", out.describe());
}

#[test]
fn escaping_rows_in_the_homeserver_database_never_lead_to_files_outside_the_store() {
    let mut hs = Homeserver::sqlite_with_media_at("d1/d2/d3/media");
    let good = hs.add(Media::local(&hs.new_id()).with_thumbs());
    hs.sql(
        "INSERT INTO local_media_repository (media_id, created_ts) VALUES ('....x', 1000), ('a/b', 1000);\n\
         INSERT INTO remote_media_cache (media_origin, media_id, filesystem_id, created_ts) VALUES ('../..', 'evilOrigin', 'abcdefgh', 1000);",
    );
    let d3 = hs.media.parent().unwrap().to_path_buf();
    let victims = [d3.join("x"), d3.join("ab/cd/efgh"), hs.media.join("local_thumbnails/a/b/victim.png")];
    for v in &victims {
        std::fs::create_dir_all(v.parent().unwrap()).unwrap();
        std::fs::write(v, b"victim").unwrap();
    }
    let update = hs.mo(&["update-db", "30d"]);
    update.no_panic();
    assert!(matches!(update.code(), 0 | 3), "{}", update.describe());
    let s3 = S3::new();
    let upload = hs.upload(&s3, &["--delete"]);
    upload.no_panic();
    assert!(matches!(upload.code(), 0 | 3), "{}", upload.describe());
    assert!(
        update.code() == 3 || upload.code() == 3,
        "the escaping rows must be refused somewhere:\n{}\n{}",
        update.describe(),
        upload.describe()
    );
    for v in &victims {
        assert_eq!(std::fs::read(v).unwrap(), b"victim", "{} was touched", v.display());
    }
    hs.assert_offloaded(&good, &Dest::S3(&s3), "");
    assert_eq!(s3.keys(), keys_of(&[&good], ""));
}
