//! cache.db: the state shared with `s3_media_upload`, and the lock that
//! keeps two runs from working on it at once.
//!
//! (The lock that keeps two runs apart is in `crate::lock`.)
//!
//! The schema is byte-for-byte the Python tool's, so both tools can take
//! turns on one file. Reads are paged by rowid (short read transactions,
//! flat memory); writes are batched in transactions.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use rusqlite::{Connection, params};

use crate::homeserver_db::Candidate;
use crate::media_store::{MediaKind, MediaPaths, StoredFile};

/// `s3_media_upload`'s schema, verbatim.
pub const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS media (
        origin TEXT NOT NULL,  -- empty string if local media
        media_id TEXT NOT NULL,
        filesystem_id TEXT NOT NULL,
        -- Type is \"local\" or \"remote\"
        type TEXT NOT NULL,
        -- indicates whether the media and all its thumbnails have been deleted from the
        -- local cache
        known_deleted BOOLEAN NOT NULL
    );

    CREATE UNIQUE INDEX IF NOT EXISTS media_id_idx ON media(origin, media_id);
    CREATE INDEX IF NOT EXISTS deleted_idx ON media(known_deleted);
";

/// What media-offload adds to cache.db, all named `media_offload_*`. The
/// Python tool reads and writes its own table and indexes by name, so it
/// goes on working on the same file; SQLite keeps the extra index up to
/// date whichever tool inserts.
///
/// - An index of remote media by filesystem id, the name their files have
///   on disk: `check-deleted` finds media pulled back by walking the
///   store and looks each file up here, instead of looking up every row.
/// - A table of named values: what `update-db` last selected, so the daily
///   run reads only what is new since.
const OWN_SCHEMA: &str = "
    CREATE INDEX IF NOT EXISTS media_offload_remote_fsid_idx ON media(origin, filesystem_id) WHERE type = 'remote';
    CREATE TABLE IF NOT EXISTS media_offload_state (name TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);
";

/// Whether a name in cache.db's schema is one of ours (see [`OWN_SCHEMA`]).
pub fn is_own_schema_object(name: &str) -> bool {
    name.starts_with("media_offload_")
}

/// One row of the `media` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRow {
    pub rowid: i64,
    pub origin: String,
    pub media_id: String,
    pub filesystem_id: String,
    pub kind: String,
    pub known_deleted: bool,
}

impl CacheRow {
    /// Where this row's files live, validated; the error names the row.
    pub fn paths(&self) -> Result<MediaPaths, String> {
        let kind = MediaKind::parse(&self.kind).ok_or_else(|| {
            format!("cache row {}: unknown media type {:?} (expected local or remote)", self.rowid, self.kind)
        })?;
        MediaPaths::new(&self.origin, &self.media_id, &self.filesystem_id, kind).map_err(|e| e.to_string())
    }
}

/// Which rows a page read returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rows {
    NotDeleted,
    Deleted,
    All,
}

impl Rows {
    /// The condition, written so that SQLite answers it from `deleted_idx`
    /// (`NOT known_deleted` would read every row). Both tools store the
    /// flag as 0 or 1.
    fn condition(self) -> &'static str {
        match self {
            Rows::NotDeleted => "known_deleted = 0",
            Rows::Deleted => "known_deleted = 1",
            Rows::All => "1",
        }
    }
}

/// The page cache of the writing connection, in KiB.
const CACHE_KIB: i64 = 16 * 1024;

/// An open cache.db.
pub struct Cache {
    conn: Connection,
    path: PathBuf,
    /// Indexes dropped in the open transaction, built again by `commit`.
    dropped: Option<Dropped>,
}

/// Which indexes a bulk write dropped until its commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dropped {
    /// All three, to fill an empty table ([`Cache::begin_fill`]): rows
    /// may then come in any order.
    All,
    /// `deleted_idx`, to flag most rows ([`Cache::begin_mass_flagging`]).
    DeletedIdx,
}

impl Cache {
    /// Open (creating if needed) the cache with the Python tool's schema.
    pub fn open(path: &Path) -> Result<Self> {
        let existed = path.exists();
        if existed {
            writable_or_say_why(path)?;
        }
        let conn = Connection::open(path)
            .with_context(|| format!("could not open {} as a SQLite database", path.display()))?;
        conn.busy_timeout(Duration::from_secs(30))?;
        // A page cache that holds a daily run's changed pages until its one
        // commit (SQLite's default of 2 MiB spills them to the file, with a
        // sync, many times over at 10M rows); well within the 64 MiB budget.
        conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
        conn.execute_batch(SCHEMA)
            .with_context(|| format!("could not open {} as a SQLite database", path.display()))?;
        add_own_schema(&conn, path)?;
        if !existed {
            crate::lock::hand_over(path);
        }
        Ok(Self { conn, path: path.to_owned(), dropped: None })
    }

