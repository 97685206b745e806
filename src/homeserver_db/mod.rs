//! The homeserver databases, behind one typed interface: all the SQL of
//! media-offload lives below this module, one file per homeserver and
//! engine, and the commands speak of media, never of tables.
//!
//! * [`MediaDb`]: what `purge` and `check` ask of any homeserver: the
//!   candidates of a retention rule (a page at a time, by key), deleting a
//!   page and learning what went, the avatars to keep, every media and
//!   thumbnail row, thumbnail rows without their media, and the newest
//!   activity (is this the live database?).
//! * [`SynapseDb`]: what only Synapse has besides: the rows `update-db`
//!   copies into cache.db, a media's record (length, sha256, thumbnail
//!   lengths) that settles conflicts, and when a media was last used.
//!
//! Implementations: `synapse_postgres`, `synapse_sqlite`,
//! `dendrite_postgres`, `dendrite_sqlite`. Reads on PostgreSQL stream
//! through a server-side cursor (portal), on SQLite through a stepping
//! statement, so memory stays flat at any row count.

use std::collections::HashSet;

use anyhow::{Context as _, Result, anyhow, bail};

use crate::config::DbConfig;
use crate::media_store::MediaKind;

mod connect;
pub mod dendrite;
pub mod dendrite_postgres;
pub mod dendrite_sqlite;
mod synapse;
pub mod synapse_postgres;
pub mod synapse_sqlite;

pub(crate) use connect::{connect_postgres, pg_error_text};

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

/// A media, as the homeserver keys it. Synapse's local media have the
/// origin `""`; Dendrite's always name their origin.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MediaKey {
    pub origin: String,
    pub media_id: String,
}

impl MediaKey {
    pub fn new(origin: impl Into<String>, media_id: impl Into<String>) -> Self {
        Self { origin: origin.into(), media_id: media_id.into() }
    }

    /// `mxc://origin/id` (`server` standing in for Synapse's empty origin).
    pub fn mxc(&self, server: &str) -> String {
        let origin = if self.origin.is_empty() { server } else { &self.origin };
        format!("mxc://{origin}/{}", self.media_id)
    }

    /// The key of `mxc://origin/id`, if `url` is one.
    pub fn from_mxc(url: &str) -> Option<Self> {
        let (origin, id) = url.strip_prefix("mxc://")?.split_once('/')?;
        (!origin.is_empty() && !id.is_empty() && !id.contains('/')).then(|| Self::new(origin, id))
    }
}

/// Which media a retention rule removes: `kind` media whose age (Synapse:
/// last use; Dendrite: when it stored the row) is before `cutoff_ms`, and
/// local media only above `size_gt` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub kind: MediaKind,
    pub cutoff_ms: i64,
    pub size_gt: i64,
}

/// A media row: its key, its kind and where its bytes are (Synapse: the
/// filesystem id; Dendrite: the base64 hash naming its folder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRow {
    pub key: MediaKey,
    pub kind: MediaKind,
    pub location: String,
}

/// A media whose rows a page deletion removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    pub row: MediaRow,
    /// The recorded length of the original, if any.
    pub length: Option<u64>,
    /// The file names of its thumbnail rows, as the homeserver names the
    /// files, with their recorded lengths.
    pub thumbnails: Vec<(String, Option<u64>)>,
    /// Other rows still use its files (Dendrite shares a folder between
    /// every row with the same hash): only the rows went.
    pub shared: bool,
}

/// One media row, for `check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaInfo {
    pub row: MediaRow,
    /// The recorded length of the original.
    pub length: Option<i64>,
    /// Why it may have no bytes on purpose: `url_cache`, `pending` (Synapse).
    pub no_bytes: Option<&'static str>,
}

/// One thumbnail row whose media row exists, for `check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThumbnailInfo {
    pub kind: MediaKind,
    pub origin: String,
    /// The media's location (filesystem id or hash).
    pub location: String,
    /// The file name, as the homeserver names it.
    pub name: String,
    pub length: Option<i64>,
}

/// What `purge` and `check` ask of a homeserver's database.
pub trait MediaDb {
    /// Up to `limit` rows `rule` selects, after `after` in key order.
    fn candidates(&mut self, rule: &Retention, after: Option<&MediaKey>, limit: usize) -> Result<Vec<MediaRow>>;

    /// In one transaction, delete the rows of `page` that `rule` still
    /// selects (a media used since it was selected stays), with their
    /// thumbnail rows; returns what was deleted. A dry run rolls the
    /// transaction back: what it returns is exactly what a run would delete.
    fn delete_page(&mut self, rule: &Retention, page: &[MediaRow], dry_run: bool) -> Result<Vec<Deleted>>;

