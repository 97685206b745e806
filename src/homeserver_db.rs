//! Read media rows from Synapse's database (PostgreSQL or SQLite).
//!
//! Rows are streamed: a server-side cursor (portal) on PostgreSQL, a
//! stepping statement on SQLite, so memory stays flat at any row count.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};

use crate::config::{DbConfig, PgSettings, SslMode, pgpass_lookup};
use crate::media_store::MediaKind;

/// A media row selected for offloading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// `""` for local media, the remote server name otherwise.
    pub origin: String,
    pub media_id: String,
    /// The file name on disk: the media id for local media.
    pub filesystem_id: String,
    pub kind: MediaKind,
}

/// A connection to the homeserver database.
pub struct HomeserverDb {
    conn: Conn,
    /// Which database this is ([`DbConfig::describe`]).
    identity: String,
    /// Whether the media tables have Synapse's `sha256` column (newer
    /// schemas only), found out on first use.
    has_sha256: Option<bool>,
}

enum Conn {
    Postgres(Box<postgres::Client>),
    Sqlite(rusqlite::Connection),
}

/// What Synapse recorded about a media's files: the length (and, where
/// the column is filled, the SHA-256) a good copy has. This is what
/// decides between a local file and an object that disagree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaRecord {
    pub length: Option<u64>,
    pub sha256: Option<[u8; 32]>,
    /// Thumbnail file name (as Synapse names the file) and its recorded length.
    pub thumbnails: Vec<(String, Option<u64>)>,
}

/// The length and hash a file of a media must have, by its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub length: u64,
    pub sha256: Option<[u8; 32]>,
}

/// Where `upload` looks up a media's record when an object and a local
/// file disagree (rare: one query per conflict, not per media).
pub trait Records: Sync {
    fn record(&self, origin: &str, media_id: &str) -> Result<Option<MediaRecord>>;
}

/// [`Records`] from the homeserver database, connected on first use.
pub struct DbRecords<'a> {
    config: &'a DbConfig,
    db: std::sync::Mutex<Option<HomeserverDb>>,
}

impl<'a> DbRecords<'a> {
    pub fn new(config: &'a DbConfig) -> Self {
        Self { config, db: std::sync::Mutex::new(None) }
    }
}

impl Records for DbRecords<'_> {
    fn record(&self, origin: &str, media_id: &str) -> Result<Option<MediaRecord>> {
        let mut db = self.db.lock().map_err(|_| anyhow!("the homeserver database connection was poisoned"))?;
        if db.is_none() {
            *db = Some(HomeserverDb::connect(self.config)?);
        }
        db.as_mut().expect("connected above").media_record(origin, media_id)
    }
}

impl MediaRecord {
    /// What the record says of the original (`thumbnail` None) or of the
    /// thumbnail file `name`.
    pub fn expected(&self, thumbnail: Option<&str>) -> Option<Expected> {
        match thumbnail {
            None => self.length.map(|length| Expected { length, sha256: self.sha256 }),
            Some(name) => self
                .thumbnails
                .iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, l)| *l)
                .map(|length| Expected { length, sha256: None }),
        }
    }
}

/// update-db's candidates: last used before $1 and not before $2, in
/// cache.db's key order (bytewise, as SQLite compares its TEXT: PostgreSQL
/// is told `COLLATE "C"`, SQLite's default is bytewise), so that the
/// inserts walk cache.db's unique index forward instead of at random.
const LOCAL_SQL: &str = "SELECT '', media_id, media_id FROM local_media_repository \
     WHERE COALESCE(last_access_ts, created_ts) < $1 AND COALESCE(last_access_ts, created_ts) >= $2 \
     AND url_cache IS NULL ORDER BY media_id COLLATE \"C\"";
const REMOTE_SQL: &str = "SELECT media_origin, media_id, filesystem_id FROM remote_media_cache \
     WHERE COALESCE(last_access_ts, created_ts) < $1 AND COALESCE(last_access_ts, created_ts) >= $2 \
     ORDER BY media_origin COLLATE \"C\", media_id COLLATE \"C\"";
/// How many media of each kind update-db's selection holds below $1.
const COUNT_LOCAL_SQL: &str = "SELECT COUNT(*) FROM local_media_repository \
     WHERE COALESCE(last_access_ts, created_ts) < $1 AND url_cache IS NULL";
const COUNT_REMOTE_SQL: &str =
    "SELECT COUNT(*) FROM remote_media_cache WHERE COALESCE(last_access_ts, created_ts) < $1";
