//! `upload BASE_PATH BUCKET [--delete]`: copy every file of the media in
//! cache.db to the store and, with `--delete`, remove a local file only
//! once the store is confirmed to hold the same bytes.
//!
//! Media are processed by `--concurrency` worker threads; a reader thread
//! pages rows out of cache.db; the calling thread collects results and
//! records finished media in batched transactions. Killed at any moment,
//! a rerun completes the job: objects are written whole or not at all,
//! and a media is marked deleted only after all its files are gone.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use serde_json::json;

use super::{Context, PAGE};
use crate::cache::{Cache, CacheRow, Rows};
use crate::cli::UploadArgs;
pub use crate::config::settings::SSE_KEY_ENV;
use crate::config::{Secret, read_secret_file};
use crate::error::Failure;
use crate::media_store::{self, LocalFile};
use crate::report::{self, Progress, naturalsize};
use crate::store::{self, FileDigest, ObjectStore, StoreSettings, Verdict, compare};
/// Finished media are recorded at least this often.
const FLUSH_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct Options {
    pub base: PathBuf,
    pub prefix: String,
    pub delete: bool,
    pub dry_run: bool,
    pub concurrency: usize,
    /// stdout carries one JSON summary: the dry-run listing goes to stderr.
    pub json: bool,
}

/// Counters of a run, as the Python tool reports them plus ours.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Totals {
    pub media_total: u64,
    pub uploaded_media: u64,
    pub uploaded_files: u64,
    pub uploaded_bytes: u64,
    pub already_present_files: u64,
    pub deleted_media: u64,
    pub deleted_files: u64,
    pub deleted_bytes: u64,
    pub failed_files: u64,
    pub invalid_rows: u64,
}

/// What happened to one media.
#[derive(Debug, Default)]
struct MediaResult {
    uploaded_files: u64,
    uploaded_bytes: u64,
    present_files: u64,
    deleted_files: u64,
    deleted_bytes: u64,
    failed_files: u64,
    invalid: bool,
    /// No file of it is on local disk (any more).
    gone: bool,
}

pub fn run(ctx: &Context, args: &UploadArgs) -> Result<()> {
    let store = store::open(&store_settings(args)?, &args.base_path)?;
    let (_lock, mut cache) = ctx.open_cache()?;
    let options = Options {
        base: args.base_path.clone(),
        prefix: args.prefix.clone(),
        delete: args.delete,
        dry_run: args.dry_run,
        concurrency: args.concurrency.into(),
        json: ctx.json,
    };
    log::info!("uploading to {}", store.describe());
    let totals = upload(&mut cache, store.as_ref(), &options)?;
    print_summary(ctx.json, &totals, options.dry_run);
    totals.into_result()
}

impl Totals {
    pub fn into_result(&self) -> Result<()> {
        match self.failed_files + self.invalid_rows {
            0 => Ok(()),
            count => Err(Failure::Partial { count }.into()),
        }
    }
}

pub fn print_summary(json: bool, t: &Totals, dry_run: bool) {
    report::summary(json, &t.lines(dry_run), t.json(dry_run));
}

impl Totals {
    /// The summary lines, worded as the Python tool words them.
    pub fn lines(&self, dry_run: bool) -> Vec<String> {
        let t = self;
        let p = if dry_run { "(dry run) Would have " } else { "" };
        let mut lines = vec![
            format!("{p}Uploaded {} media out of {}", t.uploaded_media, t.media_total),
            format!("{p}Uploaded {} files", t.uploaded_files),
            format!("{p}Uploaded {}", naturalsize(t.uploaded_bytes)),
            format!("{p}Deleted {} media", t.deleted_media),
            format!("{p}Deleted {} files", t.deleted_files),
            format!("{p}Deleted {}", naturalsize(t.deleted_bytes)),
        ];
        if t.already_present_files > 0 {
            lines.push(format!("{} files were already in the store (verified)", t.already_present_files));
        }
        if t.failed_files + t.invalid_rows > 0 {
            lines.push(format!(
                "{} files failed and {} rows were refused; their local files were kept",
                t.failed_files, t.invalid_rows
            ));
        }
        lines
    }

