//! Where the homeserver database is, read the way `s3_media_upload` reads it:
//! `./database.yaml` if present, else the `database` section of the
//! homeserver config.
//!
//! PostgreSQL settings are libpq keywords (what psycopg2 passes through).
//! They are turned into a typed [`PgSettings`]; nothing is ever pasted into
//! a connection URL, so passwords may hold any character.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use serde_yaml_ng::Value;

use super::homeserver::HomeserverConfig;
use super::{as_mapping, read_yaml, scalar};

/// The homeserver database to read media rows from (one per run: its size
/// does not matter).
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum DbConfig {
    Sqlite { path: PathBuf },
    Postgres(PgSettings),
}

/// libpq `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    Disable,
    Allow,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "disable" => Self::Disable,
            "allow" => Self::Allow,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }
}

/// A password, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// PostgreSQL connection settings, by libpq keyword.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PgSettings {
    pub hosts: Vec<String>,
    pub hostaddr: Option<std::net::IpAddr>,
    pub ports: Vec<u16>,
    pub dbname: Option<String>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub passfile: Option<PathBuf>,
    pub sslmode: SslMode,
    pub sslrootcert: Option<PathBuf>,
    pub sslcert: Option<PathBuf>,
    pub sslkey: Option<PathBuf>,
    pub connect_timeout: Option<Duration>,
    pub application_name: Option<String>,
    pub options: Option<String>,
    pub keepalives: Option<bool>,
    pub keepalives_idle: Option<Duration>,
    pub keepalives_interval: Option<Duration>,
    pub keepalives_count: Option<u32>,
    pub target_session_attrs: Option<String>,
    pub channel_binding: Option<String>,
    pub tcp_user_timeout: Option<Duration>,
}

/// libpq keywords that have no effect here but are valid in a Synapse config.
const IGNORED_KEYWORDS: &[&str] = &[
    "sslcompression",
    "sslsni",
    "sslcrl",
    "sslcrldir",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "gssencmode",
    "gsslib",
    "gssdelegation",
    "krbsrvname",
    "requirepeer",
    "require_auth",
    "fallback_application_name",
    "client_encoding",
    "replication",
    "load_balance_hosts",
    "sslnegotiation",
];

/// Find the homeserver database the way `s3_media_upload` does:
/// `./database.yaml` if it exists, else the `database` section of the
/// homeserver config. Returns the settings and where they came from.
pub fn locate_database(config: &HomeserverConfig) -> Result<(DbConfig, String)> {
    if super::dendrite::looks_like_dendrite(config) {
        bail!(
            "{} is a Dendrite config (it has global and media_api sections): Dendrite cannot read media from an \
             object store, so the offload commands refuse it; purge and check take it as --dendrite-config",
            config.description
        );
    }
    let database_yaml = Path::new("database.yaml");
    if database_yaml.is_file() {
        let doc = read_yaml(database_yaml)?;
        let source = if config.get("database").is_some() {
            format!("./database.yaml, which overrides the database section of {}", config.source("database"))
        } else {
            "./database.yaml".to_owned()
        };
        return Ok((from_database_yaml(&doc, "database.yaml")?, source));
    }
    if config.files.is_empty() {
        bail!("could not find {} (and no ./database.yaml): pass --homeserver-config-path", config.description);
    }
    let origin = config.source("database");
    Ok((from_homeserver_yaml(&config.merged(), &origin)?, origin))
}

impl DbConfig {
    /// Which database, for messages (never the password).
    pub fn describe(&self) -> String {
        match self {
            DbConfig::Sqlite { path } => format!("SQLite {}", path.display()),
            DbConfig::Postgres(s) => {
                let hosts = if s.hosts.is_empty() { "the default host".to_owned() } else { s.hosts.join(",") };
                let port = s.ports.first().map_or_else(String::new, |p| format!(":{p}"));
                format!(
                    "PostgreSQL database {} as {} on {hosts}{port}",
                    s.dbname.as_deref().unwrap_or("(the user's)"),
                    s.user.as_deref().unwrap_or("(the login user)")
                )
            }
        }
    }
}

