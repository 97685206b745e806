//! Reading and preparing `cache.db`, the state file shared with the Python tool.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

/// The Python tool's schema, verbatim (s3_media_upload 1.7.0).
pub const PYTHON_CACHE_SCHEMA: &str = r#"
    CREATE TABLE IF NOT EXISTS media (
        origin TEXT NOT NULL,  -- empty string if local media
        media_id TEXT NOT NULL,
        filesystem_id TEXT NOT NULL,
        -- Type is "local" or "remote"
        type TEXT NOT NULL,
        -- indicates whether the media and all its thumbnails have been deleted from the
        -- local cache
        known_deleted BOOLEAN NOT NULL
    );

    CREATE UNIQUE INDEX IF NOT EXISTS media_id_idx ON media(origin, media_id);
    CREATE INDEX IF NOT EXISTS deleted_idx ON media(known_deleted);
"#;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CacheRow {
    pub origin: String,
    pub media_id: String,
    pub filesystem_id: String,
    pub kind: String,
    pub known_deleted: bool,
}

impl CacheRow {
    pub fn local(media_id: &str) -> CacheRow {
        CacheRow {
            origin: String::new(),
            media_id: media_id.into(),
            filesystem_id: media_id.into(),
            kind: "local".into(),
            known_deleted: false,
        }
    }

    pub fn remote(origin: &str, media_id: &str, filesystem_id: &str) -> CacheRow {
        CacheRow {
            origin: origin.into(),
            media_id: media_id.into(),
            filesystem_id: filesystem_id.into(),
            kind: "remote".into(),
            known_deleted: false,
        }
    }

    pub fn deleted(mut self, d: bool) -> CacheRow {
        self.known_deleted = d;
        self
    }
}

/// Opened for writing but only read: after a kill -9 the file may have a
/// hot journal, which only a writer can roll back (as the tools do).
fn open_ro(path: &Path) -> Connection {
    assert!(path.exists(), "{} does not exist", path.display());
    let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    c.busy_timeout(std::time::Duration::from_secs(30)).unwrap();
    c.pragma_update(None, "query_only", true).unwrap();
    c
}

/// All rows, sorted.
#[track_caller]
pub fn cache_rows(path: &Path) -> Vec<CacheRow> {
    let c = open_ro(path);
    let mut st = c
        .prepare("SELECT origin, media_id, filesystem_id, type, known_deleted FROM media")
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut rows: Vec<CacheRow> = st
        .query_map([], |r| {
            Ok(CacheRow {
                origin: r.get(0)?,
                media_id: r.get(1)?,
                filesystem_id: r.get(2)?,
                kind: r.get(3)?,
                known_deleted: r.get::<_, i64>(4)? != 0,
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows.sort();
    rows
}

/// Every row rendered exactly, including SQLite's storage class of each
/// value (so `1` vs `'1'` vs `1.0` would show), sorted.
pub fn cache_dump(path: &Path) -> Vec<String> {
    let c = open_ro(path);
    let mut st = c
        .prepare(
            "SELECT quote(origin), quote(media_id), quote(filesystem_id), quote(type), \
             typeof(known_deleted) || ':' || quote(known_deleted) FROM media",
        )
        .unwrap();
    let mut v: Vec<String> = st
        .query_map([], |r| {
            Ok(format!(
                "{}|{}|{}|{}|{}",
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    v.sort();
    v
}

/// known_deleted of one row, if the row exists.
pub fn cache_known_deleted(path: &Path, origin: &str, media_id: &str) -> Option<bool> {
    cache_rows(path).into_iter().find(|r| r.origin == origin && r.media_id == media_id).map(|r| r.known_deleted)
}

/// Inserts rows (creating the file with the Python tool's schema if needed),
/// as the Python tool would have written them.
pub fn cache_insert(path: &Path, rows: &[CacheRow]) {
    let c = Connection::open(path).unwrap();
    c.execute_batch(PYTHON_CACHE_SCHEMA).unwrap();
    for r in rows {
        c.execute(
            "INSERT OR REPLACE INTO media (origin, media_id, filesystem_id, type, known_deleted) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![r.origin, r.media_id, r.filesystem_id, r.kind, r.known_deleted],
        )
        .unwrap();
    }
}

/// A structural description of the schema: every table's columns (name,
/// declared type, NOT NULL, default, primary key) and every index (name,
/// table, uniqueness, partial-ness, columns), sorted. Comments and
/// whitespace in the CREATE statements do not matter here.
pub fn cache_schema(path: &Path) -> Vec<String> {
    let c = open_ro(path);
    let mut out = Vec::new();
    let objs: Vec<(String, String, String)> = c
        .prepare(
            "SELECT type, name, tbl_name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' \
             AND name NOT LIKE 'media_offload_%' ORDER BY name",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (ty, name, tbl) in objs {
        match ty.as_str() {
            "table" => {
                let cols: Vec<String> = c
                    .prepare(&format!("PRAGMA table_info(\"{name}\")"))
                    .unwrap()
                    .query_map([], |r| {
                        Ok(format!(
                            "column {name}.{} type={} notnull={} default={:?} pk={}",
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?.to_uppercase(),
                            r.get::<_, i64>(3)?,
                            r.get::<_, Option<String>>(4)?,
                            r.get::<_, i64>(5)?
                        ))
                    })
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                out.push(format!("table {name}"));
                out.extend(cols);
            }
            "index" => {
                let (unique, partial): (i64, i64) = c
                    .prepare(&format!("PRAGMA index_list(\"{tbl}\")"))
                    .unwrap()
                    .query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(4)?)))
                    .unwrap()
                    .filter_map(|x| x.ok())
                    .find(|(n, _, _)| *n == name)
                    .map(|(_, u, p)| (u, p))
                    .unwrap_or((-1, -1));
                let cols: Vec<String> = c
                    .prepare(&format!("PRAGMA index_info(\"{name}\")"))
                    .unwrap()
                    .query_map([], |r| r.get::<_, String>(2))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                out.push(format!(
                    "index {name} on {tbl} unique={unique} partial={partial} columns=({})",
                    cols.join(",")
                ));
            }
            other => out.push(format!("{other} {name} on {tbl}")),
        }
    }
    out.sort();
    out
}

/// `(type, name, sql)` of every schema object of the Python tool's, exactly
/// as stored; asserts that everything else is media-offload's own
/// (`media_offload_*`, which the Python tool never reads).
pub fn cache_master_sql(path: &Path) -> Vec<(String, String, Option<String>)> {
    let c = open_ro(path);
    let mut st = c.prepare("SELECT type, name, sql FROM sqlite_master ORDER BY type, name").unwrap();
    let all: Vec<(String, String, Option<String>)> =
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().collect::<Result<_, _>>().unwrap();
    let (ours, theirs): (Vec<_>, Vec<_>) = all.into_iter().partition(|(_, name, _)| name.starts_with("media_offload_"));
    for (ty, name, _) in &ours {
        assert!(
            ["media_offload_remote_fsid_idx", "media_offload_state"].contains(&name.as_str()),
            "unexpected {ty} {name} in cache.db"
        );
    }
    theirs.into_iter().filter(|(_, name, _)| name != "sqlite_autoindex_media_offload_state_1").collect()
}