    /// The media in use as an avatar, which are never purged, keyed as
    /// [`MediaDb::candidates`] keys them. `server_name` tells Synapse's
    /// local media (empty origin) apart; without it any server's id
    /// protects a local media of that id: the safe side.
    fn avatars(&mut self, server_name: Option<&str>) -> Result<HashSet<MediaKey>>;

    /// Every media row.
    fn for_each_media(&mut self, each: &mut dyn FnMut(MediaInfo) -> Result<()>) -> Result<()>;

    /// Every thumbnail row of a media that has a row.
    fn for_each_thumbnail(&mut self, each: &mut dyn FnMut(ThumbnailInfo) -> Result<()>) -> Result<()>;

    /// Thumbnail rows whose media row is gone, counted per media.
    fn orphan_thumbnail_rows(&mut self) -> Result<Vec<(MediaKey, u64)>>;

    /// Delete the thumbnail rows of `key` if it still has no media row.
    fn delete_orphan_thumbnail_rows(&mut self, key: &MediaKey) -> Result<u64>;

    /// Whether the media row `key` exists (now).
    fn has_media(&mut self, key: &MediaKey) -> Result<bool>;

    /// The newest activity the database holds, in ms: an event received,
    /// a media stored or viewed. `None` for an empty database.
    fn newest_activity(&mut self) -> Result<Option<i64>>;
}

/// What only Synapse's database answers.
pub trait SynapseDb: MediaDb {
    /// Every row of `kind` last used before `cutoff_ms` and not before
    /// `since_ms`, in cache.db's key order (bytewise, as SQLite compares
    /// its TEXT), so that the inserts walk cache.db's unique index forward.
    fn for_each_candidate(
        &mut self,
        kind: MediaKind,
        cutoff_ms: i64,
        since_ms: i64,
        ordered: bool,
        each: &mut dyn FnMut(Candidate) -> Result<()>,
    ) -> Result<()>;

    /// How many rows of `kind` were last used before `before_ms` (what
    /// `for_each_candidate` selects without a lower bound).
    fn count_candidates(&mut self, kind: MediaKind, before_ms: i64) -> Result<u64>;

    /// Synapse's record of a media; `None` if there is no such media.
    fn media_record(&mut self, origin: &str, media_id: &str) -> Result<Option<MediaRecord>>;

    /// `COALESCE(last_access_ts, created_ts)` in ms; `None` if the row is gone.
    fn last_used(&mut self, origin: &str, media_id: &str) -> Result<Option<i64>>;
}

/// A connection to Synapse's database.
pub struct HomeserverDb {
    db: Box<dyn SynapseDb + Send>,
    /// Which database this is ([`DbConfig::describe`]).
    identity: String,
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
        let db: Box<dyn SynapseDb + Send> = match config {
            DbConfig::Sqlite { path } => Box::new(synapse_sqlite::SynapseSqlite::new(open_sqlite(path, writable)?)),
            DbConfig::Postgres(settings) => {
                Box::new(synapse_postgres::SynapsePostgres::new(connect_postgres(settings)?))
            }
        };
        Ok(Self { db, identity: config.describe() })
    }

    /// Which database this is, for messages and for cache.db to remember
    /// what it selected from (never the password).
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The retention and check interface.
    pub fn media(&mut self) -> &mut dyn MediaDb {
        &mut *self.db
    }

    /// Call `each` for every row of `kind` last accessed before `cutoff_ms`
    /// (and, with `since_ms`, not before it); `ordered`, in cache.db's key
    /// order (else as the database finds them, sparing it a sort).
    pub fn for_each_candidate(
        &mut self,
        kind: MediaKind,
        cutoff_ms: i64,
        since_ms: Option<i64>,
        ordered: bool,
        mut each: impl FnMut(Candidate) -> Result<()>,
    ) -> Result<()> {
        self.db.for_each_candidate(kind, cutoff_ms, since_ms.unwrap_or(i64::MIN), ordered, &mut each)
    }

    /// How many rows of `kind` were last accessed before `before_ms` (what
    /// [`Self::for_each_candidate`] would select without a lower bound).
    pub fn count_candidates(&mut self, kind: MediaKind, before_ms: i64) -> Result<u64> {
        self.db.count_candidates(kind, before_ms)
    }

    /// Synapse's record of a media: its length and SHA-256, and its
    /// thumbnails' lengths. `None` if the database has no such media.
    pub fn media_record(&mut self, origin: &str, media_id: &str) -> Result<Option<MediaRecord>> {
        self.db.media_record(origin, media_id)
    }

    /// When a media was last used, as Synapse's own retention judges it:
    /// `COALESCE(last_access_ts, created_ts)` in ms. `None` if the row is gone.
    pub fn last_used(&mut self, origin: &str, media_id: &str) -> Result<Option<i64>> {
        self.db.last_used(origin, media_id)
    }
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