/// `database.yaml`: a `sqlite:` section (sqlite3.connect arguments), a
/// `postgres:` section, or plain psycopg2 keyword arguments.
pub fn from_database_yaml(doc: &Value, origin: &str) -> Result<DbConfig> {
    let map = as_mapping(doc, origin)?;
    if let Some(sqlite) = map.get("sqlite") {
        return sqlite_from_args(sqlite, &format!("{origin}: sqlite"));
    }
    if let Some(pg) = map.get("postgres") {
        return Ok(DbConfig::Postgres(pg_from_args(pg, &format!("{origin}: postgres"))?));
    }
    Ok(DbConfig::Postgres(pg_from_args(doc, origin)?))
}

/// The `database` section of homeserver.yaml (`name: sqlite3` or `psycopg2`).
pub fn from_homeserver_yaml(doc: &Value, origin: &str) -> Result<DbConfig> {
    let map = as_mapping(doc, origin)?;
    let db = map
        .get("database")
        .ok_or_else(|| anyhow!("{origin}: no `database` section (expected database.name and database.args)"))?;
    let db = as_mapping(db, &format!("{origin}: database"))?;
    let name = db
        .get("name")
        .and_then(|v| v.as_str())
        .ok_or_else(|| anyhow!("{origin}: database.name is missing (expected sqlite3 or psycopg2)"))?;
    let empty = Value::Mapping(Default::default());
    let args = db.get("args").copied().unwrap_or(&empty);
    let field = format!("{origin}: database.args");
    match name {
        "sqlite3" => sqlite_from_args(args, &field),
        "psycopg2" | "psycopg" => Ok(DbConfig::Postgres(pg_from_args(args, &field)?)),
        other => bail!("{origin}: database.name is {other:?}, expected sqlite3 or psycopg2"),
    }
}

fn sqlite_from_args(args: &Value, field: &str) -> Result<DbConfig> {
    let map = as_mapping(args, field)?;
    let path = map
        .get("database")
        .map(|v| scalar(v, &format!("{field}.database")))
        .transpose()?
        .ok_or_else(|| anyhow!("{field}.database is missing (expected the path of the SQLite file)"))?;
    Ok(DbConfig::Sqlite { path: PathBuf::from(path) })
}

fn pg_from_args(args: &Value, field: &str) -> Result<PgSettings> {
    let map = as_mapping(args, field)?;
    let mut s = PgSettings::default();
    // A libpq connection string first, so explicit keywords override it.
    if let Some(dsn) = map.get("dsn") {
        apply_dsn(&mut s, &scalar(dsn, &format!("{field}.dsn"))?, field)?;
    }
    for (key, value) in map {
        if key == "dsn" || key.starts_with("cp_") {
            continue;
        }
        let name = format!("{field}.{key}");
        set_keyword(&mut s, &key, &scalar(value, &name)?, &name)?;
    }
    Ok(s)
}

/// Parse `key=value key='quoted value'` (libpq's conninfo format).
pub(crate) fn apply_dsn(s: &mut PgSettings, dsn: &str, field: &str) -> Result<()> {
    if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
        bail!("{field}.dsn: connection URLs are not supported; use key=value pairs or separate keys");
    }
    let mut chars = dsn.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(());
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let key = key.trim().to_owned();
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => bail!("{field}.dsn: unterminated quoted value for {key}"),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        if key.is_empty() {
            bail!("{field}.dsn: expected key=value pairs");
        }
        set_keyword(s, &key, &value, &format!("{field}.dsn {key}"))?;
    }
}

