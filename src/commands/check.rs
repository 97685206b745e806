//! `check`: find where the database, the media store and the object store
//! disagree, and with `--fix` remove the orphans.
//!
//! 1. thumbnail rows, or thumbnail files, whose media row is gone;
//! 2. files in the media store that no row knows;
//! 3. rows whose bytes exist nowhere: no original on disk, no object
//!    (lost media: reported, never "fixed");
//! 4. objects in the store that no row knows.
//!
//! Files and objects younger than the grace period are left alone: Synapse
//! writes a file before its row. Rows, objects and orphans are indexed in a
//! temporary SQLite file next to cache.db, so memory stays flat however big
//! the homeserver is. `--fix` refuses to act when most of what it sees is
//! unknown: that is a wrong database, media store or prefix, not orphans.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, anyhow};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::json;

use super::Context;
use crate::cache::{Cache, Rows};
use crate::config::dendrite::{DendriteOptions, DendriteSettings};
use crate::config::settings::{Settings, StoreOptions};
use crate::duration::parse_duration;
use crate::error::Failure;
use crate::homeserver_db::{HomeserverDb, MediaDb, MediaKey};
use crate::lock::{RunLock, StoreLock};
use crate::media_store::fs::WalkedKind;
use crate::media_store::{MediaKind, MediaPaths, MediaStore, StoredFile};
use crate::report::{self, naturalsize};
use crate::store::{self, ErrorKind, ObjectStore, StoreError};

pub const DEFAULT_GRACE: &str = "1h";

/// One kind of finding: how many, how big, a few examples.
#[derive(Debug, Default, Clone)]
struct Finding {
    count: u64,
    bytes: u64,
    samples: Vec<String>,
    fixed: u64,
}

impl Finding {
    fn add(&mut self, sample: String, bytes: u64, keep: usize) {
        self.add_n(1, sample, bytes, keep);
    }

    fn add_n(&mut self, n: u64, sample: String, bytes: u64, keep: usize) {
        self.count += n;
        self.bytes += bytes;
        if self.samples.len() < keep {
            self.samples.push(sample);
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({"count": self.count, "bytes": self.bytes, "samples": self.samples, "fixed": self.fixed})
    }
}

#[derive(Debug, Default)]
struct Report {
    rows: u64,
    files: u64,
    objects: u64,
    orphan_thumbnail_rows: Finding,
    orphan_thumbnail_files: Finding,
    unknown_files: Finding,
    lost_media: Finding,
    unknown_objects: Finding,
    /// Paths in the store folders that are not Synapse's layout.
    not_media_files: Finding,
    /// Local files whose size is not what the homeserver recorded (a
    /// fetch-back that broke off): `migrate` repairs them from the store.
    damaged_files: Finding,
    /// Keys under the prefix that are not Synapse's layout.
    not_media_objects: Finding,
    /// Objects the old swift_media_upload named by their absolute local
    /// path: Synapse's Swift provider looks for the relative path.
    absolute_named_objects: Finding,
    /// cache.db rows of media the database no longer has (a purge killed
    /// between its database commit and its cache.db update).
    stale_cache_rows: Finding,
    young: u64,
    fix_refused: Vec<String>,
    fix_failed: u64,
}

/// What `check` is asked to do.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Remove the orphans (not lost media).
    pub fix: bool,
    /// With `fix`: also when most of what is seen is unknown, or the
    /// database does not look like the live one.
    pub force: bool,
    pub grace_period: Option<Duration>,
    /// Examples of each finding to print.
    pub samples: usize,
    pub store: StoreOptions,
    /// A Dendrite homeserver instead of Synapse.
    pub dendrite: DendriteOptions,
}

mod dendrite;

/// The grace period of a run, with where it came from logged.
fn grace_period(ctx: &Context, args: &Options) -> Result<Duration> {
    let (grace, grace_source) = match (args.grace_period, &ctx.file.config.check.grace_period) {
        (Some(g), _) => (g, "--grace-period".to_owned()),
        (None, Some(text)) => {
            let source = ctx.file.source("check.grace_period");
            (parse_duration(text).map_err(|e| anyhow!("{source}: {e}"))?, source)
        }
        (None, None) => (parse_duration(DEFAULT_GRACE).expect("valid default"), "default".to_owned()),
    };
    log::debug!("grace period {} (from {grace_source})", crate::duration::short(grace));
    Ok(grace)
}

