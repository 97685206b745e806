//! Reading Synapse's PostgreSQL database: unix socket, TCP with passwords
//! that need escaping, TLS (require, verify-full), database.yaml forms.

use crate::common::*;

fn pg_scene() -> (Homeserver, Vec<Media>) {
    let mut hs = Homeserver::postgres();
    let selected = hs.add_all(vec![
        Media::local(&hs.new_id()).with_thumbs(),
        Media::local(&hs.new_id()).created_days_ago(1).accessed_days_ago(40),
        Media::remote("remote.example", "rid1", "fsidPGREMOTEabcdefgh").with_thumbs(),
    ]);
    hs.add_all(vec![
        Media::local(&hs.new_id()).created_days_ago(1),
        Media::local(&hs.new_id()).created_days_ago(90).accessed_days_ago(3),
        Media::local(&hs.new_id()).url_cache("https://example.org/x"),
        Media::remote("remote.example", "rid2", "fsidPGYOUNGabcdefghi").created_days_ago(2),
    ]);
    (hs, selected)
}

fn want_rows(ms: &[Media]) -> Vec<CacheRow> {
    let mut v: Vec<CacheRow> = ms.iter().map(|m| m.cache_row()).collect();
    v.sort();
    v
}

fn use_homeserver_params(hs: &Homeserver, params: &Params) {
    hs.write_file("homeserver.yaml", &homeserver_yaml_psycopg2(params, &hs.media));
}

#[test]
fn update_db_over_the_unix_socket_applies_the_selection_rules() {
    let (hs, selected) = pg_scene();
    let out = hs.update_db("30d");
    assert_eq!(out.j("new_rows"), 3);
    assert_eq!(cache_rows(&hs.cache_db()), want_rows(&selected));
}

#[test]
fn postgres_homeserver_end_to_end_update_then_upload_delete() {
    let (hs, selected) = pg_scene();
    hs.mo(&["update", &hs.media_arg(), "30d"]).ok();
    let s3 = S3::new();
    hs.upload(&s3, &["--delete"]).ok();
    for m in &selected {
        hs.assert_offloaded(m, &Dest::S3(&s3), "");
    }
    assert_eq!(s3.keys().len(), selected.iter().map(|m| m.rel_paths().len()).sum::<usize>());
}

#[test]
fn tcp_login_with_a_password_containing_slash_at_colon_percent() {
    let (hs, selected) = pg_scene();
    let password = "pa/ss@wo:rd%40%zz";
    let role = hs.pg().create_reader_role(password);
    use_homeserver_params(&hs, &hs.pg().tcp_params("127.0.0.1", &role, password));
    hs.update_db("30d");
    assert_eq!(cache_rows(&hs.cache_db()), want_rows(&selected));
}

#[test]
fn tcp_login_with_a_password_containing_quotes_spaces_and_backslashes() {
    let (hs, selected) = pg_scene();
    let password = r#"it's a "pass" \word= x"#;
    let role = hs.pg().create_reader_role(password);
    use_homeserver_params(&hs, &hs.pg().tcp_params("127.0.0.1", &role, password));
    hs.update_db("30d");
    assert_eq!(cache_rows(&hs.cache_db()), want_rows(&selected));
}

#[test]
fn sslmode_require_connects_over_tls() {
    let (hs, selected) = pg_scene();
    let password = "tls/only@:%";
    let role = hs.pg().create_tls_only_reader_role(password);
    let mut params = hs.pg().tcp_params("127.0.0.1", &role, password);

    // control: this role is refused without TLS, so success below proves TLS
    set_param(&mut params, "sslmode", YVal::Str("disable".into()));
    use_homeserver_params(&hs, &params);
    let out = hs.mo(&["update-db", "30d"]);
    out.clean_error(1, &[]);

    set_param(&mut params, "sslmode", YVal::Str("require".into()));
    use_homeserver_params(&hs, &params);
    hs.update_db("30d");
    assert_eq!(cache_rows(&hs.cache_db()), want_rows(&selected));
}

#[test]
fn sslmode_verify_full_checks_the_server_certificate_against_sslrootcert() {
    let (hs, selected) = pg_scene();
    let password = "verify-full-pw";
    let role = hs.pg().create_tls_only_reader_role(password);
    let mut params = hs.pg().tcp_params("localhost", &role, password);
    set_param(&mut params, "sslmode", YVal::Str("verify-full".into()));
    set_param(&mut params, "sslrootcert", YVal::Str(test_env().pg_ca.to_string_lossy().into_owned()));
    use_homeserver_params(&hs, &params);
    hs.update_db("30d");
    assert_eq!(cache_rows(&hs.cache_db()), want_rows(&selected));
}