pub(crate) fn set_keyword(s: &mut PgSettings, key: &str, value: &str, name: &str) -> Result<()> {
    let secs = |v: &str| -> Result<Duration> {
        v.trim()
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| anyhow!("{name}: expected a whole number of seconds, found {v:?}"))
    };
    match key {
        "host" => s.hosts = value.split(',').map(str::trim).filter(|h| !h.is_empty()).map(str::to_owned).collect(),
        "hostaddr" => {
            s.hostaddr =
                Some(value.trim().parse().map_err(|_| anyhow!("{name}: expected an IP address, found {value:?}"))?)
        }
        "port" => {
            s.ports = value
                .split(',')
                .map(|p| {
                    p.trim().parse::<u16>().map_err(|_| anyhow!("{name}: expected a port number, found {value:?}"))
                })
                .collect::<Result<_>>()?
        }
        "dbname" | "database" => s.dbname = Some(value.to_owned()),
        "user" | "username" => s.user = Some(value.to_owned()),
        "password" => s.password = Some(Secret(value.to_owned())),
        "passfile" => s.passfile = Some(PathBuf::from(value)),
        "sslmode" => {
            s.sslmode = SslMode::parse(value).ok_or_else(|| {
                anyhow!("{name}: expected disable, allow, prefer, require, verify-ca or verify-full, found {value:?}")
            })?
        }
        "sslrootcert" => s.sslrootcert = Some(PathBuf::from(value)),
        "sslcert" => s.sslcert = Some(PathBuf::from(value)),
        "sslkey" => s.sslkey = Some(PathBuf::from(value)),
        "connect_timeout" => s.connect_timeout = Some(secs(value)?).filter(|d| !d.is_zero()),
        "application_name" => s.application_name = Some(value.to_owned()),
        "options" => s.options = Some(value.to_owned()),
        "keepalives" => s.keepalives = Some(value.trim() != "0"),
        "keepalives_idle" => s.keepalives_idle = Some(secs(value)?),
        "keepalives_interval" => s.keepalives_interval = Some(secs(value)?),
        "keepalives_count" => {
            s.keepalives_count =
                Some(value.trim().parse().map_err(|_| anyhow!("{name}: expected a whole number, found {value:?}"))?)
        }
        "tcp_user_timeout" => {
            let ms: u64 =
                value.trim().parse().map_err(|_| anyhow!("{name}: expected milliseconds, found {value:?}"))?;
            s.tcp_user_timeout = Some(Duration::from_millis(ms));
        }
        "target_session_attrs" => match value {
            "any" | "read-write" => s.target_session_attrs = Some(value.to_owned()),
            _ => bail!("{name}: only `any` and `read-write` are supported, found {value:?}"),
        },
        "channel_binding" => match value {
            "disable" | "prefer" | "require" => s.channel_binding = Some(value.to_owned()),
            _ => bail!("{name}: expected disable, prefer or require, found {value:?}"),
        },
        "service" => bail!("{name}: pg_service.conf services are not supported; give host, port, dbname and user"),
        "sslpassword" => {
            bail!("{name}: encrypted client keys are not supported; use an unencrypted sslkey file (mode 0600)")
        }
        k if IGNORED_KEYWORDS.contains(&k) => log::debug!("{name}: ignored (no effect on this tool)"),
        _ => bail!(
            "{name}: unknown connection setting (expected a libpq keyword such as host, port, dbname, user, password, sslmode)"
        ),
    }
    Ok(())
}