pub fn run(ctx: &Context, args: &Options) -> Result<()> {
    if let Some(settings) = DendriteSettings::resolve(&args.dendrite, &ctx.file)? {
        return dendrite::run(ctx, args, &settings);
    }
    let settings = Settings::resolve(&args.store, &ctx.file)?;
    let grace = grace_period(ctx, args)?;
    let _lock = RunLock::acquire(&ctx.cache_db, ctx.lock)?;
    let base = &settings.media_store_path;
    let media = MediaStore::open(base, true)?;
    crate::lock::warn_if_root_over(&media);
    let _store_lock = StoreLock::acquire(&media, ctx.lock)?;
    let store = settings.store.as_ref().map(|s| store::open(s, base)).transpose()?;
    let prefix = settings.store.as_ref().map(|s| s.prefix.clone()).unwrap_or_default();
    let mut db = if args.fix {
        HomeserverDb::connect_writable(&settings.database)?
    } else {
        HomeserverDb::connect(&settings.database)?
    };
    let index = Index::create(&ctx.cache_db)?;
    let young_before = SystemTime::now() - grace;
    let keep = args.samples;
    let mut r = Report::default();
    let server = settings.homeserver.server_name.clone().unwrap_or_else(|| "(local)".to_owned());

    // 1. A snapshot of the rows; 2. of the objects.
    let tx = index.conn.unchecked_transaction()?;
    db.media().for_each_media(&mut |m| {
        r.rows += 1;
        let row = &m.row;
        tx.prepare_cached("INSERT OR IGNORE INTO known VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?.execute(params![
            row.kind.as_str(),
            row.key.origin,
            row.location,
            row.key.media_id,
            m.no_bytes.unwrap_or(""),
            m.length
        ])?;
        Ok(())
    })?;
    db.media().for_each_thumbnail(&mut |t| {
        tx.prepare_cached("INSERT OR IGNORE INTO thumbs VALUES (?1, ?2, ?3, ?4, ?5)")?.execute(params![
            t.kind.as_str(),
            t.origin,
            t.location,
            t.name,
            t.length
        ])?;
        Ok(())
    })?;
    if let Some(store) = &store {
        log::info!("listing {} under {:?}", store.describe(), prefix);
        store.list(&prefix, &mut |o| {
            // An object whose age the store did not say is never taken as old.
            let modified = o
                .modified
                .map_or(i64::MAX, |t| t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64));
            tx.prepare_cached("INSERT OR IGNORE INTO objects VALUES (?1, ?2, ?3)")
                .and_then(|mut s| s.execute(params![o.key, o.size as i64, modified]))
                .map(|_| ())
                .map_err(|e| StoreError::new(ErrorKind::Local, format!("indexing objects: {e}")))
        })?;
    }
    tx.commit()?;

    // Thumbnail rows without media.
    let orphan_rows = orphan_thumbnail_rows(db.media(), &server, keep, &mut r)?;

    let stale = stale_cache_rows(&ctx.cache_db, &index, keep, &mut r)?;
    walk_files(&media, &index, young_before, keep, &mut r)?;
    find_lost(&media, &index, &prefix, &server, db.media(), keep, &mut r)?;
    if store.is_some() {
        find_unknown_objects(&index, &prefix, young_before, keep, &mut r)?;
    }

    if args.fix {
        super::purge::ensure_live(db.media(), &settings.database.describe(), &media, args.force, "fix")?;
        fix(&media, store.as_deref(), db.media(), &index, &orphan_rows, args.force, &mut r)?;
        if !stale.is_empty() {
            Cache::open(&ctx.cache_db)?.remove(&stale)?;
            r.stale_cache_rows.fixed = stale.len() as u64;
        }
    }
    if store.is_none() {
        log::warn!(
            "no object store configured: media offloaded to a store count as lost; give the store (--bucket or homeserver.yaml)"
        );
    }
    finish(ctx, args.fix, grace, if store.is_some() { Stores::Configured } else { Stores::None }, &r)
}

/// Thumbnail rows whose media row is gone, as findings; returns their keys.
fn orphan_thumbnail_rows(db: &mut dyn MediaDb, server: &str, keep: usize, r: &mut Report) -> Result<Vec<MediaKey>> {
    let mut keys = Vec::new();
    for (key, n) in db.orphan_thumbnail_rows()? {
        r.orphan_thumbnail_rows.add_n(n, format!("{}: {n} thumbnail rows", key.mxc(server)), 0, keep);
        keys.push(key);
    }
    Ok(keys)
}

