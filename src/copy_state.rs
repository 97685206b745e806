//! The state file of `copy`: which keys a copy between two stores has to
//! move, and which of them are verified at the destination, so a rerun
//! (after kill -9, say) moves only what is left.
//!
//! One SQLite file per copy, held under the run lock (`crate::lock`) for
//! as long as a run works on it. It remembers the pair of stores it was
//! made for: its "done" means nothing for another destination.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rusqlite::{Connection, OptionalExtension, params};

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS copy_pair (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        source TEXT NOT NULL,
        destination TEXT NOT NULL
    );
    -- key: the path in the media store's layout (without either side's prefix).
    -- status: 0 to do, 1 verified at the destination, 2 verified and the
    -- source object deleted. origin and media_id: the homeserver's media,
    -- for an original (NULL otherwise).
    CREATE TABLE IF NOT EXISTS copy_keys (
        key TEXT PRIMARY KEY NOT NULL,
        status INTEGER NOT NULL DEFAULT 0,
        origin TEXT,
        media_id TEXT
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS copy_keys_todo ON copy_keys(status) WHERE status < 2;
";

/// Where a key stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    ToDo = 0,
    Verified = 1,
    SourceDeleted = 2,
}

/// A key to copy, as discovery finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub key: String,
    /// `(origin, media_id)` of an original.
    pub media: Option<(String, String)>,
}

/// A key with its status, as a run walks them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub status: Status,
    pub media: Option<(String, String)>,
}

pub struct CopyState {
    conn: Connection,
    path: PathBuf,
}

impl CopyState {
    /// Open (or create) the state file for a copy from `source` to
    /// `destination`; a file made for another pair is refused.
    pub fn open(path: &Path, source: &str, destination: &str) -> Result<Self> {
        let existed = path.exists();
        let conn =
            Connection::open(path).with_context(|| format!("could not open the copy state file {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.execute_batch(SCHEMA)
            .with_context(|| format!("{} is not a copy state file (could not read it as one)", path.display()))?;
        if !existed && path != Path::new(":memory:") {
            crate::lock::hand_over(path);
        }
        let pair: Option<(String, String)> = conn
            .query_row("SELECT source, destination FROM copy_pair WHERE id = 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        match pair {
            None => {
                conn.execute(
                    "INSERT INTO copy_pair (id, source, destination) VALUES (1, ?1, ?2)",
                    [source, destination],
                )
                .with_context(|| format!("could not write to {}", path.display()))?;
            }
            Some((s, d)) if s == source && d == destination => {}
            Some((s, d)) => bail!(
                "the copy state file {} is for a copy from {s} to {d}, not from {source} to {destination}: \
                 give another --state file (or remove this one to start over)",
                path.display()
            ),
        }
        Ok(Self { conn, path: path.to_owned() })
    }

    /// Add keys not known yet (known ones keep their status).
    pub fn add(&mut self, keys: &[Wanted]) -> Result<u64> {
        let tx = self.conn.transaction()?;
        let mut added = 0;
        {
            let mut stmt =
                tx.prepare_cached("INSERT OR IGNORE INTO copy_keys (key, origin, media_id) VALUES (?1, ?2, ?3)")?;
            for w in keys {
                let (origin, media_id) = w.media.as_ref().map(|(o, m)| (Some(o), Some(m))).unwrap_or_default();
                added += stmt.execute(params![w.key, origin, media_id])? as u64;
            }
        }
        tx.commit().with_context(|| format!("could not write to {}", self.path.display()))?;
        Ok(added)
    }

    /// Whether `key` is one of the copy's keys.
    pub fn has(&self, key: &str) -> Result<bool> {
        Ok(self.conn.query_row("SELECT 1 FROM copy_keys WHERE key = ?1", [key], |_| Ok(())).optional()?.is_some())
    }

    /// Keys after `after` (in key order), up to `limit`.
    pub fn page(&self, after: &str, limit: usize) -> Result<Vec<Entry>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT key, status, origin, media_id FROM copy_keys WHERE key > ?1 ORDER BY key LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after, limit as i64], |r| {
            let status = match r.get::<_, i64>(1)? {
                1 => Status::Verified,
                2 => Status::SourceDeleted,
                _ => Status::ToDo,
            };
            let media = match (r.get::<_, Option<String>>(2)?, r.get::<_, Option<String>>(3)?) {
                (Some(o), Some(m)) => Some((o, m)),
                _ => None,
            };
            Ok(Entry { key: r.get(0)?, status, media })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Record new statuses, in one transaction.
    pub fn set(&mut self, changes: &[(String, Status)]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached("UPDATE copy_keys SET status = ?2 WHERE key = ?1")?;
            for (key, status) in changes {
                stmt.execute(params![key, *status as i64])?;
            }
        }
        crate::faults::point("copy-state-commit");
        tx.commit().with_context(|| format!("could not write to {}", self.path.display()))
    }

    pub fn count(&self) -> Result<u64> {
        Ok(self.conn.query_row("SELECT COUNT(*) FROM copy_keys", [], |r| r.get::<_, i64>(0))? as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_statuses_and_refuses_another_pair() {
        let dir = std::env::temp_dir().join(format!("copy-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.db");
        let _ = std::fs::remove_file(&path);
        let mut st = CopyState::open(&path, "a", "b").unwrap();
        let w = |k: &str| Wanted { key: k.into(), media: Some(("".into(), k.into())) };
        assert_eq!(st.add(&[w("x"), w("y")]).unwrap(), 2);
        st.set(&[("x".into(), Status::Verified)]).unwrap();
        assert_eq!(st.add(&[w("x"), w("z")]).unwrap(), 1);
        let page = st.page("", 10).unwrap();
        assert_eq!(
            page.iter().map(|e| (e.key.as_str(), e.status)).collect::<Vec<_>>(),
            [("x", Status::Verified), ("y", Status::ToDo), ("z", Status::ToDo)]
        );
        drop(st);
        let err = CopyState::open(&path, "a", "c").err().unwrap().to_string();
        assert!(err.contains("from a to b"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