/// Rows fetched from the PostgreSQL cursor per round trip.
const FETCH_SIZE: i32 = 5000;

/// A query parameter, for either database.
#[derive(Debug, Clone)]
pub enum Param {
    Int(i64),
    Text(String),
}

impl HomeserverDb {
    /// A connection for reading only (update-db, check).
    pub fn connect(config: &DbConfig) -> Result<Self> {
        Self::open(config, false)
    }

    /// A connection that may delete rows (purge, check --fix).
    pub fn connect_writable(config: &DbConfig) -> Result<Self> {
        Self::open(config, true)
    }

    fn open(config: &DbConfig, writable: bool) -> Result<Self> {
        match config {
            DbConfig::Sqlite { path } => {
                if !path.is_file() {
                    bail!("homeserver SQLite database {} does not exist", path.display());
                }
                let mode = if writable {
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                } else {
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                };
                let conn =
                    rusqlite::Connection::open_with_flags(path, mode | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX)
                        .with_context(|| format!("could not open homeserver SQLite database {}", path.display()))?;
                conn.busy_timeout(std::time::Duration::from_secs(30))?;
                Ok(Self { conn: Conn::Sqlite(conn), identity: config.describe(), has_sha256: None })
            }
            DbConfig::Postgres(settings) => {
                let client = connect_postgres(settings)?;
                Ok(Self { conn: Conn::Postgres(Box::new(client)), identity: config.describe(), has_sha256: None })
            }
        }
    }

    /// Which database this is, for messages and for cache.db to remember
    /// what it selected from (never the password).
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// How many rows of `kind` were last accessed before `before_ms` (what
    /// [`Self::for_each_candidate`] would select without a lower bound).
    pub fn count_candidates(&mut self, kind: MediaKind, before_ms: i64) -> Result<u64> {
        let (sql, table) = match kind {
            MediaKind::Local => (COUNT_LOCAL_SQL, "local_media_repository"),
            MediaKind::Remote => (COUNT_REMOTE_SQL, "remote_media_cache"),
        };
        let mut count = None;
        self.for_each_row(&format!("SELECT CAST(({sql}) AS TEXT)"), &[Param::Int(before_ms)], table, |mut row| {
            count = row.get_mut(0).and_then(Option::take);
            Ok(())
        })?;
        count.and_then(|c| c.parse().ok()).with_context(|| format!("counting the media in {table}"))
    }

    /// Call `each` for every row of `kind` last accessed before `cutoff_ms`
    /// (and, with `since_ms`, not before it), in cache.db's key order.
    pub fn for_each_candidate(
        &mut self,
        kind: MediaKind,
        cutoff_ms: i64,
        since_ms: Option<i64>,
        mut each: impl FnMut(Candidate) -> Result<()>,
    ) -> Result<()> {
        let (sql, table) = match kind {
            MediaKind::Local => (LOCAL_SQL, "local_media_repository"),
            MediaKind::Remote => (REMOTE_SQL, "remote_media_cache"),
        };
        let params = [Param::Int(cutoff_ms), Param::Int(since_ms.unwrap_or(i64::MIN))];
        self.for_each_row(sql, &params, table, |mut row| {
            let mut text = |i: usize| row.get_mut(i).and_then(Option::take).unwrap_or_default();
            each(Candidate { origin: text(0), media_id: text(1), filesystem_id: text(2), kind })
        })
    }
}

