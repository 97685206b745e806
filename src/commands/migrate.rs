//! `migrate`: the daily job. `update-db`, `check-deleted` and
//! `upload --delete` in one locked run, with every setting taken from
//! homeserver.yaml unless the config file, the environment or a flag says
//! otherwise (see `config::settings`).
//!
//! `--dry-run` works on a copy of cache.db, so it shows exactly what a real
//! run would do and changes nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use serde_json::json;

use super::check_deleted::Reopen;
use super::upload::Conflicts;
use super::{Context, check_deleted, update_db, upload};
use crate::cache::{Cache, Rows};
use crate::config::settings::{Settings, StoreOptions};
use crate::duration::{parse_duration, parse_short_duration};
use crate::error::Failure;
use crate::homeserver_db::{DbRecords, HomeserverDb};
use crate::lock::{RunLock, StoreLock};
use crate::media_store::MediaStore;
use crate::{report, store};

/// Used when neither `--duration` nor the config file sets one.
pub const DEFAULT_DURATION: &str = "30d";

/// What `migrate` is asked to do.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Offload media not accessed for this long [default: the config
    /// file's, else 30 days].
    pub duration: Option<Duration>,
    pub dry_run: bool,
    pub settle_time: Option<Duration>,
    pub allow_archive_storage_class: bool,
    pub store: StoreOptions,
}

pub fn run(ctx: &Context, args: &Options) -> Result<()> {
    let settings = Settings::resolve(&args.store, &ctx.file)?;
    let duration = duration(ctx, args)?;
    let settle = settle_time(ctx, args)?;
    let store_settings = settings.store.as_ref().ok_or_else(|| {
        anyhow!(
            "no object store configured: {} has no {} entry with a bucket; set bucket in the config file or pass --bucket",
            settings.homeserver.origin,
            crate::config::homeserver::S3_PROVIDER_MODULE
        )
    })?;
    let allow_archive = args.allow_archive_storage_class || ctx.file.config.allow_archive_storage_class == Some(true);
    if !allow_archive {
        upload::refuse_archive_class(
            store_settings,
            "--allow-archive-storage-class (allow_archive_storage_class: true in the config file)",
        )?;
    }
    // The locks first: a second run must exit at once, before any network.
    let _lock = RunLock::acquire(&ctx.cache_db, ctx.lock)?;
    let media = MediaStore::open(&settings.media_store_path, false)?;
    crate::lock::warn_if_root_over(&media);
    let _store_lock = StoreLock::acquire(&media, ctx.lock)?;
    let scratch = if args.dry_run { Some(Scratch::copy_of(&ctx.cache_db)?) } else { None };
    let mut cache = Cache::open(scratch.as_ref().map_or(&ctx.cache_db, |s| &s.path))?;
    let store = store::open(store_settings, &settings.media_store_path)?;
    log::info!("offloading {} to {}", settings.media_store_path.display(), store.describe());

    let mut db = HomeserverDb::connect(&settings.database)?;
    let synced = update_db::sync_with(&mut cache, &mut db, duration)?;
    media.ensure_layout(cache.any(Rows::All)?)?;
    let reopen = Reopen { cutoff_ms: synced.cutoff_ms, db: &mut db };
    let checked = check_deleted::check(&mut cache, &media, Some(reopen))?;
    let plan = upload::Plan {
        prefix: store_settings.prefix.clone(),
        delete: true,
        dry_run: args.dry_run,
        concurrency: settings.concurrency,
        json: ctx.json,
        settle,
        allow_archive,
    };
    let records = DbRecords::new(&settings.database);
    let totals = upload::upload(&mut cache, &media, store.as_ref(), &plan, Conflicts::ByRecord(&records))?;
    drop(cache);
    drop(scratch);

    report::print(
        ctx.json,
        &Summary { synced: &synced, checked: &checked, upload: upload::Summary { totals: &totals, plan: &plan } },
    );
    let failed = synced.invalid_rows + checked.failed + totals.failed_files + totals.invalid_rows + totals.conflicts;
    match failed {
        0 => Ok(()),
        count => Err(Failure::Partial { count }.into()),
    }
}

/// `migrate`'s summary: its three steps' lines, in the Python tool's words.
struct Summary<'a> {
    synced: &'a update_db::Synced,
    checked: &'a check_deleted::Checked,
    upload: upload::Summary<'a>,
}

impl report::Summary for Summary<'_> {
    fn lines(&self) -> Vec<String> {
        let dry_run = self.upload.plan.dry_run;
        let mut lines = self.synced.lines_for(dry_run);
        lines.extend(self.checked.lines_for(dry_run));
        lines.extend(report::Summary::lines(&self.upload));
        lines
    }

    fn json(&self) -> serde_json::Value {
        json!({"command": "migrate", "dry_run": self.upload.plan.dry_run,
               "update_db": self.synced.json_fields(),
               "check_deleted": self.checked.json(),
               "upload": report::Summary::json(&self.upload)})
    }

    fn is_noop(&self) -> bool {
        report::Summary::is_noop(self.synced) && self.checked.is_noop() && report::Summary::is_noop(&self.upload)
    }
}

/// How long a file must be left alone after its last change: the flag,
/// `MEDIA_OFFLOAD_SETTLE_TIME`, the config file's `settle_time`, 10 minutes.
fn settle_time(ctx: &Context, args: &Options) -> Result<Duration> {
    let flag = args.settle_time.map(|d| format!("{}s", d.as_secs()));
    match ctx.file.setting("settle_time", flag, ctx.file.config.settle_time.clone()) {
        None => Ok(upload::DEFAULT_SETTLE),
        Some((text, source)) => {
            log::debug!("settle_time = {text:?} (from {source})");
            parse_short_duration(&text).map_err(|e| anyhow!("settle_time from {source}: {e}"))
        }
    }
}

fn duration(ctx: &Context, args: &Options) -> Result<Duration> {
    let flag = args.duration.map(|d| format!("{}s", d.as_secs()));
    let (text, source) = ctx
        .file
        .setting("duration", flag, ctx.file.config.duration.clone())
        .unwrap_or_else(|| (DEFAULT_DURATION.to_owned(), "default".to_owned()));
    log::debug!("duration = {text:?} (from {source})");
    parse_duration(&text).map_err(|e| anyhow!("duration from {source}: {e}"))
}

/// A private copy of cache.db for a dry run, removed when dropped.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// A copy of `real` (or nothing, if it does not exist yet: the dry run
    /// then starts from an empty cache, as a first real run would).
    fn copy_of(real: &Path) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("media-offload-dry-run-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let scratch = Self { path };
        if real.exists() {
            Cache::reader_of(real)?
                .copy_to(&scratch.path)
                .with_context(|| format!("could not copy {} for the dry run", real.display()))?;
        }
        Ok(scratch)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
