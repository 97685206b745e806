//! `check-deleted BASE_PATH`: record which media no longer have any file
//! on local disk, and reopen those whose files came back (Synapse fetches
//! offloaded originals back from the store, e.g. to make a thumbnail).
//!
//! A media people are viewing is fetched back and should stay on disk:
//! where the run knows the cut-off and the database (`update`, `migrate`),
//! a media is reopened only while it is still past the cut-off, so it does
//! not bounce between disk and store every night.

use std::path::Path;

use anyhow::Result;
use serde_json::json;

use super::{Context, PAGE};
use crate::cache::{Cache, CacheRow, Rows};
use crate::error::Failure;
use crate::homeserver_db::HomeserverDb;
use crate::lock::StoreLock;
use crate::media_store::{KnownFolders, MediaStore, StoredFile};
use crate::report::{self, Counting, Progress};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Checked {
    pub checked: u64,
    pub marked_deleted: u64,
    pub reopened: u64,
    /// Files back on disk of media used since the cut-off: left as they are.
    pub in_use: u64,
    pub failed: u64,
}

impl Checked {
    pub fn into_result(&self) -> Result<()> {
        match self.failed {
            0 => Ok(()),
            count => Err(Failure::Partial { count }.into()),
        }
    }

    /// "Updated N as deleted", as the Python tool says it, then ours.
    pub fn lines_for(&self, dry_run: bool) -> Vec<String> {
        let mut lines = vec![
            format!("{} {} as deleted", report::did(dry_run, "Updated", "mark"), self.marked_deleted),
            format!("{} {} whose files are back", report::did(dry_run, "Reopened", "reopen"), self.reopened),
        ];
        if self.in_use > 0 {
            lines.push(format!(
                "{} {} fetched back and used since the cut-off on disk",
                report::did(dry_run, "Left", "leave"),
                self.in_use
            ));
        }
        if self.failed > 0 {
            lines.push(format!(
                "{} could not be checked (see the messages above)",
                report::count(self.failed, "row", "rows")
            ));
        }
        lines
    }

    pub fn is_noop(&self) -> bool {
        self.marked_deleted == 0 && self.reopened == 0 && self.failed == 0
    }

    pub fn json(&self) -> serde_json::Value {
        json!({"checked": self.checked, "marked_deleted": self.marked_deleted, "reopened": self.reopened,
               "in_use": self.in_use, "failed": self.failed})
    }
}

/// What decides whether a media whose files are back is reopened: the
/// cut-off, and the database to look its last use up in.
pub struct Reopen<'a> {
    pub cutoff_ms: i64,
    pub db: &'a mut HomeserverDb,
}

pub fn run(ctx: &Context, base: &Path) -> Result<()> {
    let (_lock, mut cache) = ctx.open_cache()?;
    let media = MediaStore::open(base, cache.any(Rows::All)?)?;
    crate::lock::warn_if_root_over(&media);
    let _store_lock = StoreLock::acquire(&media, ctx.lock)?;
    let checked = check(&mut cache, &media, None)?;
    report::print(ctx.json, &Summary(&checked));
    checked.into_result()
}

struct Summary<'a>(&'a Checked);

impl report::Summary for Summary<'_> {
    fn lines(&self) -> Vec<String> {
        self.0.lines_for(false)
    }

    fn json(&self) -> serde_json::Value {
        let mut value = self.0.json();
        value["command"] = "check-deleted".into();
        value
    }

    fn is_noop(&self) -> bool {
        self.0.is_noop()
    }
}

/// What is left on disk of a row not marked deleted.
enum Change {
    Present,
    Gone,
    Failed,
}

fn examine(media: &MediaStore, absent: &KnownFolders, row: &CacheRow) -> Change {
    let paths = match row.paths() {
        Ok(p) => p,
        Err(invalid) => {
            log::error!("{invalid}");
            return Change::Failed;
        }
    };
    match media.any_file_noting(&paths, absent) {
        Ok(true) => Change::Present,
        Ok(false) => Change::Gone,
        Err(e) => {
            log::error!("checking {}: {e}", paths.original);
            Change::Failed
        }
    }
}

