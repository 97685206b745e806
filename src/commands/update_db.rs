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

/// What the reading side of [`read_beside`] saw.
struct Read {
    seen: u64,
    invalid: u64,
}

/// Read the candidates of `kind` on a thread of their own and hand them to
/// `write` in batches of [`BATCH`], on this thread: the homeserver database
/// streams the next rows while cache.db inserts the last ones, where one
/// thread doing both left a core idle half the time (docs/benchmarks.md).
/// Rows that would resolve outside the media store are refused here and
/// never reach cache.db, where the Python tool would act on them unchecked.
/// A failed write stops the reader; the write's error is the one returned.
fn read_beside(
    db: &mut HomeserverDb,
    kind: MediaKind,
    cutoff: i64,
    since_ms: Option<i64>,
    ordered: bool,
    mut write: impl FnMut(Vec<Candidate>) -> Result<()>,
) -> Result<Read> {
    // Two batches in flight: enough to keep both sides busy, and memory flat.
    let (send, receive) = std::sync::mpsc::sync_channel::<Vec<Candidate>>(2);
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let mut read = Read { seen: 0, invalid: 0 };
            let mut batch = Vec::with_capacity(BATCH);
            db.for_each_candidate(kind, cutoff, since_ms, ordered, |row| {
                read.seen += 1;
                if let Err(invalid) = MediaPaths::validate(&row.origin, &row.media_id, &row.filesystem_id, row.kind) {
                    log::error!("{invalid}");
                    read.invalid += 1;
                    return Ok(());
                }
                batch.push(row);
                if batch.len() >= BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    send.send(full).map_err(|_| WriterStopped)?;
                }
                Ok(())
            })?;
            if !batch.is_empty() {
                send.send(batch).map_err(|_| WriterStopped)?;
            }
            Ok::<_, anyhow::Error>(read)
        });
        let mut written = Ok(());
        for batch in receive.iter() {
            written = write(batch);
            if written.is_err() {
                break;
            }
        }
        // Dropping the receiver makes the reader's next send fail, so it
        // stops instead of reading the rest of the history for nothing.
        drop(receive);
        let read = reader.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the database reader thread panicked")));
        written?;
        read
    })
}

/// The reader's error when the writing side stopped first (its own error
/// is the one reported).
#[derive(Debug, thiserror::Error)]
#[error("cache.db stopped taking rows")]
struct WriterStopped;

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
    // An empty cache.db is filled without its indexes, which are built at
    // the end: the rows may then come in any order (no sort in the database).
    let filling = cache.begin_fill()?;
    if filling {
        log::info!("  cache.db is empty: its indexes are built once the rows are in");
    }
    let mut seen = [0u64; 2];
    for (i, kind) in KINDS.into_iter().enumerate() {
        log::info!("  Syncing {} media", kind.as_str());
        let read = read_beside(db, kind, cutoff, since_ms, !filling, |batch| {
            synced.new_rows += cache.insert_new(&batch)?;
            crate::faults::point("update-db-batch");
            Ok(())
        })
        .with_context(|| format!("syncing {} media", kind.as_str()))?;
        synced.seen += read.seen;
        synced.invalid_rows += read.invalid;
        seen[i] = read.seen;
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