    pub fn json(&self, dry_run: bool) -> serde_json::Value {
        let t = self;
        json!({"command": "upload", "dry_run": dry_run, "media_total": t.media_total,
               "uploaded_media": t.uploaded_media, "uploaded_files": t.uploaded_files,
               "uploaded_bytes": t.uploaded_bytes, "already_present_files": t.already_present_files,
               "deleted_media": t.deleted_media, "deleted_files": t.deleted_files,
               "deleted_bytes": t.deleted_bytes, "failed_files": t.failed_files, "invalid_rows": t.invalid_rows})
    }
}

/// The store settings an `upload` command line gives (credentials from
/// the AWS SDK's default chain, as boto3 takes them).
pub fn store_settings(args: &UploadArgs) -> Result<StoreSettings> {
    Ok(StoreSettings {
        bucket: args.bucket.clone(),
        endpoint_url: args.endpoint_url.clone(),
        region: None,
        storage_class: args.storage_class.clone(),
        prefix: args.prefix.clone(),
        sse_key: sse_key(args)?.map(Secret),
        sse_algorithm: args.sse_customer_algo.clone(),
        credentials: None,
    })
}

fn sse_key(args: &UploadArgs) -> Result<Option<String>> {
    if let Some(key) = args.sse_customer_key.as_ref().filter(|k| !k.is_empty()) {
        log::warn!(
            "--sse-customer-key shows the key in the process list; prefer --sse-customer-key-file or {SSE_KEY_ENV}"
        );
        return Ok(Some(key.clone()));
    }
    if let Some(path) = &args.sse_customer_key_file {
        return read_secret_file(path, "SSE-C key file").map(Some);
    }
    Ok(std::env::var(SSE_KEY_ENV).ok().filter(|k| !k.is_empty()))
}