/// Print the summary; the exit status follows from what is left.
fn finish(ctx: &Context, fix: bool, grace: Duration, stores: Stores, r: &Report) -> Result<()> {
    report::print(ctx.json, &Summary { fix, grace, stores, r });
    let args_fix = fix;
    let open = r.lost_media.count
        + r.damaged_files.count
        + if args_fix {
            0
        } else {
            r.orphan_thumbnail_rows.count
                + r.orphan_thumbnail_files.count
                + r.unknown_files.count
                + r.unknown_objects.count
                + r.stale_cache_rows.count
        };
    if r.fix_failed > 0 || !r.fix_refused.is_empty() {
        return Err(Failure::NotFixed { count: r.fix_failed + r.fix_refused.len() as u64 }.into());
    }
    match open {
        0 => Ok(()),
        count => Err(Failure::Found { count }.into()),
    }
}

/// The temporary index: known rows, objects, orphans found.
struct Index {
    conn: Connection,
    path: PathBuf,
}

impl Index {
    fn create(cache_db: &Path) -> Result<Self> {
        let mut name = cache_db.as_os_str().to_owned();
        name.push(".check.tmp");
        let path = PathBuf::from(name);
        let _ = std::fs::remove_file(&path);
        let conn = Connection::open(&path).with_context(|| format!("could not create {}", path.display()))?;
        conn.execute_batch(
            "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
             CREATE TABLE thumbs (kind TEXT, origin TEXT, fsid TEXT, name TEXT, length INTEGER,
                                  PRIMARY KEY (kind, origin, fsid, name)) WITHOUT ROWID;
             CREATE TABLE known (kind TEXT, origin TEXT, fsid TEXT, media_id TEXT, flag TEXT, length INTEGER,
                                 PRIMARY KEY (kind, origin, fsid)) WITHOUT ROWID;
             CREATE TABLE objects (key TEXT PRIMARY KEY, size INTEGER, modified INTEGER) WITHOUT ROWID;
             CREATE TABLE orphans (what TEXT, path TEXT, size INTEGER);",
        )
        .with_context(|| format!("could not set up {}", path.display()))?;
        Ok(Self { conn, path })
    }