    /// A second connection for reading pages while this one writes.
    pub fn reader(&self) -> Result<Self> {
        Self::reader_of(&self.path)
    }

    /// A connection to an existing cache.db that changes nothing in it
    /// (`query_only`). It is opened for writing where it can be, all the
    /// same: a run killed mid-transaction leaves a hot journal that only a
    /// writer can roll back, and a read-only reader would then fail with
    /// "attempt to write a readonly database".
    pub fn reader_of(path: &Path) -> Result<Self> {
        use rusqlite::OpenFlags;
        let open = |flags| {
            let conn = Connection::open_with_flags(path, flags)?;
            conn.busy_timeout(Duration::from_secs(30))?;
            conn.pragma_update(None, "query_only", true)?;
            // Touch the file: this is when a hot journal is rolled back.
            conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |_| Ok(()))?;
            Ok::<_, rusqlite::Error>(conn)
        };
        let conn = open(OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .or_else(|_| open(OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX))
            .with_context(|| format!("could not open {}", path.display()))?;
        Ok(Self { conn, path: path.to_owned(), dropped: None })
    }

    /// Write a consistent copy of the whole database to `target` (this
    /// file itself is not changed; `query_only` would refuse VACUUM INTO).
    pub fn copy_to(&self, target: &Path) -> Result<()> {
        let target = target.to_str().with_context(|| format!("{} is not valid UTF-8", target.display()))?;
        self.conn.pragma_update(None, "query_only", false)?;
        let copied = self.conn.execute("VACUUM INTO ?1", [target]);
        self.conn.pragma_update(None, "query_only", true)?;
        copied?;
        Ok(())
    }