#[test]
fn sslmode_verify_full_with_a_different_ca_is_refused() {
    let (hs, _) = pg_scene();
    let other_ca = hs.cwd().join("other-ca.crt");
    let key = hs.cwd().join("other-ca.key");
    let st = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&other_ca)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl (installed by scripts/test-services.sh)");
    assert!(st.success());
    let mut params = hs.pg().superuser_tcp_params("localhost");
    set_param(&mut params, "sslmode", YVal::Str("verify-full".into()));
    set_param(&mut params, "sslrootcert", YVal::Str(other_ca.to_string_lossy().into_owned()));
    use_homeserver_params(&hs, &params);
    let out = hs.mo(&["update-db", "30d"]);
    out.clean_error(1, &[]);
    assert!(cache_rows_or_empty(&hs).is_empty());
}

fn cache_rows_or_empty(hs: &Homeserver) -> Vec<CacheRow> {
    if hs.cache_db().exists() {
        let c = rusqlite::Connection::open(hs.cache_db()).unwrap();
        let has_table: i64 =
            c.query_row("SELECT count(*) FROM sqlite_master WHERE name = 'media'", [], |r| r.get(0)).unwrap();
        if has_table == 1 {
            return cache_rows(&hs.cache_db());
        }
    }
    vec![]
}

#[test]
fn wrong_password_is_a_one_line_error_that_does_not_print_the_password() {
    let (hs, _) = pg_scene();
    let role = hs.pg().create_reader_role("the-right-one");
    use_homeserver_params(&hs, &hs.pg().tcp_params("127.0.0.1", &role, "Wr0ng-Secret-Value"));
    let out = hs.mo(&["update-db", "30d"]);
    out.clean_error(1, &[]);
    assert!(!out.stderr.contains("Wr0ng-Secret-Value"), "the password leaked: {}", out.describe());
}

#[test]
fn unreachable_postgres_is_a_one_line_error() {
    let (hs, _) = pg_scene();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut params = hs.pg().superuser_tcp_params("127.0.0.1");
    set_param(&mut params, "port", YVal::Int(port as i64));
    use_homeserver_params(&hs, &params);
    hs.mo(&["update-db", "30d"]).clean_error(1, &[]);
}

#[test]
fn database_yaml_with_plain_arguments_or_a_postgres_section_is_used() {
    for form in ["plain", "postgres-section", "dbname-keyword"] {
        let (hs, selected) = pg_scene();
        // homeserver.yaml points to a database that does not exist
        let mut bogus = hs.pg().socket_params();
        set_param(&mut bogus, "database", YVal::Str("no_such_database".into()));
        use_homeserver_params(&hs, &bogus);
        let text = match form {
            "plain" => database_yaml_plain(&hs.pg().superuser_tcp_params("127.0.0.1")),
            "postgres-section" => database_yaml_postgres(&hs.pg().socket_params()),
            _ => {
                let p: Params = hs
                    .pg()
                    .socket_params()
                    .into_iter()
                    .map(|(k, v)| if k == "database" { ("dbname".to_string(), v) } else { (k, v) })
                    .collect();
                database_yaml_plain(&p)
            }
        };
        hs.write_file("database.yaml", &text);
        hs.update_db("30d");
        assert_eq!(cache_rows(&hs.cache_db()), want_rows(&selected), "form {form}");
    }
}

#[test]
fn thousands_of_rows_are_synced_from_postgres() {
    let hs = Homeserver::postgres();
    let old = now_ms() - 100 * DAY_MS;
    hs.sql(&format!(
        "INSERT INTO local_media_repository (media_id, media_type, media_length, created_ts, upload_name, user_id) \
         SELECT 'local' || lpad(i::text, 19, '0'), 'image/png', 10, {old}, 'x.png', '@u:test.example' \
         FROM generate_series(1, 6000) AS i;\n\
         INSERT INTO remote_media_cache (media_origin, media_id, media_type, created_ts, upload_name, media_length, filesystem_id) \
         SELECT 'origin' || (i % 7) || '.example', 'r' || i, 'image/png', {old}, 'y.png', 10, 'fsid' || lpad(i::text, 20, '0') \
         FROM generate_series(1, 3000) AS i;"
    ));
    let out = hs.update_db("30d");
    assert_eq!(out.j("new_rows"), 9000);
    let rows = cache_rows(&hs.cache_db());
    assert_eq!(rows.len(), 9000);
    assert_eq!(rows.iter().filter(|r| r.kind == "remote").count(), 3000);
    assert_eq!(hs.update_db("30d").j("new_rows"), 0);
}