    fn knows(&self, f: &StoredFile) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM known WHERE kind = ?1 AND origin = ?2 AND fsid = ?3")?
            .query_row(params![f.kind.as_str(), f.origin, f.filesystem_id], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// The length the homeserver recorded for a known file, if any.
    fn recorded_length(&self, f: &StoredFile, rel: &str) -> Result<Option<u64>> {
        let length: Option<Option<i64>> = if f.thumbnail {
            let name = rel.rsplit('/').next().unwrap_or_default();
            self.conn
                .prepare_cached(
                    "SELECT length FROM thumbs WHERE kind = ?1 AND origin = ?2 AND fsid = ?3 AND name = ?4",
                )?
                .query_row(params![f.kind.as_str(), f.origin, f.filesystem_id, name], |r| r.get(0))
                .optional()?
        } else {
            self.conn
                .prepare_cached("SELECT length FROM known WHERE kind = ?1 AND origin = ?2 AND fsid = ?3")?
                .query_row(params![f.kind.as_str(), f.origin, f.filesystem_id], |r| r.get(0))
                .optional()?
        };
        Ok(length.flatten().and_then(|l| u64::try_from(l).ok()))
    }

    fn orphan(&self, what: &str, path: &str, size: u64) -> Result<()> {
        self.conn.prepare_cached("INSERT INTO orphans VALUES (?1, ?2, ?3)")?.execute(params![
            what,
            path,
            size as i64
        ])?;
        Ok(())
    }
}

impl Drop for Index {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// cache.db rows whose media the database no longer has. Returns their keys.
fn stale_cache_rows(cache_db: &Path, index: &Index, keep: usize, r: &mut Report) -> Result<Vec<(String, String)>> {
    let mut stale = Vec::new();
    if !cache_db.exists() {
        return Ok(stale);
    }
    let cache = Cache::reader_of(cache_db)?;
    let mut after = 0;
    loop {
        let page = cache.page(Rows::All, after, super::PAGE)?;
        let Some(last) = page.last() else { break };
        after = last.rowid;
        for row in page {
            let Some(kind) = MediaKind::parse(&row.kind) else { continue };
            let stored = StoredFile {
                kind,
                origin: row.origin.clone(),
                filesystem_id: row.filesystem_id.clone(),
                thumbnail: false,
            };
            if !index.knows(&stored)? {
                let who = if row.origin.is_empty() {
                    row.media_id.clone()
                } else {
                    format!("{}/{}", row.origin, row.media_id)
                };
                r.stale_cache_rows.add(who, 0, keep);
                stale.push((row.origin, row.media_id));
            }
        }
    }
    Ok(stale)
}

/// A walked entry counted: a regular file's size and age, or `None` for
/// anything else (reported as not media).
fn counted_file(
    media: &MediaStore,
    entry: &crate::media_store::fs::Walked,
    keep: usize,
    r: &mut Report,
) -> Option<(u64, SystemTime)> {
    let found = match entry.what {
        WalkedKind::File { size, modified } => Some((size, modified)),
        // A walk that read names only: the size is read now.
        WalkedKind::Named => match media.stat_rel(&entry.rel) {
            Ok(Some(meta)) => Some(meta),
            Ok(None) => return None,
            Err(_) => None,
        },
        WalkedKind::Other => None,
    };
    match found {
        Some(meta) => {
            r.files += 1;
            Some(meta)
        }
        None => {
            r.not_media_files.add(format!("{} (not a regular file)", entry.rel), 0, keep);
            None
        }
    }
}

/// Kinds 1 (thumbnail files) and 2: every file under the store's folders.
fn walk_files(media: &MediaStore, index: &Index, young_before: SystemTime, keep: usize, r: &mut Report) -> Result<()> {
    let tx = index.conn.unchecked_transaction()?;
    media.walk(&mut |entry| {
        let Some((size, modified)) = counted_file(media, &entry, keep, r) else { return Ok(()) };
        let Some(stored) = StoredFile::parse(&entry.rel) else {
            r.not_media_files.add(entry.rel, size, keep);
            return Ok(());
        };
        if index.knows(&stored)? {
            if let Some(length) = index.recorded_length(&stored, &entry.rel)?
                && length != size
                && modified <= young_before
            {
                r.damaged_files.add(
                    format!("{} ({size} bytes; the homeserver recorded {length})", entry.rel),
                    size,
                    keep,
                );
            }
            return Ok(());
        }
        if modified > young_before {
            r.young += 1;
            return Ok(());
        }
        let finding = if stored.thumbnail { &mut r.orphan_thumbnail_files } else { &mut r.unknown_files };
        finding.add(format!("{} ({})", entry.rel, naturalsize(size)), size, keep);
        index.orphan("file", &entry.rel, size)
    })?;
    tx.commit()?;
    Ok(())
}

/// Kind 3: rows whose original is neither on disk nor in the store.
fn find_lost(
    media: &MediaStore,
    index: &Index,
    prefix: &str,
    server: &str,
    db: &mut dyn MediaDb,
    keep: usize,
    r: &mut Report,
) -> Result<()> {
    let mut stmt = index.conn.prepare("SELECT kind, origin, fsid, media_id FROM known WHERE flag = ''")?;
    let mut rows = stmt.query([])?;
    let mut candidates = Vec::new();
    while let Some(row) = rows.next()? {
        let (kind, origin, fsid, media_id): (String, String, String, String) =
            (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
        let kind = MediaKind::parse(&kind).expect("written above");
        let paths = match MediaPaths::new(&origin, &media_id, &fsid, kind) {
            Ok(p) => p,
            Err(invalid) => {
                log::warn!("{invalid}");
                continue;
            }
        };
        if media.has_file(&paths.original)? {
            continue;
        }
        let key = format!("{prefix}{}", paths.original);
        let in_store = index
            .conn
            .prepare_cached("SELECT 1 FROM objects WHERE key = ?1")?
            .query_row([&key], |_| Ok(()))
            .optional()?
            .is_some();
        if !in_store {
            candidates.push((origin, media_id, paths.original));
        }
    }
    // Synapse may have deleted the row meanwhile: only a row still there is lost.
    for (origin, media_id, original) in candidates {
        let key = MediaKey::new(origin, media_id);
        if db.has_media(&key)? {
            r.lost_media.add(format!("{} ({original})", key.mxc(server)), 0, keep);
        }
    }
    Ok(())
}

/// Kind 4: objects under the prefix that no row knows.
fn find_unknown_objects(
    index: &Index,
    prefix: &str,
    young_before: SystemTime,
    keep: usize,
    r: &mut Report,
) -> Result<()> {
    let young_secs = young_before.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let tx = index.conn.unchecked_transaction()?;
    let mut stmt = index.conn.prepare("SELECT key, size, modified FROM objects")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let (key, size, modified): (String, i64, i64) = (row.get(0)?, row.get(1)?, row.get(2)?);
        r.objects += 1;
        let size = size.max(0) as u64;
        let Some(stored) = key.strip_prefix(prefix).and_then(StoredFile::parse) else {
            if let Some(relative) = store::swift::absolute_named(&key) {
                r.absolute_named_objects.add(format!("{key} (should be {prefix}{relative})"), size, keep);
                continue;
            }
            r.not_media_objects.add(key, size, keep);
            continue;
        };
        if index.knows(&stored)? {
            continue;
        }
        if modified > young_secs {
            r.young += 1;
            continue;
        }
        r.unknown_objects.add(format!("{key} ({})", naturalsize(size)), size, keep);
        index.orphan("object", &key, size)?;
    }
    drop(rows);
    drop(stmt);
    tx.commit()?;
    Ok(())
}

/// Whether `unknown` out of `seen` looks like orphans rather than a wrong
/// database, media store or prefix.
fn plausible(unknown: u64, seen: u64) -> bool {
    unknown <= 10 || unknown * 2 <= seen
}

fn fix(
    media: &MediaStore,
    store: Option<&dyn ObjectStore>,
    db: &mut dyn MediaDb,
    index: &Index,
    orphan_rows: &[MediaKey],
    force: bool,
    r: &mut Report,
) -> Result<()> {
    for key in orphan_rows {
        r.orphan_thumbnail_rows.fixed += db.delete_orphan_thumbnail_rows(key)?;
    }
    let files_unknown = r.unknown_files.count + r.orphan_thumbnail_files.count;
    let files_ok = force || plausible(files_unknown, r.files);
    if !files_ok {
        r.fix_refused.push(format!(
            "{files_unknown} of {} files are unknown to the database: is this the media store of this database? \
             Nothing was deleted (--force deletes them anyway)",
            r.files
        ));
    }
    let objects_ok = force || plausible(r.unknown_objects.count, r.objects);
    if !objects_ok {
        r.fix_refused.push(format!(
            "{} of {} objects are unknown to the database: is this the right bucket and prefix? \
             Nothing was deleted (--force deletes them anyway)",
            r.unknown_objects.count, r.objects
        ));
    }
    if force && !(plausible(files_unknown, r.files) && plausible(r.unknown_objects.count, r.objects)) {
        log::warn!("--force: removing orphans although most of what check sees is unknown to the database");
    }
    let mut stmt = index.conn.prepare("SELECT what, path FROM orphans")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let (what, path): (String, String) = (row.get(0)?, row.get(1)?);
        if what == "object" {
            let Some(store) = store.filter(|_| objects_ok) else { continue };
            match store.delete(&path) {
                Ok(()) => r.unknown_objects.fixed += 1,
                Err(e) => {
                    log::error!("{e}");
                    r.fix_failed += 1;
                }
            }
        } else if files_ok {
            match media.remove_rel(&path) {
                Ok(true) => {
                    if StoredFile::parse(&path).is_some_and(|f| f.thumbnail) {
                        r.orphan_thumbnail_files.fixed += 1;
                    } else {
                        r.unknown_files.fixed += 1;
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    log::error!("deleting {path}: {e}");
                    r.fix_failed += 1;
                }
            }
        }
    }
    Ok(())
}

/// `check`'s summary: each kind of finding, numbered, with samples.
struct Summary<'a> {
    fix: bool,
    grace: Duration,
    stores: Stores,
    r: &'a Report,
}

/// Whether objects were checked, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stores {
    Configured,
    None,
    /// Dendrite reads no object store.
    Dendrite,
}

