//! Connecting to a homeserver's PostgreSQL the way libpq would (hosts,
//! ports, passwords from pgpass, sslmode up to verify-full), from typed
//! settings, never a pasted URL.

use std::path::Path;

use anyhow::{Context, Result, anyhow};

use crate::config::{PgSettings, SslMode, pgpass_lookup};

pub(crate) fn connect_postgres(s: &PgSettings) -> Result<postgres::Client> {
    use postgres::config::{ChannelBinding, SslMode as PgSsl, TargetSessionAttrs};

    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let mut config = postgres::Config::new();

    let hosts: Vec<String> = if !s.hosts.is_empty() {
        s.hosts.clone()
    } else if let Some(h) = env("PGHOST") {
        h.split(',').map(str::to_owned).collect()
    } else if s.hostaddr.is_some() {
        Vec::new()
    } else if Path::new("/var/run/postgresql").is_dir() {
        vec!["/var/run/postgresql".to_owned()]
    } else {
        vec!["/tmp".to_owned()]
    };
    for host in &hosts {
        config.host(host);
    }
    if let Some(addr) = s.hostaddr {
        config.hostaddr(addr);
    }
    let ports = if !s.ports.is_empty() {
        s.ports.clone()
    } else if let Some(p) = env("PGPORT") {
        vec![p.parse().map_err(|_| anyhow!("PGPORT: expected a port number, found {p:?}"))?]
    } else {
        vec![5432]
    };
    for port in &ports {
        config.port(*port);
    }
    let user = s
        .user
        .clone()
        .or_else(|| env("PGUSER"))
        .or_else(|| env("USER"))
        .or_else(|| env("LOGNAME"))
        .unwrap_or_else(|| "postgres".to_owned());
    let dbname = s.dbname.clone().or_else(|| env("PGDATABASE")).unwrap_or_else(|| user.clone());
    config.user(&user).dbname(&dbname);

    let password = match &s.password {
        Some(p) => Some(p.0.clone()),
        None => env("PGPASSWORD").or_else(|| {
            let file = s
                .passfile
                .clone()
                .or_else(|| env("PGPASSFILE").map(Into::into))
                .or_else(|| env("HOME").map(|h| Path::new(&h).join(".pgpass")))?;
            let text = std::fs::read_to_string(file).ok()?;
            pgpass_lookup(&text, hosts.first().map_or("localhost", String::as_str), ports[0], &dbname, &user)
        }),
    };
    if let Some(p) = password {
        config.password(p);
    }
    config.application_name(s.application_name.as_deref().unwrap_or("media-offload"));
    if let Some(t) = s.connect_timeout {
        config.connect_timeout(t);
    }
    if let Some(o) = &s.options {
        config.options(o);
    }
    if let Some(k) = s.keepalives {
        config.keepalives(k);
    }
    if let Some(t) = s.keepalives_idle {
        config.keepalives_idle(t);
    }
    if let Some(t) = s.keepalives_interval {
        config.keepalives_interval(t);
    }
    if let Some(n) = s.keepalives_count {
        config.keepalives_retries(n);
    }
    if let Some(t) = s.tcp_user_timeout {
        config.tcp_user_timeout(t);
    }
    if s.target_session_attrs.as_deref() == Some("read-write") {
        config.target_session_attrs(TargetSessionAttrs::ReadWrite);
    }
    match s.channel_binding.as_deref() {
        Some("disable") => {
            config.channel_binding(ChannelBinding::Disable);
        }
        Some("require") => {
            config.channel_binding(ChannelBinding::Require);
        }
        _ => {}
    }

    let sslmode = match env("PGSSLMODE") {
        Some(m) if s.sslmode == SslMode::default() => match m.as_str() {
            "disable" => SslMode::Disable,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => SslMode::Prefer,
        },
        _ => s.sslmode,
    };
    let sslrootcert = s.sslrootcert.clone().or_else(|| env("PGSSLROOTCERT").map(Into::into));
    // libpq never uses TLS on a unix socket.
    let unix_only = hosts.iter().all(|h| h.starts_with('/')) && s.hostaddr.is_none();
    let where_ = format!(
        "database {dbname:?} as user {user:?} on {}:{}",
        hosts.join(","),
        ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
    );
    let connect_err = |e: postgres::Error| anyhow!("could not connect to PostgreSQL {where_}: {}", pg_error_text(&e));

    if sslmode == SslMode::Disable || unix_only {
        config.ssl_mode(PgSsl::Disable);
        return config.connect(postgres::NoTls).map_err(connect_err);
    }
    config.ssl_mode(match sslmode {
        SslMode::Allow | SslMode::Prefer => PgSsl::Prefer,
        _ => PgSsl::Require,
    });
    // require with a root certificate behaves like verify-ca, as in libpq.
    let verify_chain = matches!(sslmode, SslMode::VerifyCa | SslMode::VerifyFull)
        || (sslmode == SslMode::Require && sslrootcert.is_some());
    let verify_host = sslmode == SslMode::VerifyFull;
    let mut tls = native_tls::TlsConnector::builder();
    tls.danger_accept_invalid_certs(!verify_chain).danger_accept_invalid_hostnames(!verify_host);
    if let Some(path) = sslrootcert.as_ref().filter(|p| p.as_os_str() != "system") {
        let pem = std::fs::read(path).with_context(|| format!("could not read sslrootcert {}", path.display()))?;
        for cert in split_pem(&pem) {
            tls.add_root_certificate(
                native_tls::Certificate::from_pem(&cert)
                    .with_context(|| format!("sslrootcert {}: not a PEM certificate", path.display()))?,
            );
        }
    }
    if let (Some(cert), Some(key)) = (&s.sslcert, &s.sslkey) {
        let cert_pem = std::fs::read(cert).with_context(|| format!("could not read sslcert {}", cert.display()))?;
        let key_pem = std::fs::read(key).with_context(|| format!("could not read sslkey {}", key.display()))?;
        tls.identity(
            native_tls::Identity::from_pkcs8(&cert_pem, &key_pem).with_context(|| {
                format!("sslcert/sslkey {}: expected PEM certificate and PKCS#8 key", cert.display())
            })?,
        );
    }
    let connector = tls.build().context("could not set up TLS for PostgreSQL")?;
    config.connect(postgres_native_tls::MakeTlsConnector::new(connector)).map_err(connect_err)
}

/// The most useful text of a PostgreSQL error: the server's message, or
/// the I/O cause (`postgres::Error`'s Display alone is often just "error
/// connecting to server").
pub(crate) fn pg_error_text(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Split a PEM bundle into single certificates.
fn split_pem(pem: &[u8]) -> Vec<Vec<u8>> {
    let text = String::from_utf8_lossy(pem);
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        cur.push_str(line);
        cur.push('\n');
        if line.starts_with("-----END ") {
            out.push(std::mem::take(&mut cur).into_bytes());
        }
    }
    out
}
