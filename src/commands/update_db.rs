//! `update-db DURATION`: copy the rows of media not accessed for DURATION
//! from the homeserver database into cache.db.

use anyhow::{Context as _, Result};
use serde_json::json;

use super::Context;
use crate::cache::Cache;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::settings::read_homeserver_config;
use crate::config::{DbConfig, locate_database};
use crate::duration::{cutoff_ms, now_ms};
use crate::error::Failure;
use crate::homeserver_db::{Candidate, HomeserverDb};
use crate::media_store::{MediaKind, MediaPaths};
use crate::report;

/// Rows written to cache.db per transaction.
const BATCH: usize = 10_000;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Synced {
    pub cutoff_ms: i64,
    pub seen: u64,
    pub new_rows: u64,
    pub invalid_rows: u64,
}

/// What `update-db` is asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Select media not accessed for this long.
    pub duration: Duration,
    /// Where the homeserver config is (unless ./database.yaml exists).
    pub homeserver_config_path: Vec<PathBuf>,
}

pub fn run(ctx: &Context, selection: &Options) -> Result<()> {
    let (_lock, mut cache) = ctx.open_cache()?;
    let mut db = HomeserverDb::connect(&database_of(selection)?)?;
    let synced = sync_with(&mut cache, &mut db, selection.duration)?;
    report::print(ctx.json, &synced);
    synced.into_result()
}

impl report::Summary for Synced {
    fn lines(&self) -> Vec<String> {
        self.lines_for(false)
    }

    fn json(&self) -> serde_json::Value {
        let mut v = self.json_fields();
        v["command"] = "update-db".into();
        v
    }

    fn is_noop(&self) -> bool {
        self.new_rows == 0 && self.invalid_rows == 0
    }
}

impl Synced {
    /// "Synced N new rows", as the Python tool says it.
    pub fn lines_for(&self, dry_run: bool) -> Vec<String> {
        let mut lines = vec![format!(
            "{} {}",
            report::did(dry_run, "Synced", "sync"),
            report::count(self.new_rows, "new row", "new rows")
        )];
        if self.invalid_rows > 0 {
            lines.push(format!("{} refused (see the messages above)", report::count(self.invalid_rows, "row", "rows")));
        }
        lines
    }

    pub fn json_fields(&self) -> serde_json::Value {
        json!({"cutoff_ms": self.cutoff_ms, "new_rows": self.new_rows, "invalid_rows": self.invalid_rows})
    }

    pub fn into_result(&self) -> Result<()> {
        match self.invalid_rows {
            0 => Ok(()),
            count => Err(Failure::Partial { count }.into()),
        }
    }
}

/// The homeserver database `update-db` reads, found as `s3_media_upload`
/// finds it: `./database.yaml`, else the homeserver config.
pub fn database_of(selection: &Options) -> Result<DbConfig> {
    let config = read_homeserver_config(&selection.homeserver_config_path, "--homeserver-config-path")?;
    let (db_config, source) = locate_database(&config)?;
    log::info!("homeserver database: {} (from {source})", db_config.describe());
    Ok(db_config)
}

/// cache.db's note of what update-db selected: every media of `database`
/// last used before `before_ms` is in cache.db, as of the last full
/// selection at `full_at_ms` and the windows selected since.
/// `counts`: how many local and remote media the database then had below
/// `before_ms`; more now means rows were written already old since.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Selected {
    database: String,
    before_ms: i64,
    full_at_ms: i64,
    counts: [u64; 2],
}

const SELECTED: &str = "update-db.selected";

/// How often the whole history is selected again all the same: a row
/// that enters the database already old (a restored backup, an import)
/// is then in cache.db within a week.
const FULL_EVERY: Duration = Duration::from_secs(7 * 24 * 3600);

const KINDS: [MediaKind; 2] = [MediaKind::Local, MediaKind::Remote];