impl report::Summary for Summary<'_> {
    fn lines(&self) -> Vec<String> {
        let (r, fix) = (self.r, self.fix);
        let count = report::count;
        let mut lines = vec![format!(
            "Checked {}, {}{}",
            count(r.rows, "media row", "media rows"),
            count(r.files, "file", "files"),
            match self.stores {
                Stores::Configured => format!(", {}", count(r.objects, "object", "objects")),
                Stores::None => " (no object store configured)".to_owned(),
                Stores::Dendrite => String::new(),
            }
        )];
        let mut section = |title: &str, f: &Finding, fixable: bool| {
            let size = if f.bytes > 0 { format!(" ({})", naturalsize(f.bytes)) } else { String::new() };
            let fixed = if fix && fixable { format!("; removed {}", f.fixed) } else { String::new() };
            lines.push(format!("{title}: {}{size}{fixed}", f.count));
            for s in &f.samples {
                lines.push(format!("    {s}"));
            }
        };
        section("1. Thumbnail rows without media", &r.orphan_thumbnail_rows, true);
        let dendrite = self.stores == Stores::Dendrite;
        if !dendrite {
            // Under Dendrite a thumbnail file without a row is normal: the
            // folder is shared by every row with the hash.
            section("2. Thumbnail files without media", &r.orphan_thumbnail_files, true);
        }
        section("3. Files no row knows", &r.unknown_files, true);
        if dendrite {
            section("4. Lost media (no file on disk)", &r.lost_media, false);
        } else {
            section("4. Lost media (no bytes on disk or in the store)", &r.lost_media, false);
        }
        if self.stores == Stores::Configured {
            section("5. Objects no row knows", &r.unknown_objects, true);
        }
        if dendrite {
            section("6. Files whose size is not the homeserver's record", &r.damaged_files, false);
        } else {
            section(
                "6. Local files whose size is not the homeserver's record (migrate repairs them)",
                &r.damaged_files,
                false,
            );
        }
        if r.stale_cache_rows.count > 0 {
            section("7. cache.db rows of media that no longer exist", &r.stale_cache_rows, true);
        }
        if r.absolute_named_objects.count > 0 {
            section(
                "Objects named by their absolute local path (the old swift_media_upload), which Synapse cannot find",
                &r.absolute_named_objects,
                false,
            );
            lines.push(store::swift::ABSOLUTE_NAMES_FIX.to_owned());
        }
        if self.stores == Stores::None {
            lines.push("5. Objects no row knows: not checked (no object store configured)".to_owned());
        }
        if r.young > 0 {
            lines.push(format!(
                "Left alone: {} younger than {}",
                count(r.young, "file or object", "files and objects"),
                crate::duration::short(self.grace)
            ));
        }
        if r.not_media_files.count + r.not_media_objects.count > 0 {
            lines.push(format!(
                "Left alone: {} and {} that are not in {}'s layout",
                count(r.not_media_files.count, "file", "files"),
                count(r.not_media_objects.count, "object", "objects"),
                if self.stores == Stores::Dendrite { "Dendrite" } else { "Synapse" }
            ));
        }
        for why in &r.fix_refused {
            lines.push(format!("Not fixed: {why}"));
        }
        lines
    }

    fn json(&self) -> serde_json::Value {
        let r = self.r;
        json!({"command": "check", "fix": self.fix, "grace_period_secs": self.grace.as_secs(), "object_store": self.stores == Stores::Configured,
               "homeserver": if self.stores == Stores::Dendrite { "dendrite" } else { "synapse" },
               "rows": r.rows, "files": r.files, "objects": r.objects,
               "orphan_thumbnail_rows": r.orphan_thumbnail_rows.json(),
               "orphan_thumbnail_files": r.orphan_thumbnail_files.json(),
               "unknown_files": r.unknown_files.json(), "lost_media": r.lost_media.json(),
               "unknown_objects": r.unknown_objects.json(), "not_media_files": r.not_media_files.json(),
               "not_media_objects": r.not_media_objects.json(), "stale_cache_rows": r.stale_cache_rows.json(),
               "damaged_files": r.damaged_files.json(), "young": r.young,
               "absolute_named_objects": r.absolute_named_objects.json(),
               "fix_refused": r.fix_refused, "fix_failed": r.fix_failed})
    }

    fn is_noop(&self) -> bool {
        let r = self.r;
        [
            &r.orphan_thumbnail_rows,
            &r.orphan_thumbnail_files,
            &r.unknown_files,
            &r.lost_media,
            &r.unknown_objects,
            &r.damaged_files,
            &r.stale_cache_rows,
        ]
        .iter()
        .all(|f| f.count == 0)
            && r.fix_refused.is_empty()
            && r.fix_failed == 0
    }
}