impl HomeserverDb {
    /// Synapse's record of a media: its length and SHA-256, and its
    /// thumbnails' lengths. `None` if the database has no such media.
    pub fn media_record(&mut self, origin: &str, media_id: &str) -> Result<Option<MediaRecord>> {
        let sha = if self.has_sha256()? { "sha256" } else { "NULL" };
        let (media_sql, thumbs_sql, params) = if origin.is_empty() {
            (
                format!("SELECT CAST(media_length AS TEXT), {sha} FROM local_media_repository WHERE media_id = $1"),
                "SELECT CAST(thumbnail_width AS TEXT), CAST(thumbnail_height AS TEXT), thumbnail_type, \
                 thumbnail_method, CAST(thumbnail_length AS TEXT) FROM local_media_repository_thumbnails \
                 WHERE media_id = $1",
                vec![Param::Text(media_id.to_owned())],
            )
        } else {
            (
                format!(
                    "SELECT CAST(media_length AS TEXT), {sha} FROM remote_media_cache \
                     WHERE media_origin = $1 AND media_id = $2"
                ),
                "SELECT CAST(thumbnail_width AS TEXT), CAST(thumbnail_height AS TEXT), thumbnail_type, \
                 thumbnail_method, CAST(thumbnail_length AS TEXT) FROM remote_media_cache_thumbnails \
                 WHERE media_origin = $1 AND media_id = $2",
                vec![Param::Text(origin.to_owned()), Param::Text(media_id.to_owned())],
            )
        };
        let mut record = None;
        self.for_each_row(&media_sql, &params, "the media's record", |row| {
            let mut row = row.into_iter();
            let length = row.next().flatten().and_then(|l| l.trim().parse::<u64>().ok());
            let sha256 = row.next().flatten().and_then(|h| {
                let mut out = [0u8; 32];
                hex::decode_to_slice(h.trim(), &mut out).ok().map(|()| out)
            });
            record = Some(MediaRecord { length, sha256, thumbnails: Vec::new() });
            Ok(())
        })?;
        let Some(mut record) = record else { return Ok(None) };
        self.for_each_row(thumbs_sql, &params, "the media's thumbnail rows", |row| {
            let mut row = row.into_iter().map(Option::unwrap_or_default);
            let mut next = || row.next().unwrap_or_default();
            let (w, h, ty, method, length) = (next(), next(), next(), next(), next());
            if let (Ok(w), Ok(h)) = (w.parse::<i64>(), h.parse::<i64>())
                && let Some(name) = crate::media_store::thumbnail_name(w, h, &ty, &method)
            {
                record.thumbnails.push((name, length.parse().ok()));
            }
            Ok(())
        })?;
        Ok(Some(record))
    }

    fn has_sha256(&mut self) -> Result<bool> {
        if let Some(known) = self.has_sha256 {
            return Ok(known);
        }
        let known =
            self.for_each_row("SELECT sha256 FROM local_media_repository WHERE 1 = 0", &[], "", |_| Ok(())).is_ok();
        self.has_sha256 = Some(known);
        Ok(known)
    }

    /// When a media was last used, as Synapse's own retention judges it:
    /// `COALESCE(last_access_ts, created_ts)` in ms. `None` if the row is gone.
    pub fn last_used(&mut self, origin: &str, media_id: &str) -> Result<Option<i64>> {
        let (sql, params) = if origin.is_empty() {
            (
                "SELECT CAST(COALESCE(last_access_ts, created_ts) AS TEXT) FROM local_media_repository WHERE media_id = $1",
                vec![Param::Text(media_id.to_owned())],
            )
        } else {
            (
                "SELECT CAST(COALESCE(last_access_ts, created_ts) AS TEXT) FROM remote_media_cache \
                 WHERE media_origin = $1 AND media_id = $2",
                vec![Param::Text(origin.to_owned()), Param::Text(media_id.to_owned())],
            )
        };
        let mut found = None;
        self.for_each_row(sql, &params, "the media's last access", |row| {
            found = Some(row.into_iter().next().flatten().and_then(|t| t.trim().parse().ok()).unwrap_or(0));
            Ok(())
        })?;
        Ok(found)
    }

    /// When the newest event this database holds was received, in ms (by
    /// the unique index on `stream_ordering`: cheap). `None` without
    /// Synapse's `events` table.
    pub fn newest_event(&mut self) -> Option<i64> {
        const SQL: &str = "SELECT CAST(received_ts AS TEXT) FROM events ORDER BY stream_ordering DESC LIMIT 1";
        let mut newest = None;
        let read = self.for_each_row(SQL, &[], "the newest event", |row| {
            newest = row.into_iter().next().flatten().and_then(|t| t.trim().parse().ok());
            Ok(())
        });
        read.ok().and(newest)
    }

    /// The newest `created_ts` or `last_access_ts` of any media row, in ms:
    /// when this database last saw media activity.
    pub fn newest_media_activity(&mut self) -> Result<Option<i64>> {
        const SQL: &str = "SELECT CAST(MAX(ts) AS TEXT) FROM ( \
             SELECT MAX(created_ts) AS ts FROM local_media_repository \
             UNION ALL SELECT MAX(last_access_ts) FROM local_media_repository \
             UNION ALL SELECT MAX(created_ts) FROM remote_media_cache \
             UNION ALL SELECT MAX(last_access_ts) FROM remote_media_cache) AS newest";
        let mut newest = None;
        self.for_each_row(SQL, &[], "the newest media rows", |row| {
            newest = row.into_iter().next().flatten().and_then(|t| t.trim().parse().ok());
            Ok(())
        })?;
        Ok(newest)
    }
}

