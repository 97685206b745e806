//! Checks of the test harness itself (services, fixtures, the SSE-C proxy),
//! so that a failure elsewhere points at the binary, not at the harness.

use crate::common::*;

#[test]
fn test_services_are_configured_and_reachable() {
    let env = test_env();
    assert!(env.pg_socket.is_dir());
    let db = PgDb::create();
    let n: i64 = db.client().query_one("SELECT count(*) FROM local_media_repository", &[]).unwrap().get(0);
    assert_eq!(n, 0);
    let s3 = S3::new();
    assert!(s3.keys().is_empty());
}

#[test]
fn synapse_schema_has_the_columns_synapse_defines() {
    let db = PgDb::create();
    let cols = |t: &str| -> Vec<String> {
        db.client()
            .query(
                "SELECT column_name::text FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position",
                &[&t],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    assert_eq!(
        cols("local_media_repository"),
        [
            "media_id",
            "media_type",
            "media_length",
            "created_ts",
            "upload_name",
            "user_id",
            "quarantined_by",
            "url_cache",
            "last_access_ts",
            "safe_from_quarantine",
            "authenticated",
            "sha256"
        ]
    );
    assert_eq!(
        cols("remote_media_cache"),
        [
            "media_origin",
            "media_id",
            "media_type",
            "created_ts",
            "upload_name",
            "media_length",
            "filesystem_id",
            "last_access_ts",
            "quarantined_by",
            "authenticated",
            "sha256"
        ]
    );
    assert!(cols("local_media_repository_thumbnails").contains(&"thumbnail_method".to_string()));
    assert!(cols("remote_media_cache_thumbnails").contains(&"filesystem_id".to_string()));
}

#[test]
fn both_schema_flavours_have_the_avatar_tables_with_the_same_columns() {
    let pg = PgDb::create();
    let sqlite = Homeserver::sqlite();
    let conn = rusqlite::Connection::open(sqlite.sqlite_path()).unwrap();
    for table in ["profiles", "room_memberships", "user_directory", "room_stats_state"] {
        let mut in_pg: Vec<String> = pg
            .client()
            .query("SELECT column_name::text FROM information_schema.columns WHERE table_name = $1", &[&table])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut in_sqlite: Vec<String> = conn
            .prepare(&format!("PRAGMA table_info({table})"))
            .unwrap()
            .query_map([], |r| r.get(1))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        in_pg.sort();
        in_sqlite.sort();
        assert!(
            in_pg.contains(&"avatar_url".to_string()) || in_pg.contains(&"avatar".to_string()),
            "{table}: {in_pg:?}"
        );
        assert_eq!(in_pg, in_sqlite, "{table}");
    }
}

#[test]
fn fixture_writes_rows_and_files_at_synapse_paths() {
    for mut hs in [Homeserver::sqlite(), Homeserver::postgres()] {
        let l = hs.add(Media::local("abcdefghijkl").with_thumbs());
        let r = hs.add(Media::remote("remote.example", "mediaid", "fsidABCDEFGH").size(7));
        assert_eq!(l.original_rel(), "local_content/ab/cd/efghijkl");
        assert_eq!(r.original_rel(), "remote_content/remote.example/fs/id/ABCDEFGH");
        assert_eq!(
            l.rel_paths(),
            [
                "local_content/ab/cd/efghijkl",
                "local_thumbnails/ab/cd/efghijkl/32-32-image-png-crop",
                "local_thumbnails/ab/cd/efghijkl/640-480-image-jpeg-scale"
            ]
        );
        let files = hs.local_files();
        assert_eq!(files.len(), 4);
        assert_eq!(files["remote_content/remote.example/fs/id/ABCDEFGH"].len(), 7);
        hs.sql("SELECT 1;");
    }
}

#[test]
fn ssec_proxy_enforces_the_key_like_s3() {
    let s3 = S3::new();
    let proxy = SsecProxy::start(&test_env().s3_endpoint);
    let via = S3::existing(&proxy.endpoint, &s3.bucket);
    let key = "0123456789abcdef0123456789abcdef";
    // a plain object passes through
    via.put("plain", b"hello", &[("md5", &md5_hex(b"hello"))]);
    assert_eq!(via.get("plain").unwrap(), b"hello");
    // an SSE-C object needs its key
    via.put_ssec("secret", b"classified", key);
    assert!(via.try_get("secret", None).is_err(), "{:#?}", proxy.requests());
    assert!(via.try_head("secret", None).is_err());
    assert!(via.try_get("secret", Some("ffffffffffffffffffffffffffffffff")).is_err());
    assert_eq!(via.try_get("secret", Some(key)).unwrap(), b"classified");
    let h = via.try_head("secret", Some(key)).unwrap();
    assert_eq!(h.size, 10);
    assert_ne!(h.etag, md5_hex(b"classified"), "SSE-C ETag must not be the content MD5");
    assert!(proxy.object_writes().len() >= 2);
}
