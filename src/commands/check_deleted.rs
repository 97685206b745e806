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
use crate::media_store::MediaStore;
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
    let media = MediaStore::open(base, cache.count(Rows::All)? > 0)?;
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

/// What a row's state should become, if it changes.
enum Change {
    Keep,
    Set(bool),
    Failed,
}

fn examine(media: &MediaStore, row: &CacheRow) -> Change {
    let paths = match row.paths() {
        Ok(p) => p,
        Err(invalid) => {
            log::error!("{invalid}");
            return Change::Failed;
        }
    };
    match media.any_file(&paths) {
        Ok(present) if present == row.known_deleted => Change::Set(!present),
        Ok(_) => Change::Keep,
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
pub fn check(cache: &mut Cache, media: &MediaStore, mut reopen: Option<Reopen<'_>>) -> Result<Checked> {
    let total = cache.count(Rows::All)?;
    let mut progress = Progress::new("check-deleted", "media", total, Counting::Items);
    let threads = std::thread::available_parallelism().map_or(4, |n| n.get() * 4).min(16);
    let mut result = Checked::default();
    let mut after = 0;
    cache.begin()?;
    loop {
        let page = cache.page(Rows::All, after, PAGE)?;
        let Some(last) = page.last() else { break };
        after = last.rowid;
        // stat() calls dominate: spread them over a few threads.
        let chunk = page.len().div_ceil(threads);
        let changes: Vec<Change> = std::thread::scope(|scope| {
            let handles: Vec<_> = page
                .chunks(chunk)
                .map(|rows| scope.spawn(move || rows.iter().map(|row| examine(media, row)).collect::<Vec<_>>()))
                .collect();
            handles.into_iter().flat_map(|h| h.join().expect("checker thread panicked")).collect()
        });
        let mut updates = Vec::new();
        for (row, change) in page.iter().zip(changes) {
            match change {
                Change::Keep => {}
                Change::Set(true) => {
                    result.marked_deleted += 1;
                    updates.push((row.origin.clone(), row.media_id.clone(), true));
                }
                Change::Set(false) => {
                    if let Some(r) = reopen.as_mut() {
                        match r.db.last_used(&row.origin, &row.media_id) {
                            Ok(Some(used)) if used >= r.cutoff_ms && !damaged(media, r.db, row) => {
                                log::debug!(
                                    "{}{}: back on disk and used since the cut-off; left there",
                                    row.origin,
                                    row.media_id
                                );
                                result.in_use += 1;
                                continue;
                            }
                            Ok(None) => {
                                log::debug!(
                                    "{}{}: back on disk, but no longer in the database",
                                    row.origin,
                                    row.media_id
                                );
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
                    updates.push((row.origin.clone(), row.media_id.clone(), false));
                }
                Change::Failed => result.failed += 1,
            }
        }
        cache.set_deleted(&updates)?;
        crate::faults::point("check-deleted-page");
        result.checked += page.len() as u64;
        progress.advance(page.len() as u64, 0, 0);
    }
    cache.commit()?;
    progress.finish();
    Ok(result)
}