/// Rows fetched from a PostgreSQL cursor per round trip.
const FETCH_SIZE: i32 = 5000;

/// Open a homeserver's SQLite file (never creating one).
pub(crate) fn open_sqlite(path: &std::path::Path, writable: bool) -> Result<rusqlite::Connection> {
    if !path.is_file() {
        bail!("homeserver SQLite database {} does not exist", path.display());
    }
    let mode =
        if writable { rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE } else { rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY };
    let conn = rusqlite::Connection::open_with_flags(path, mode | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .with_context(|| format!("could not open homeserver SQLite database {}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    Ok(conn)
}

/// PostgreSQL query parameters.
pub(crate) type PgParams<'a> = &'a [&'a (dyn postgres::types::ToSql + Sync)];

/// Call `each` with every row of `sql`, streamed through a portal in a
/// read-only transaction.
pub(crate) fn pg_stream(
    client: &mut postgres::Client,
    sql: &str,
    params: PgParams<'_>,
    what: &str,
    mut each: impl FnMut(postgres::Row) -> Result<()>,
) -> Result<()> {
    let mut tx = client
        .build_transaction()
        .read_only(true)
        .start()
        .context("could not start a read-only transaction on the homeserver database")?;
    let portal = tx.bind(sql, params).map_err(|e| anyhow!("could not query {what}: {}", pg_error_text(&e)))?;
    loop {
        let rows =
            tx.query_portal(&portal, FETCH_SIZE).map_err(|e| anyhow!("reading {what}: {}", pg_error_text(&e)))?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            each(row)?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The rows of a short query, all at once.
pub(crate) fn pg_query(
    client: &mut postgres::Client,
    sql: &str,
    params: PgParams<'_>,
    what: &str,
) -> Result<Vec<postgres::Row>> {
    client.query(sql, params).map_err(|e| anyhow!("could not query {what}: {}", pg_error_text(&e)))
}

/// Call `each` with every row of `sql` on SQLite.
pub(crate) fn sqlite_stream(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
    what: &str,
    mut each: impl FnMut(&rusqlite::Row<'_>) -> Result<()>,
) -> Result<()> {
    let mut stmt = conn.prepare_cached(sql).with_context(|| format!("could not query {what}"))?;
    let mut rows = stmt.query(params).with_context(|| format!("could not query {what}"))?;
    while let Some(row) = rows.next().with_context(|| format!("reading {what}"))? {
        each(row)?;
    }
    Ok(())
}

/// A non-negative length from the database.
pub(crate) fn length(value: Option<i64>) -> Option<u64> {
    value.and_then(|v| u64::try_from(v).ok())
}

/// Add the media `url` names (a whole `mxc://origin/id`), if it is one.
pub(crate) fn add_avatar(avatars: &mut HashSet<MediaKey>, url: Option<&str>) {
    if let Some(key) = url.map(str::trim).and_then(MediaKey::from_mxc) {
        avatars.insert(key);
    }
}

/// Typed columns of a result row, on either engine, so a homeserver's
/// engines share the decoding of the rows their statements return.
pub(crate) trait Cols {
    fn text(&self, i: usize) -> Result<Option<String>>;
    fn int(&self, i: usize) -> Result<Option<i64>>;

    /// A text column, `""` for NULL.
    fn string(&self, i: usize) -> Result<String> {
        Ok(self.text(i)?.unwrap_or_default())
    }
}

impl Cols for postgres::Row {
    fn text(&self, i: usize) -> Result<Option<String>> {
        self.try_get(i).map_err(|e| anyhow!("column {i}: {e}"))
    }

    fn int(&self, i: usize) -> Result<Option<i64>> {
        self.try_get(i).map_err(|e| anyhow!("column {i}: {e}"))
    }
}

impl Cols for rusqlite::Row<'_> {
    fn text(&self, i: usize) -> Result<Option<String>> {
        use rusqlite::types::ValueRef;
        Ok(match self.get_ref(i)? {
            ValueRef::Null => None,
            ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Integer(n) => Some(n.to_string()),
            ValueRef::Real(r) => Some(r.to_string()),
        })
    }

    fn int(&self, i: usize) -> Result<Option<i64>> {
        use rusqlite::types::ValueRef;
        Ok(match self.get_ref(i)? {
            ValueRef::Integer(n) => Some(n),
            ValueRef::Real(r) => Some(r as i64),
            ValueRef::Text(t) => std::str::from_utf8(t).ok().and_then(|t| t.trim().parse().ok()),
            _ => None,
        })
    }
}