/// The work of `update-db`, shared with `update` and `migrate`.
///
/// A media once past the cut-off is in cache.db for good (rows are never
/// rewritten), so a run asks the database only for the media that passed
/// the cut-off since the last complete run on the same database: the daily
/// run reads a day of media, not the whole history. Media only pass the
/// cut-off by growing old, except for rows written already old (a restored
/// backup, an import): when the database counts more media below the
/// note's bound than it did, the whole history is selected again, and in
/// any case once a week ([`FULL_EVERY`]), in case removals hid such rows
/// from the count. The note of what was
/// selected is written in the same transaction as the rows, and only by a
/// run that refused no row (refused rows are then reported again).
pub fn sync_with(cache: &mut Cache, db: &mut HomeserverDb, duration: Duration) -> Result<Synced> {
    let cutoff = cutoff_ms(duration);
    let since = std::time::UNIX_EPOCH + std::time::Duration::from_millis(cutoff.max(0) as u64);
    log::info!("Syncing files that haven't been accessed since: {}", humantime::format_rfc3339_seconds(since));
    let mut selected = cache
        .state(SELECTED)?
        .and_then(|text| serde_json::from_str::<Selected>(&text).ok())
        .filter(|s| s.database == db.identity() && now_ms() - s.full_at_ms < FULL_EVERY.as_millis() as i64);
    let mut counts = [0u64; 2];
    if let Some(note) = &selected {
        for (i, kind) in KINDS.into_iter().enumerate() {
            counts[i] = db.count_candidates(kind, note.before_ms)?;
        }
        if counts.iter().zip(note.counts).any(|(now, then)| *now > then) {
            log::info!("  media were written already old since the last run: selecting the whole history");
            selected = None;
        }
    }
    let since_ms = selected.as_ref().map(|s| s.before_ms);
    if let Some(before) = since_ms {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(before.max(0) as u64);
        log::info!("  (media last used before {} are in cache.db already)", humantime::format_rfc3339_seconds(at));
    }
    let mut synced = Synced { cutoff_ms: cutoff, ..Default::default() };
    cache.begin()?;
    let mut seen = [0u64; 2];
    for (i, kind) in KINDS.into_iter().enumerate() {
        log::info!("  Syncing {} media", kind.as_str());
        let mut batch: Vec<Candidate> = Vec::with_capacity(BATCH);
        db.for_each_candidate(kind, cutoff, since_ms, |row| {
            synced.seen += 1;
            seen[i] += 1;
            // A row that would resolve outside the media store never enters
            // cache.db, where the Python tool would act on it unchecked.
            if let Err(invalid) = MediaPaths::new(&row.origin, &row.media_id, &row.filesystem_id, row.kind) {
                log::error!("{invalid}");
                synced.invalid_rows += 1;
                return Ok(());
            }
            batch.push(row);
            if batch.len() >= BATCH {
                synced.new_rows += cache.insert_new(&batch)?;
                batch.clear();
                crate::faults::point("update-db-batch");
            }
            Ok(())
        })
        .with_context(|| format!("syncing {} media", kind.as_str()))?;
        synced.new_rows += cache.insert_new(&batch)?;
    }
    if synced.invalid_rows == 0 {
        // Below the new bound: what was below the old one, and the window.
        let (before_ms, full_at_ms, counts) = match &selected {
            Some(s) => (s.before_ms.max(cutoff), s.full_at_ms, [counts[0] + seen[0], counts[1] + seen[1]]),
            None => (cutoff, now_ms(), seen),
        };
        let note = Selected { database: db.identity().to_owned(), before_ms, full_at_ms, counts };
        cache.set_state(SELECTED, &serde_json::to_string(&note)?)?;
    }
    crate::faults::point("update-db-commit");
    cache.commit()?;
    log::info!("{} candidate rows, {} new in {}", synced.seen, synced.new_rows, cache.path().display());
    Ok(synced)
}