    /// Forget media entirely (they were purged): a later update-db may then
    /// add them afresh, e.g. a remote media fetched again under a new
    /// filesystem id.
    pub fn remove(&mut self, media: &[(String, String)]) -> Result<()> {
        if media.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            let mut stmt = tx.prepare_cached("DELETE FROM media WHERE origin = ?1 AND media_id = ?2")?;
            for (origin, media_id) in media {
                stmt.execute(params![origin, media_id])?;
            }
            Ok(())
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Open a transaction that the following writes join, until `commit`:
    /// every commit syncs the disk and rewrites the pages it touched, so a
    /// bulk job (update-db, check-deleted) makes one, as the Python tool
    /// does. Killed before `commit`, the job is simply redone by a rerun.
    pub fn begin(&mut self) -> Result<()> {
        self.conn.execute_batch("BEGIN").context("could not start a transaction on cache.db")
    }

    pub fn commit(&mut self) -> Result<()> {
        if self.dropped.take().is_some() {
            log::debug!("{}: indexing the rows", self.path.display());
            self.conn.execute_batch(&format!("{SCHEMA}{OWN_SCHEMA}")).with_context(|| {
                format!("could not index {} (a media listed twice by the homeserver database?)", self.path.display())
            })?;
        }
        self.conn.execute_batch("COMMIT").with_context(|| format!("could not write to {}", self.path.display()))
    }

    /// In the open transaction, if the table is empty (a first
    /// `update-db`), drop its indexes until `commit` builds them again:
    /// indexing a million rows at once takes a fraction of inserting them
    /// one by one into three B-trees, and the rows may come in any order.
    /// Their keys must be unique, as the homeserver's own unique indexes
    /// make them; if not, building the unique index fails and nothing is
    /// written. Dropped and built in one transaction, so a run killed
    /// between leaves cache.db as it was. Returns whether it did.
    pub fn begin_fill(&mut self) -> Result<bool> {
        if self.conn.is_autocommit() || self.any(Rows::All)? {
            return Ok(false);
        }
        self.conn
            .execute_batch(
                "DROP INDEX IF EXISTS media_id_idx; DROP INDEX IF EXISTS deleted_idx; \
                 DROP INDEX IF EXISTS media_offload_remote_fsid_idx;",
            )
            .with_context(|| format!("could not write to {}", self.path.display()))?;
        self.dropped = Some(Dropped::All);
        Ok(true)
    }

    /// In the open transaction, drop `deleted_idx` until `commit` builds
    /// it again, if most rows are not known deleted (a first
    /// `check-deleted`, which may flag nearly all of them): building the
    /// index once costs a fraction of moving most of its entries one by
    /// one. (The daily run, with 1% of the rows open, keeps the index: it
    /// finds those rows by it.) `open`: how many rows are not known
    /// deleted. Returns whether it did.
    pub fn begin_mass_flagging(&mut self, open: u64) -> Result<bool> {
        if self.conn.is_autocommit() {
            return Ok(false);
        }
        // MAX(rowid) is read from the end of the table: a bound on the
        // rows, where COUNT(*) would read them all.
        let rows: i64 = self.conn.query_row("SELECT COALESCE(MAX(rowid), 0) FROM media", [], |r| r.get(0))?;
        if rows == 0 || open < rows as u64 / 2 {
            return Ok(false);
        }
        self.conn
            .execute_batch("DROP INDEX IF EXISTS deleted_idx")
            .with_context(|| format!("could not write to {}", self.path.display()))?;
        self.dropped = Some(Dropped::DeletedIdx);
        Ok(true)
    }

    /// Run `work` in the open transaction if there is one, else in its own.
    /// Any failure names the file (a full disk shows up at the first write,
    /// not only at commit).
    fn write<T>(&mut self, work: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let result = if self.conn.is_autocommit() {
            self.conn.transaction().and_then(|tx| {
                let out = work(&tx)?;
                tx.commit().map(|()| out)
            })
        } else {
            work(&self.conn)
        };
        result.with_context(|| format!("could not write to {}", self.path.display()))
    }

    /// Insert rows that are not there yet (`INSERT OR IGNORE`, like the
    /// Python tool: a row once known is never rewritten).
    pub fn insert_new(&mut self, rows: &[Candidate]) -> Result<u64> {
        // In key order, the unique index is walked once per batch instead
        // of being hit at random pages for every row (no index: no order).
        let mut sorted: Vec<&Candidate> = rows.iter().collect();
        if self.dropped != Some(Dropped::All) {
            sorted.sort_unstable_by(|a, b| (&a.origin, &a.media_id).cmp(&(&b.origin, &b.media_id)));
        }
        self.write(|conn| {
            let mut stmt = conn.prepare_cached(
                "INSERT OR IGNORE INTO media (origin, media_id, filesystem_id, type, known_deleted) \
                 VALUES (?1, ?2, ?3, ?4, 0)",
            )?;
            let mut added = 0;
            for row in sorted {
                added += stmt.execute(params![row.origin, row.media_id, row.filesystem_id, row.kind.as_str()])? as u64;
            }
            Ok(added)
        })
    }

    /// Whether any row is of `which`: an `EXISTS` that stops at the first
    /// row, where a count of the known-deleted rows would read the whole
    /// history on every daily run.
    pub fn any(&self, which: Rows) -> Result<bool> {
        let sql = format!("SELECT EXISTS (SELECT 1 FROM media WHERE {})", which.condition());
        Ok(self.conn.query_row(&sql, [], |r| r.get::<_, bool>(0))?)
    }

    pub fn count(&self, which: Rows) -> Result<u64> {
        let sql = format!("SELECT COUNT(*) FROM media WHERE {}", which.condition());
        Ok(self.conn.query_row(&sql, [], |r| r.get::<_, i64>(0))? as u64)
    }

    /// Up to `limit` rows with rowid greater than `after`, in rowid order.
    pub fn page(&self, which: Rows, after: i64, limit: usize) -> Result<Vec<CacheRow>> {
        let sql =
            format!("SELECT {COLUMNS} FROM media WHERE rowid > ?1 AND {} ORDER BY rowid LIMIT ?2", which.condition());
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt
            .query_map(params![after, limit as i64], row_of)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .with_context(|| format!("reading {}", self.path.display()))?;
        Ok(rows)
    }

    /// The rows marked deleted whose files are named `stored`: the local
    /// media with that id, or the remote media of that origin with that
    /// filesystem id (`media_offload_remote_fsid_idx`).
    pub fn deleted_rows_named(&self, stored: &StoredFile) -> Result<Vec<CacheRow>> {
        let sql = match stored.kind {
            MediaKind::Local => {
                "SELECT rowid, origin, media_id, filesystem_id, type, known_deleted FROM media \
                 WHERE origin = ?1 AND media_id = ?2 AND known_deleted = 1"
            }
            MediaKind::Remote => {
                "SELECT rowid, origin, media_id, filesystem_id, type, known_deleted FROM media \
                 WHERE type = 'remote' AND origin = ?1 AND filesystem_id = ?2 AND known_deleted = 1"
            }
        };
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt
            .query_map(params![stored.origin, stored.filesystem_id], row_of)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .with_context(|| format!("reading {}", self.path.display()))?;
        Ok(rows)
    }

    /// Set `known_deleted` of rows found in this transaction, by rowid, in
    /// rowid order: the table and `deleted_idx` are then walked forward
    /// once, not hit at random pages through the unique index.
    pub fn set_deleted_rows(&mut self, changes: &mut [(i64, bool)]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        changes.sort_unstable();
        self.write(|conn| {
            let mut stmt = conn.prepare_cached("UPDATE media SET known_deleted = ?2 WHERE rowid = ?1")?;
            for (rowid, deleted) in changes.iter() {
                stmt.execute(params![rowid, deleted])?;
            }
            Ok(())
        })
    }

    /// A value media-offload keeps in cache.db (`media_offload_state`).
    pub fn state(&self, name: &str) -> Result<Option<String>> {
        use rusqlite::OptionalExtension;
        self.conn
            .query_row("SELECT value FROM media_offload_state WHERE name = ?1", [name], |r| r.get(0))
            .optional()
            .with_context(|| format!("reading {}", self.path.display()))
    }

    pub fn set_state(&mut self, name: &str, value: &str) -> Result<()> {
        self.write(|conn| {
            conn.execute(
                "INSERT INTO media_offload_state (name, value) VALUES (?1, ?2) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                [name, value],
            )
            .map(drop)
        })
    }

    /// Set `known_deleted` for many rows (by origin and media id, as the
    /// Python tool does: rowids are not stable across a VACUUM).
    pub fn set_deleted(&mut self, changes: &[(String, String, bool)]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        self.write(|conn| {
            let mut stmt =
                conn.prepare_cached("UPDATE media SET known_deleted = ?3 WHERE origin = ?1 AND media_id = ?2")?;
            for (origin, media_id, deleted) in changes {
                stmt.execute(params![origin, media_id, deleted])?;
            }
            Ok(())
        })
    }
}

const COLUMNS: &str = "rowid, origin, media_id, filesystem_id, type, known_deleted";

fn row_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<CacheRow> {
    Ok(CacheRow {
        rowid: r.get(0)?,
        origin: r.get(1)?,
        media_id: r.get(2)?,
        filesystem_id: r.get(3)?,
        kind: r.get(4)?,
        known_deleted: r.get::<_, Option<bool>>(5)?.unwrap_or(false),
    })
}

/// Add [`OWN_SCHEMA`]. Indexing an existing cache.db of many rows takes a
/// while, once: say so.
fn add_own_schema(conn: &Connection, path: &Path) -> Result<()> {
    let indexed: bool =
        conn.query_row("SELECT COUNT(*) FROM sqlite_master WHERE name = 'media_offload_remote_fsid_idx'", [], |r| {
            r.get::<_, i64>(0).map(|n| n > 0)
        })?;
    if !indexed {
        let rows: i64 = conn.query_row("SELECT COUNT(*) FROM media WHERE type = 'remote'", [], |r| r.get(0))?;
        if rows > 100_000 {
            log::info!("{}: indexing {rows} remote media by filesystem id (once)", path.display());
        }
    }
    conn.execute_batch(OWN_SCHEMA).with_context(|| format!("could not add media-offload's index to {}", path.display()))
}

/// A cache.db this user cannot write (left by a run as root, say) is an
/// error that says what to chown, not SQLite's "readonly database" later.
fn writable_or_say_why(path: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    for target in [path, dir] {
        if rustix::fs::access(target, rustix::fs::Access::WRITE_OK).is_err() {
            let owner = std::fs::metadata(target).map(|m| m.uid()).unwrap_or(0);
            let me = crate::lock::user_name(rustix::process::geteuid().as_raw());
            anyhow::bail!(
                "{} belongs to {} and this user ({me}) cannot write it (left by a run as another user?): \
                 `chown {me} {}` (as root) lets this user's runs use it",
                target.display(),
                crate::lock::user_name(owner),
                target.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(id: &str) -> Candidate {
        Candidate { origin: String::new(), media_id: id.into(), filesystem_id: id.into(), kind: MediaKind::Local }
    }

    #[test]
    fn insert_is_idempotent_and_pages_walk_everything() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = Cache::open(&dir.path().join("cache.db")).unwrap();
        let rows: Vec<_> = (0..25).map(|i| candidate(&format!("media{i:04}"))).collect();
        assert_eq!(cache.insert_new(&rows).unwrap(), 25);
        assert_eq!(cache.insert_new(&rows).unwrap(), 0);
        let (mut after, mut seen) = (0, 0);
        loop {
            let page = cache.page(Rows::All, after, 10).unwrap();
            let Some(last) = page.last() else { break };
            after = last.rowid;
            seen += page.len();
        }
        assert_eq!(seen, 25);
        let gone = |id: &str| (String::new(), id.to_owned(), true);
        cache.set_deleted(&[gone("media0000"), gone("media0001")]).unwrap();
        assert_eq!(cache.count(Rows::NotDeleted).unwrap(), 23);
        let deleted: bool = cache
            .conn
            .query_row("SELECT known_deleted FROM media WHERE media_id = 'media0000'", [], |r| r.get(0))
            .unwrap();
        assert!(deleted);
    }

    fn indexes(cache: &Cache) -> Vec<String> {
        let mut stmt = cache
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name")
            .unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().collect::<rusqlite::Result<_>>().unwrap()
    }

    #[test]
    fn an_empty_cache_is_filled_without_indexes_and_indexed_at_commit() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = Cache::open(&dir.path().join("cache.db")).unwrap();
        let all = indexes(&cache);
        assert_eq!(all.len(), 3);
        assert!(!cache.begin_fill().unwrap(), "not outside a transaction");
        cache.begin().unwrap();
        assert!(cache.begin_fill().unwrap());
        assert!(indexes(&cache).is_empty());
        let rows: Vec<_> = (0..25).rev().map(|i| candidate(&format!("media{i:04}"))).collect();
        assert_eq!(cache.insert_new(&rows).unwrap(), 25, "in any order");
        cache.commit().unwrap();
        assert_eq!(indexes(&cache), all);
        assert_eq!(cache.insert_new(&rows).unwrap(), 0, "the unique index is back");
        cache.begin().unwrap();
        assert!(!cache.begin_fill().unwrap(), "only an empty table");
        cache.commit().unwrap();

        // A key twice (a database without its unique index) fails the
        // commit, and nothing is written.
        let mut other = Cache::open(&dir.path().join("other.db")).unwrap();
        other.begin().unwrap();
        assert!(other.begin_fill().unwrap());
        other.insert_new(&[candidate("media0001"), candidate("media0001")]).unwrap();
        let err = other.commit().unwrap_err();
        assert!(format!("{err:#}").contains("listed twice"), "{err:#}");
        drop(other);
        let other = Cache::open(&dir.path().join("other.db")).unwrap();
        assert_eq!(other.count(Rows::All).unwrap(), 0);
        assert_eq!(indexes(&other), all);
    }

    #[test]
    fn flagging_most_rows_rebuilds_deleted_idx_at_commit() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = Cache::open(&dir.path().join("cache.db")).unwrap();
        let rows: Vec<_> = (0..10).map(|i| candidate(&format!("media{i:04}"))).collect();
        cache.insert_new(&rows).unwrap();
        cache.begin().unwrap();
        assert!(cache.begin_mass_flagging(cache.count(Rows::NotDeleted).unwrap()).unwrap(), "all rows open");
        assert!(!indexes(&cache).contains(&"deleted_idx".to_owned()));
        let page = cache.page(Rows::NotDeleted, 0, 100).unwrap();
        assert_eq!(page.len(), 10);
        let mut changes: Vec<_> = page.iter().take(9).map(|r| (r.rowid, true)).collect();
        cache.set_deleted_rows(&mut changes).unwrap();
        cache.commit().unwrap();
        assert!(indexes(&cache).contains(&"deleted_idx".to_owned()));
        assert_eq!(cache.count(Rows::NotDeleted).unwrap(), 1);
        cache.begin().unwrap();
        assert!(!cache.begin_mass_flagging(1).unwrap(), "most rows known deleted: the index stays");
        cache.commit().unwrap();
    }
}