/// The work of `upload`, shared with `demo`.
pub fn upload(cache: &mut Cache, store: &dyn ObjectStore, opts: &Options) -> Result<Totals> {
    let total = cache.count(Rows::NotDeleted)?;
    media_store::check_base_path(&opts.base, total > 0)?;
    let mut totals = Totals { media_total: total, ..Default::default() };
    let mut progress = Progress::new("upload", "media", total, true);
    let reader = cache.reader()?;
    let stop = AtomicBool::new(false);
    let workers = opts.concurrency.max(1);

    let (job_tx, job_rx) = mpsc::sync_channel::<CacheRow>(workers * 2);
    let job_rx = Mutex::new(job_rx);
    let outcome: Result<()> = std::thread::scope(|scope| {
        let (done_tx, done_rx) = mpsc::channel::<(CacheRow, MediaResult)>();
        let stop = &stop;

        let producer = scope.spawn(move || -> Result<()> {
            let mut after = 0;
            while !stop.load(Ordering::Relaxed) {
                let page = reader.page(Rows::NotDeleted, after, PAGE)?;
                let Some(last) = page.last() else { break };
                after = last.rowid;
                for row in page {
                    if job_tx.send(row).is_err() {
                        return Ok(());
                    }
                }
            }
            Ok(())
        });
        for _ in 0..workers {
            let (job_rx, done_tx) = (&job_rx, done_tx.clone());
            scope.spawn(move || {
                loop {
                    let next = job_rx.lock().expect("job queue poisoned").recv();
                    let Ok(row) = next else { break };
                    if stop.load(Ordering::Relaxed) {
                        // Drain, so the reader is never left blocked on a
                        // full queue; it stops at its next page.
                        continue;
                    }
                    let result = process_media(store, opts, &row);
                    if done_tx.send((row, result)).is_err() {
                        // The collector is gone: stop, and keep draining.
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            });
        }
        drop(done_tx);

        let mut pending: Vec<(String, String, bool)> = Vec::new();
        let mut last_flush = Instant::now();
        let mut record = |pending: &mut Vec<(String, String, bool)>| -> Result<()> {
            if !opts.dry_run {
                cache.set_deleted(pending)?;
            }
            pending.clear();
            Ok(())
        };
        for (row, r) in done_rx.iter() {
            totals.uploaded_files += r.uploaded_files;
            totals.uploaded_bytes += r.uploaded_bytes;
            totals.already_present_files += r.present_files;
            totals.deleted_files += r.deleted_files;
            totals.deleted_bytes += r.deleted_bytes;
            totals.failed_files += r.failed_files;
            totals.invalid_rows += u64::from(r.invalid);
            totals.uploaded_media += u64::from(r.uploaded_files > 0);
            totals.deleted_media += u64::from(r.deleted_files > 0);
            if r.gone {
                pending.push((row.origin, row.media_id, true));
            }
            if pending.len() >= 512 || last_flush.elapsed() >= FLUSH_EVERY {
                if let Err(e) = record(&mut pending) {
                    stop.store(true, Ordering::Relaxed);
                    return Err(e);
                }
                last_flush = Instant::now();
            }
            progress.advance(1, r.uploaded_bytes);
        }
        record(&mut pending)?;
        producer.join().map_err(|_| anyhow!("cache reader thread panicked"))?
    });
    progress.finish();
    outcome?;
    Ok(totals)
}

fn process_media(store: &dyn ObjectStore, opts: &Options, row: &CacheRow) -> MediaResult {
    let mut result = MediaResult::default();
    let paths = match row.paths() {
        Ok(paths) => paths,
        Err(invalid) => {
            log::error!("{invalid}");
            result.invalid = true;
            return result;
        }
    };
    let (files, skipped) = match media_store::local_files(&opts.base, &paths) {
        Ok(found) => found,
        Err(e) => {
            log::error!("listing files of {}: {e}", paths.original);
            result.failed_files += 1;
            return result;
        }
    };
    for s in &skipped {
        log::warn!("{s}; kept");
        result.failed_files += 1;
    }
    for file in &files {
        process_file(store, opts, file, &mut result);
    }
    // Look again rather than trust the listing: Synapse may have written a
    // new thumbnail meanwhile.
    result.gone = !opts.dry_run
        && skipped.is_empty()
        && result.deleted_files == files.len() as u64
        && media_store::any_local_file(&opts.base, &paths).is_ok_and(|present| !present);
    result
}

fn process_file(store: &dyn ObjectStore, opts: &Options, file: &LocalFile, result: &mut MediaResult) {
    let path = opts.base.join(&file.rel);
    let key = format!("{}{}", opts.prefix, file.rel);
    let digest = match FileDigest::of_file(&path, store.part_size(file.size)) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            log::debug!("{}: removed by someone else meanwhile", file.rel);
            return;
        }
        Err(e) => {
            log::error!("reading {}: {e}", path.display());
            result.failed_files += 1;
            return;
        }
    };
    let existing = match store.head(&key) {
        Ok(existing) => existing,
        Err(e) => {
            log::error!("{e}");
            result.failed_files += 1;
            return;
        }
    };
    let present = existing.map(|info| compare(&digest, &info)).and_then(|verdict| match verdict {
        Verdict::Different(why) => {
            log::warn!("{key}: {why}; uploading it again");
            None
        }
        same => Some(same),
    });
    let verdict = match present {
        Some(verdict) => {
            result.present_files += 1;
            verdict
        }
        None if opts.dry_run => {
            report::line(opts.json, &format!("would upload {} ({})", key, naturalsize(digest.size)));
            result.uploaded_files += 1;
            result.uploaded_bytes += digest.size;
            Verdict::SameContent
        }
        None => match store.put(&key, &path, &digest) {
            Ok(info) => match compare(&digest, &info) {
                Verdict::Different(why) => {
                    log::error!("{key}: the stored object does not match after upload ({why}); local file kept");
                    result.failed_files += 1;
                    return;
                }
                verdict => {
                    result.uploaded_files += 1;
                    result.uploaded_bytes += digest.size;
                    verdict
                }
            },
            Err(e) => {
                log::error!("upload failed, local file kept: {e}");
                result.failed_files += 1;
                return;
            }
        },
    };
    if verdict == Verdict::SameSize {
        log::debug!("{key}: verified by size only (the store gives no checksum for it)");
    }
    if !opts.delete {
        return;
    }
    if opts.dry_run {
        report::line(opts.json, &format!("would delete {}", file.rel));
        result.deleted_files += 1;
        result.deleted_bytes += digest.size;
        return;
    }
    if !digest.unchanged(&path) {
        log::warn!("{}: changed while being offloaded; kept for the next run", file.rel);
        return;
    }
    if store.is_same_file(&key, &path) {
        log::error!("{key}: the stored object is the local file itself (store and media store overlap); kept");
        result.failed_files += 1;
        return;
    }
    match std::fs::remove_file(&path) {
        Ok(()) => {
            result.deleted_files += 1;
            result.deleted_bytes += digest.size;
            media_store::prune_empty_dirs(&opts.base, &file.rel);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => result.deleted_files += 1,
        Err(e) => {
            log::error!("deleting {}: {e}", path.display());
            result.failed_files += 1;
        }
    }
}
