//! `check-deleted BASE_PATH`: record which media no longer have any file
//! on local disk, and reopen those whose files came back (Synapse fetches
//! offloaded originals back from the store, e.g. to make a thumbnail).

use std::path::Path;

use anyhow::Result;
use serde_json::json;

use super::{Context, PAGE};
use crate::cache::{Cache, CacheRow, Rows};
use crate::error::Failure;
use crate::media_store;
use crate::report::{self, Progress};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Checked {
    pub checked: u64,
    pub marked_deleted: u64,
    pub reopened: u64,
    pub failed: u64,
}

impl Checked {
    pub fn into_result(&self) -> Result<()> {
        match self.failed {
            0 => Ok(()),
            count => Err(Failure::Partial { count }.into()),
        }
    }

    pub fn lines(&self) -> Vec<String> {
        vec![
            format!("Updated {} as deleted", self.marked_deleted),
            format!("Reopened {} whose files are back", self.reopened),
        ]
    }
}

pub fn run(ctx: &Context, base: &Path) -> Result<()> {
    let (_lock, mut cache) = ctx.open_cache()?;
    let checked = check(&mut cache, base)?;
    report::summary(
        ctx.json,
        &checked.lines(),
        json!({"command": "check-deleted", "checked": checked.checked, "marked_deleted": checked.marked_deleted,
               "reopened": checked.reopened, "failed": checked.failed}),
    );
    checked.into_result()
}

/// What a row's state should become, if it changes.
enum Change {
    Keep,
    Set(bool),
    Failed,
}

fn examine(base: &Path, row: &CacheRow) -> Change {
    let paths = match row.paths() {
        Ok(p) => p,
        Err(invalid) => {
            log::error!("{invalid}");
            return Change::Failed;
        }
    };
    match media_store::any_local_file(base, &paths) {
        Ok(present) if present == row.known_deleted => Change::Set(!present),
        Ok(_) => Change::Keep,
        Err(e) => {
            log::error!("checking {}: {e}", paths.original);
            Change::Failed
        }
    }
}

/// The work of `check-deleted`, shared with `update` and `demo`.
pub fn check(cache: &mut Cache, base: &Path) -> Result<Checked> {
    let total = cache.count(Rows::All)?;
    media_store::check_base_path(base, total > 0)?;
    let mut progress = Progress::new("check-deleted", "media", total, false);
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
                .map(|rows| scope.spawn(move || rows.iter().map(|row| examine(base, row)).collect::<Vec<_>>()))
                .collect();
            handles.into_iter().flat_map(|h| h.join().expect("checker thread panicked")).collect()
        });
        let mut updates = Vec::new();
        for (row, change) in page.iter().zip(changes) {
            match change {
                Change::Keep => {}
                Change::Set(deleted) => {
                    if deleted {
                        result.marked_deleted += 1;
                    } else {
                        log::info!(
                            "files of {}{} are back on disk; it will be offloaded again",
                            row.origin,
                            row.media_id
                        );
                        result.reopened += 1;
                    }
                    updates.push((row.origin.clone(), row.media_id.clone(), deleted));
                }
                Change::Failed => result.failed += 1,
            }
        }
        cache.set_deleted(&updates)?;
        result.checked += page.len() as u64;
        progress.advance(page.len() as u64, 0);
    }
    cache.commit()?;
    progress.finish();
    Ok(result)
}
