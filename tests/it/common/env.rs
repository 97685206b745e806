//! The services the tests need, as described by `scripts/test-services.sh`.

use std::path::PathBuf;
use std::sync::OnceLock;

#[derive(Debug, Clone)]
pub struct TestEnv {
    /// Directory holding PostgreSQL's unix socket.
    pub pg_socket: PathBuf,
    pub pg_port: u16,
    pub pg_superuser: String,
    pub pg_superpass: String,
    /// The server's self-signed certificate (CN=localhost), for `sslrootcert`.
    pub pg_ca: PathBuf,
    /// `http://127.0.0.1:PORT` of moto_server.
    pub s3_endpoint: String,
    /// The reference tool `s3_media_upload` (synapse-s3-storage-provider 1.7.0).
    pub python_tool: PathBuf,
    /// `http://127.0.0.1:PORT` of s3s-fs, an S3 server that checks Content-MD5.
    pub s3s_endpoint: String,
    /// An unprivileged user for media stores that a run as root must respect.
    pub owner: String,
    /// A single-node Swift's TempAuth URL (`http://127.0.0.1:PORT/auth/v1.0`).
    pub swift_auth: String,
    /// The same Swift through a proxy whose tokens live `swift_short_token_life` seconds.
    pub swift_short_auth: String,
    pub swift_short_token_life: u64,
    /// The user (admin of the same account) whose tokens that proxy issues.
    pub swift_short_user: String,
    pub swift_short_key: String,
    /// TempAuth's admin user of account AUTH_test, and its key.
    pub swift_user: String,
    pub swift_key: String,
    /// Keystone v3 (`http://127.0.0.1:PORT/v3`): user `mo-user`, password
    /// `mo-user-pass`, member of project `media` (domain default), with an
    /// application credential; its catalog's object-store is the same Swift.
    pub keystone_url: String,
    pub keystone_app_id: String,
    pub keystone_app_secret: String,
    /// The project's id: its Swift account is `AUTH_<id>`.
    pub keystone_project_id: String,
}

const HOW_TO_RUN: &str = "these end-to-end tests need PostgreSQL, moto_server, s3s-fs, Swift and the Python \
reference tool started by scripts/test-services.sh: run the whole suite with `scripts/test.sh` \
(or run `scripts/test-services.sh` and `. target/test-services/env` before `cargo test`)";

fn var(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!("environment variable {name} is not set: {HOW_TO_RUN}"),
    }
}

/// The test services; panics (fails the test) with instructions when the
/// environment was not prepared by `scripts/test.sh`.
pub fn test_env() -> &'static TestEnv {
    static ENV: OnceLock<TestEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let env = TestEnv {
            pg_socket: PathBuf::from(var("MO_TEST_PG_SOCKET")),
            pg_port: var("MO_TEST_PG_PORT")
                .parse()
                .unwrap_or_else(|_| panic!("MO_TEST_PG_PORT is not a port number: {HOW_TO_RUN}")),
            pg_superuser: var("MO_TEST_PG_SUPERUSER"),
            pg_superpass: var("MO_TEST_PG_SUPERPASS"),
            pg_ca: PathBuf::from(var("MO_TEST_PG_CA")),
            s3_endpoint: var("MO_TEST_S3_ENDPOINT"),
            python_tool: PathBuf::from(var("MO_TEST_PYTHON_TOOL")),
            s3s_endpoint: var("MO_TEST_S3S_ENDPOINT"),
            owner: var("MO_TEST_OWNER"),
            swift_auth: var("MO_TEST_SWIFT_AUTH"),
            swift_short_auth: var("MO_TEST_SWIFT_SHORT_AUTH"),
            swift_short_token_life: var("MO_TEST_SWIFT_SHORT_TOKEN_LIFE")
                .parse()
                .unwrap_or_else(|_| panic!("MO_TEST_SWIFT_SHORT_TOKEN_LIFE is not a number: {HOW_TO_RUN}")),
            swift_short_user: var("MO_TEST_SWIFT_SHORT_USER"),
            swift_short_key: var("MO_TEST_SWIFT_SHORT_KEY"),
            swift_user: var("MO_TEST_SWIFT_USER"),
            swift_key: var("MO_TEST_SWIFT_KEY"),
            keystone_url: var("MO_TEST_KEYSTONE_URL"),
            keystone_app_id: var("MO_TEST_KEYSTONE_APP_ID"),
            keystone_app_secret: var("MO_TEST_KEYSTONE_APP_SECRET"),
            keystone_project_id: var("MO_TEST_KEYSTONE_PROJECT_ID"),
        };
        assert!(
            env.s3_endpoint.starts_with("http://127.0.0.1:"),
            "MO_TEST_S3_ENDPOINT must be on 127.0.0.1, got {}",
            env.s3_endpoint
        );
        for p in [&env.pg_socket, &env.pg_ca, &env.python_tool] {
            assert!(p.exists(), "{} does not exist: {HOW_TO_RUN}", p.display());
        }
        env
    })
}