/// Whether a file of a media that is back on disk disagrees with the
/// homeserver's record of its length: a fetch-back that failed half-way.
/// Such a media is reopened although in use, so `migrate` can repair it.
fn damaged(media: &MediaStore, db: &mut HomeserverDb, row: &CacheRow) -> bool {
    let (Ok(paths), Ok(Some(record))) = (row.paths(), db.media_record(&row.origin, &row.media_id)) else {
        return false;
    };
    let Ok(listing) = media.files_of(&paths) else { return false };
    listing.files.iter().any(|f| {
        let thumbnail = (f.rel != paths.original).then(|| f.name());
        let bad = record.expected(thumbnail).is_some_and(|e| e.length != f.size);
        if bad {
            log::warn!(
                "{}: back on disk with {} bytes, not the {} the homeserver recorded; reopened so it can be repaired",
                f.rel,
                f.size,
                record.expected(thumbnail).map_or(0, |e| e.length)
            );
        }
        bad
    })
}

/// The work of `check-deleted`, shared with `update` and `migrate`.
///
/// Two questions, each asked where its answer is cheap to find, so that
/// the daily run costs what is on disk, not the whole history:
/// 1. Which rows not marked deleted have nothing left on disk? Each such
///    row is looked up (after offloading, only the day's new rows).
/// 2. Which rows marked deleted have files again? The local store is
///    walked (after offloading it holds only recent and pulled-back
///    files) and each media found there is looked up in cache.db.
pub fn check(cache: &mut Cache, media: &MediaStore, mut reopen: Option<Reopen<'_>>) -> Result<Checked> {
    let mut result = Checked::default();
    cache.begin()?;
    let open = cache.count(Rows::NotDeleted)?;
    let most_open = cache.begin_mass_flagging(open)?;
    if most_open {
        log::debug!("most rows are open: deleted_idx is built again at the end, shared folders are listed");
    }
    mark_gone(cache, media, open, most_open, &mut result)?;
    if cache.any(Rows::Deleted)? {
        find_returned(cache, media, reopen.as_mut(), &mut result)?;
    }
    cache.commit()?;
    Ok(result)
}

/// Question 1: rows not marked deleted, in pages, their files looked up
/// over a few threads (the stat calls dominate). The next page is looked
/// up while this one's flags are written: the disk's lookups and cache.db's
/// B-tree work then share the cores instead of taking turns.
///
/// `most_open`: most rows are asked about (a first run), so each folder
/// shared by many media is read once and the rows in it answered from that
/// listing, instead of one path lookup per row.
fn mark_gone(cache: &mut Cache, media: &MediaStore, total: u64, most_open: bool, result: &mut Checked) -> Result<()> {
    let mut progress = Progress::new("check-deleted", "media", total, Counting::Items);
    let threads = std::thread::available_parallelism().map_or(4, |n| n.get() * 4).min(16);
    let absent = if most_open { KnownFolders::listing() } else { KnownFolders::default() };
    let absent = &absent;
    std::thread::scope(|scope| {
        let look_up = |page: Vec<CacheRow>| {
            scope.spawn(move || {
                let chunk = page.len().div_ceil(threads).max(1);
                let changes: Vec<Change> = std::thread::scope(|inner| {
                    let handles: Vec<_> = page
                        .chunks(chunk)
                        .map(|rows| {
                            inner.spawn(move || rows.iter().map(|row| examine(media, absent, row)).collect::<Vec<_>>())
                        })
                        .collect();
                    handles.into_iter().flat_map(|h| h.join().expect("checker thread panicked")).collect()
                });
                (page, changes)
            })
        };
        let first = cache.page(Rows::NotDeleted, 0, PAGE)?;
        let mut pending = (!first.is_empty()).then(|| look_up(first));
        while let Some(handle) = pending.take() {
            let (page, changes) = handle.join().expect("checker thread panicked");
            let after = page.last().map_or(0, |row| row.rowid);
            // Rows past this page: this page's writes do not touch them.
            let next = cache.page(Rows::NotDeleted, after, PAGE)?;
            pending = (!next.is_empty()).then(|| look_up(next));
            let mut updates = Vec::new();
            for (row, change) in page.iter().zip(changes) {
                match change {
                    Change::Gone => {
                        result.marked_deleted += 1;
                        updates.push((row.rowid, true));
                    }
                    Change::Present => {}
                    Change::Failed => result.failed += 1,
                }
            }
            cache.set_deleted_rows(&mut updates)?;
            crate::faults::point("check-deleted-page");
            result.checked += page.len() as u64;
            progress.advance(page.len() as u64, 0, 0);
        }
        Ok::<_, anyhow::Error>(())
    })?;
    progress.finish();
    Ok(())
}

