//! `update-db DURATION`: copy the rows of media not accessed for DURATION
//! from the homeserver database into cache.db.

use anyhow::{Context as _, Result};
use serde_json::json;

use super::Context;
use crate::cache::Cache;
use crate::cli::DbSelection;
use std::time::Duration;

use crate::config::settings::read_homeserver_config;
use crate::config::{DbConfig, locate_database};
use crate::duration::cutoff_ms;
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

pub fn run(ctx: &Context, selection: &DbSelection) -> Result<()> {
    let (_lock, mut cache) = ctx.open_cache()?;
    let mut db = HomeserverDb::connect(&database_of(selection)?)?;
    let synced = sync_with(&mut cache, &mut db, selection.duration)?;
    report::summary(
        ctx.json,
        &[format!("Synced {} new rows", synced.new_rows)],
        json!({"command": "update-db", "cutoff_ms": synced.cutoff_ms, "new_rows": synced.new_rows,
               "invalid_rows": synced.invalid_rows}),
    );
    synced.into_result()
}

impl Synced {
    pub fn into_result(&self) -> Result<()> {
        match self.invalid_rows {
            0 => Ok(()),
            count => Err(Failure::Partial { count }.into()),
        }
    }
}

/// The homeserver database `update-db` reads, found as `s3_media_upload`
/// finds it: `./database.yaml`, else the homeserver config.
pub fn database_of(selection: &DbSelection) -> Result<DbConfig> {
    let config = read_homeserver_config(&selection.homeserver_config_path, "--homeserver-config-path")?;
    let (db_config, source) = locate_database(&config)?;
    log::info!("homeserver database: {} (from {source})", db_config.describe());
    Ok(db_config)
}

/// The work of `update-db`, shared with `update` and `migrate`.
pub fn sync_with(cache: &mut Cache, db: &mut HomeserverDb, duration: Duration) -> Result<Synced> {
    let cutoff = cutoff_ms(duration);
    let since = std::time::UNIX_EPOCH + std::time::Duration::from_millis(cutoff.max(0) as u64);
    log::info!("Syncing files that haven't been accessed since: {}", humantime::format_rfc3339_seconds(since));
    let mut synced = Synced { cutoff_ms: cutoff, ..Default::default() };
    cache.begin()?;
    for kind in [MediaKind::Local, MediaKind::Remote] {
        log::info!("  Syncing {} media", kind.as_str());
        let mut batch: Vec<Candidate> = Vec::with_capacity(BATCH);
        db.for_each_candidate(kind, cutoff, |row| {
            synced.seen += 1;
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
    crate::faults::point("update-db-commit");
    cache.commit()?;
    log::info!("{} candidate rows, {} new in {}", synced.seen, synced.new_rows, cache.path().display());
    Ok(synced)
}