impl HomeserverDb {
    /// Call `each` with every row of `sql` (text columns, `$n` parameters),
    /// streamed: a cursor on PostgreSQL, a stepping statement on SQLite.
    pub fn for_each_row(
        &mut self,
        sql: &str,
        params: &[Param],
        what: &str,
        mut each: impl FnMut(Vec<Option<String>>) -> Result<()>,
    ) -> Result<()> {
        match &mut self.conn {
            Conn::Postgres(client) => {
                let mut tx = client
                    .build_transaction()
                    .read_only(true)
                    .start()
                    .context("could not start a read-only transaction on the homeserver database")?;
                let portal = tx
                    .bind(sql, &pg_params(params))
                    .with_context(|| format!("could not query {what} in the homeserver database"))?;
                loop {
                    let rows = tx
                        .query_portal(&portal, FETCH_SIZE)
                        .with_context(|| format!("reading {what} from the homeserver database"))?;
                    if rows.is_empty() {
                        break;
                    }
                    for row in rows {
                        each((0..row.len()).map(|i| row.try_get(i)).collect::<Result<_, _>>()?)?;
                    }
                }
                tx.commit()?;
            }
            Conn::Sqlite(conn) => {
                let mut stmt = conn
                    .prepare(&sqlite_sql(sql))
                    .with_context(|| format!("could not query {what} in the homeserver database"))?;
                let n = stmt.column_count();
                let mut rows = stmt.query(rusqlite::params_from_iter(sqlite_params(params)))?;
                while let Some(row) = rows.next().with_context(|| format!("reading {what}"))? {
                    each((0..n).map(|i| row.get(i)).collect::<Result<_, _>>()?)?;
                }
            }
        }
        Ok(())
    }

    /// Run `statements` in one transaction; returns the rows each changed.
    /// A statement with a `None` guard runs only if the statement at that
    /// index changed a row.
    pub fn transaction(&mut self, statements: &[(&str, Vec<Param>, Option<usize>)]) -> Result<Vec<u64>> {
        let mut changed = Vec::with_capacity(statements.len());
        match &mut self.conn {
            Conn::Postgres(client) => {
                let mut tx =
                    client.transaction().context("could not start a transaction on the homeserver database")?;
                for (sql, params, guard) in statements {
                    if guard.is_some_and(|g| changed[g] == 0) {
                        changed.push(0);
                        continue;
                    }
                    changed.push(tx.execute(*sql, &pg_params(params)).map_err(|e| anyhow!(pg_error_text(&e)))?);
                }
                tx.commit()
                    .map_err(|e| anyhow!("could not commit to the homeserver database: {}", pg_error_text(&e)))?;
            }
            Conn::Sqlite(conn) => {
                let tx = conn.transaction().context("could not start a transaction on the homeserver database")?;
                for (sql, params, guard) in statements {
                    if guard.is_some_and(|g| changed[g] == 0) {
                        changed.push(0);
                        continue;
                    }
                    let mut stmt = tx.prepare_cached(&sqlite_sql(sql))?;
                    changed.push(stmt.execute(rusqlite::params_from_iter(sqlite_params(params)))? as u64);
                }
                tx.commit().context("could not commit to the homeserver database")?;
            }
        }
        Ok(changed)
    }
}

fn pg_params(params: &[Param]) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| match p {
            Param::Int(i) => i as &(dyn postgres::types::ToSql + Sync),
            Param::Text(t) => t as &(dyn postgres::types::ToSql + Sync),
        })
        .collect()
}

fn sqlite_params(params: &[Param]) -> Vec<rusqlite::types::Value> {
    params
        .iter()
        .map(|p| match p {
            Param::Int(i) => rusqlite::types::Value::Integer(*i),
            Param::Text(t) => rusqlite::types::Value::Text(t.clone()),
        })
        .collect()
}

/// `$1` placeholders as SQLite spells them (`?1`).
fn sqlite_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    // PostgreSQL's bytewise collation is SQLite's BINARY.
    out.replace(" COLLATE \"C\"", " COLLATE BINARY")
}

fn connect_postgres(s: &PgSettings) -> Result<postgres::Client> {
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
fn pg_error_text(e: &postgres::Error) -> String {
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