/// Look a password up in a pgpass file (`host:port:db:user:password`,
/// `*` wildcards, `\` escapes), as libpq does when none is configured.
pub fn pgpass_lookup(text: &str, host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    let port = port.to_string();
    text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).find_map(|line| {
        let mut fields = Vec::with_capacity(5);
        let mut cur = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => cur.extend(chars.next()),
                ':' if fields.len() < 4 => fields.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        fields.push(cur);
        if fields.len() != 5 {
            return None;
        }
        let matches = |pattern: &str, value: &str| pattern == "*" || pattern == value;
        let host_ok = matches(&fields[0], host) || (fields[0] == "localhost" && host.starts_with('/'));
        (host_ok && matches(&fields[1], &port) && matches(&fields[2], db) && matches(&fields[3], user))
            .then(|| fields[4].clone())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        serde_yaml_ng::from_str(text).unwrap()
    }

    #[test]
    fn homeserver_psycopg2_drops_cp_keys_and_takes_int_or_string_ports() {
        let doc = yaml(
            "database:\n  name: psycopg2\n  args:\n    user: synapse\n    password: 'p/@:%w'\n    database: synapse\n    host: /var/run/postgresql\n    port: '5433'\n    cp_min: 5\n    cp_max: 10\n    sslmode: verify-full\n",
        );
        let DbConfig::Postgres(s) = from_homeserver_yaml(&doc, "hs.yaml").unwrap() else { panic!() };
        assert_eq!(s.hosts, vec!["/var/run/postgresql"]);
        assert_eq!(s.ports, vec![5433]);
        assert_eq!(s.dbname.as_deref(), Some("synapse"));
        assert_eq!(s.password, Some(Secret("p/@:%w".into())));
        assert_eq!(s.sslmode, SslMode::VerifyFull);
        assert!(!format!("{s:?}").contains("p/@:%w"), "Debug must not show the password");
    }

    #[test]
    fn homeserver_sqlite() {
        let doc = yaml("database:\n  name: sqlite3\n  args:\n    database: /data/homeserver.db\n");
        assert_eq!(
            from_homeserver_yaml(&doc, "hs.yaml").unwrap(),
            DbConfig::Sqlite { path: "/data/homeserver.db".into() }
        );
    }

    #[test]
    fn database_yaml_forms() {
        let plain = yaml("user: u\npassword: p\ndatabase: d\nhost: db.example\nport: 5432\n");
        assert!(matches!(from_database_yaml(&plain, "database.yaml").unwrap(), DbConfig::Postgres(_)));
        let sqlite = yaml("sqlite:\n  database: hs.db\n");
        assert_eq!(from_database_yaml(&sqlite, "d").unwrap(), DbConfig::Sqlite { path: "hs.db".into() });
        let pg = yaml("postgres:\n  dbname: d\n  port: 1\n");
        let DbConfig::Postgres(s) = from_database_yaml(&pg, "d").unwrap() else { panic!() };
        assert_eq!((s.dbname.as_deref(), s.ports.as_slice()), (Some("d"), &[1][..]));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("database:\n  name: mysql\n", "database.name is \"mysql\""),
            ("server_name: x\n", "no `database` section"),
            ("database:\n  name: psycopg2\n  args:\n    port: abc\n", "database.args.port"),
            ("database:\n  name: psycopg2\n  args:\n    bogus: 1\n", "database.args.bogus: unknown"),
            ("database:\n  name: sqlite3\n  args: {}\n", "database.args.database is missing"),
            ("database:\n  name: psycopg2\n  args:\n    sslmode: maybe\n", "database.args.sslmode"),
            ("- a\n- b\n", "expected a mapping"),
        ];
        for (text, want) in cases {
            let err = from_homeserver_yaml(&yaml(text), "hs.yaml").unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn dsn_is_parsed_and_overridden_by_keys() {
        let doc = yaml("dsn: \"host=h port=6 dbname='my db' password='a\\\\'b'\"\ndbname: other\n");
        let DbConfig::Postgres(s) = from_database_yaml(&doc, "d").unwrap() else { panic!() };
        assert_eq!(s.hosts, vec!["h"]);
        assert_eq!(s.ports, vec![6]);
        assert_eq!(s.dbname.as_deref(), Some("other"));
        assert_eq!(s.password, Some(Secret("a'b".into())));
    }

    #[test]
    fn pgpass_matching() {
        let text = "# comment\nother:5432:*:*:nope\n*:5432:syn\\:apse:u:pa\\:ss\n";
        assert_eq!(pgpass_lookup(text, "h", 5432, "syn:apse", "u").as_deref(), Some("pa:ss"));
        assert_eq!(pgpass_lookup(text, "h", 5433, "syn:apse", "u"), None);
    }
}