/// Reopened rows written per statement batch (see `find_returned`).
const REOPEN_BATCH: usize = 16_384;

/// Question 2: every media with something in the local store, looked up
/// among the rows marked deleted; those found are reopened (unless in use).
fn find_returned(
    cache: &mut Cache,
    media: &MediaStore,
    mut reopen: Option<&mut Reopen<'_>>,
    result: &mut Checked,
) -> Result<()> {
    let mut progress = Progress::counting_up("check-deleted", "files on disk");
    // Each folder's entries come together, in name order: a media's
    // thumbnails come one after another, and are looked up once.
    let mut last: Option<StoredFile> = None;
    // Reopened rows are written in rowid order, a batch at a time, not one
    // scattered page write each; until then they are skipped when another
    // of their files (the thumbnails' tree) comes up in the walk.
    let mut reopened = std::collections::HashSet::new();
    let write = |cache: &mut Cache, reopened: &mut std::collections::HashSet<i64>| {
        let mut rows: Vec<_> = reopened.drain().map(|rowid| (rowid, false)).collect();
        cache.set_deleted_rows(&mut rows)
    };
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get() * 2).min(8);
    media.walk_parallel(threads, &mut |entry| {
        progress.advance(1, 0, 0);
        let Some(stored) = StoredFile::parse(&entry.rel) else { return Ok(()) };
        if last.as_ref().is_some_and(|l| {
            l.kind == stored.kind && l.origin == stored.origin && l.filesystem_id == stored.filesystem_id
        }) {
            return Ok(());
        }
        for row in cache.deleted_rows_named(&stored)? {
            if reopened.contains(&row.rowid) {
                continue;
            }
            result.checked += 1;
            let paths = match row.paths() {
                Ok(p) => p,
                Err(invalid) => {
                    log::error!("{invalid}");
                    result.failed += 1;
                    continue;
                }
            };
            // By the same rule as question 1 (a lone folder is not a file).
            match media.any_file(&paths) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    log::error!("checking {}: {e}", paths.original);
                    result.failed += 1;
                    continue;
                }
            }
            if let Some(r) = reopen.as_deref_mut() {
                match r.db.last_used(&row.origin, &row.media_id) {
                    Ok(Some(used)) if used >= r.cutoff_ms && !damaged(media, r.db, &row) => {
                        log::debug!(
                            "{}{}: back on disk and used since the cut-off; left there",
                            row.origin,
                            row.media_id
                        );
                        result.in_use += 1;
                        continue;
                    }
                    Ok(None) => {
                        log::debug!("{}{}: back on disk, but no longer in the database", row.origin, row.media_id);
                        continue;
                    }
                    Ok(Some(_)) => {}
                    Err(e) => {
                        log::error!("looking up {}{}: {e:#}", row.origin, row.media_id);
                        result.failed += 1;
                        continue;
                    }
                }
            }
            log::info!("files of {}{} are back on disk; it will be offloaded again", row.origin, row.media_id);
            result.reopened += 1;
            reopened.insert(row.rowid);
            if reopened.len() >= REOPEN_BATCH {
                write(cache, &mut reopened)?;
            }
        }
        last = Some(stored);
        Ok(())
    })?;
    write(cache, &mut reopened)?;
    progress.finish();
    Ok(())
}
