//! `upload BASE_PATH BUCKET [--delete]`: copy every file of the media in
//! cache.db to the store and, with `--delete`, remove a local file only
//! once the store is proven to hold the same bytes.
//!
//! Per file: skip it if it was modified within the settle time (being
//! written, or being fetched back by Synapse); open it beneath the store's
//! directory descriptors; read it once (small files into memory) for its
//! MD5s; HEAD the key. No object: upload, and take the proof the answers
//! give (ETag, part ETags, the store's Content-MD5 check) or read it back.
//! An object: prove it identical ([`ObjectStore::compare`]), or, if it
//! differs, never overwrite it blindly ([`Conflicts`]). Delete only with a
//! proof, from the same descriptor, if the name still refers to the same,
//! unchanged file.
//!
//! Media are processed by `--concurrency` worker threads; a reader thread
//! pages rows out of cache.db; the calling thread collects results and
//! records finished media in batched transactions. Killed at any moment, a
//! rerun completes the job: objects are written whole or not at all, and a
//! media is marked deleted only after all its files are gone. Refused
//! credentials or an unreachable store stop the run at once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Result, anyhow, bail};
use serde::Serialize;

use super::{Context, PAGE};
use crate::cache::{Cache, CacheRow, Rows};
pub use crate::config::settings::SSE_KEY_ENV;
use crate::config::{Secret, read_secret_file};
use crate::error::Failure;
use crate::faults;
use crate::homeserver_db::Records;
use crate::lock::StoreLock;
use crate::media_store::{LocalFile, MediaPaths, MediaStore, Unlinked};
use crate::report::{self, Counting, Progress, naturalsize};
use crate::store::{
    self, ARCHIVE_CLASSES, Comparison, LocalData, ObjectInfo, ObjectStore, Proof, PutIfAbsent, StoreError,
    StoreSettings,
};

/// Finished media are recorded at least this often.
const FLUSH_EVERY: Duration = Duration::from_secs(2);
/// The default settle time.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(600);

/// What `upload` is asked to do (the `s3_media_upload` command line).
#[derive(Debug, Clone)]
pub struct Options {
    pub base_path: PathBuf,
    /// A bucket name, or a directory store (`/...`, `./...`, `file:///...`).
    pub bucket: String,
    pub prefix: String,
    pub storage_class: String,
    /// The SSE-C key given on the command line (visible in `ps`).
    pub sse_customer_key: Option<String>,
    pub sse_customer_key_file: Option<PathBuf>,
    pub sse_customer_algo: String,
    pub delete: bool,
    pub endpoint_url: Option<String>,
    pub concurrency: usize,
    pub settle_time: Duration,
    pub overwrite_mismatched: bool,
    pub allow_archive_storage_class: bool,
    pub dry_run: bool,
    /// `bucket` is a Swift container.
    pub swift: bool,
    pub swift_cloud: Option<String>,
    pub swift_segment_size: Option<u64>,
}

/// How the upload phase runs (shared by `upload` and `migrate`).
#[derive(Debug, Clone)]
pub struct Plan {
    pub prefix: String,
    pub delete: bool,
    pub dry_run: bool,
    pub concurrency: usize,
    /// stdout carries one JSON summary: the dry-run listing goes to stderr.
    pub json: bool,
    /// Files modified less than this long ago are left for the next run.
    pub settle: Duration,
    /// Delete local files whose objects are in a class Synapse cannot read
    /// back without a restore (GLACIER, DEEP_ARCHIVE).
    pub allow_archive: bool,
}

/// What to do when an existing object differs from the local file.
#[derive(Clone, Copy)]
pub enum Conflicts<'a> {
    /// Keep both and report (plain `upload`: nothing says which is right).
    Keep,
    /// Replace the object with the local file (`--overwrite-mismatched`).
    Overwrite,
    /// Let the homeserver's record decide (`migrate`).
    ByRecord(&'a dyn Records),
}

/// Counters of a run, as the Python tool reports them plus ours.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub media_total: u64,
    pub uploaded_media: u64,
    pub uploaded_files: u64,
    pub uploaded_bytes: u64,
    pub already_present_files: u64,
    pub deleted_media: u64,
    pub deleted_files: u64,
    pub deleted_bytes: u64,
    /// How each deleted file's copy was proven (etag, part_etags,
    /// content_md5, read_back).
    pub deleted_by: BTreeMap<&'static str, u64>,
    /// Modified within the settle time: left for the next run.
    pub settling_files: u64,
    /// The object and the local file differ and nothing said which is
    /// right: both kept.
    pub conflicts: u64,
    /// Local copies that disagreed with the homeserver's record while the
    /// object matched it (a failed fetch-back): removed.
    pub repaired_local_files: u64,
    /// Objects that disagreed with the record while the local file matched
    /// it: replaced.
    pub replaced_objects: u64,
    /// Objects in a class Synapse cannot read back: local files kept.
    pub archived_kept: u64,
    pub failed_files: u64,
    pub invalid_rows: u64,
}

/// What happened to one media.
#[derive(Debug, Default)]
struct MediaResult {
    t: Totals,
    /// No file of it is on local disk (any more).
    gone: bool,
    /// A failure every further call would meet: stop the run.
    fatal: Option<StoreError>,
}

pub fn run(ctx: &Context, args: &Options) -> Result<()> {
    let settings = store_settings(args)?;
    if args.delete && !args.allow_archive_storage_class {
        refuse_archive_class(&settings, "--allow-archive-storage-class")?;
    }
    let store = store::open(&settings, args.base_path.as_path())?;
    let (_lock, mut cache) = ctx.open_cache()?;
    let media = MediaStore::open(&args.base_path, cache.any(Rows::NotDeleted)?)?;
    crate::lock::warn_if_root_over(&media);
    let _store_lock = StoreLock::acquire(&media, ctx.lock)?;
    let plan = Plan {
        prefix: args.prefix.clone(),
        delete: args.delete,
        dry_run: args.dry_run,
        concurrency: args.concurrency,
        json: ctx.json,
        settle: args.settle_time,
        allow_archive: args.allow_archive_storage_class,
    };
    let conflicts = if args.overwrite_mismatched { Conflicts::Overwrite } else { Conflicts::Keep };
    log::info!("uploading to {}", store.describe());
    let totals = upload(&mut cache, &media, store.as_ref(), &plan, conflicts)?;
    let summary = Summary { totals: &totals, plan: &plan };
    report::print(ctx.json, &summary);
    totals.into_result()
}

/// `--delete` into a class Synapse cannot read back would make the media
/// unavailable until someone restores them: refused unless allowed.
pub fn refuse_archive_class(settings: &StoreSettings, allow: &str) -> Result<()> {
    if store::parse_target(&settings.bucket).is_ok_and(|t| matches!(t, store::Target::Bucket(_)))
        && ARCHIVE_CLASSES.contains(&settings.storage_class.as_str())
    {
        bail!(
            "storage class {}: Synapse cannot read objects of this class back without a restore, so deleting the \
             local copies would make the media unavailable; choose another class (GLACIER_IR reads back at once), \
             or pass {allow} if you restore objects yourself",
            settings.storage_class
        );
    }
    Ok(())
}

impl Totals {
    pub fn into_result(&self) -> Result<()> {
        match self.failed_files + self.invalid_rows + self.conflicts {
            0 => Ok(()),
            count => Err(Failure::Partial { count }.into()),
        }
    }

    fn add(&mut self, o: &Totals) {
        self.uploaded_files += o.uploaded_files;
        self.uploaded_bytes += o.uploaded_bytes;
        self.already_present_files += o.already_present_files;
        self.deleted_files += o.deleted_files;
        self.deleted_bytes += o.deleted_bytes;
        for (proof, n) in &o.deleted_by {
            *self.deleted_by.entry(proof).or_default() += n;
        }
        self.settling_files += o.settling_files;
        self.conflicts += o.conflicts;
        self.repaired_local_files += o.repaired_local_files;
        self.replaced_objects += o.replaced_objects;
        self.archived_kept += o.archived_kept;
        self.failed_files += o.failed_files;
        self.invalid_rows += o.invalid_rows;
        self.uploaded_media += u64::from(o.uploaded_files > 0);
        self.deleted_media += u64::from(o.deleted_files > 0);
    }
}

/// `upload`'s summary: the Python tool's lines, then ours.
pub struct Summary<'a> {
    pub totals: &'a Totals,
    pub plan: &'a Plan,
}

impl report::Summary for Summary<'_> {
    fn lines(&self) -> Vec<String> {
        let (t, dry) = (self.totals, self.plan.dry_run);
        let files = |n| report::count(n, "file", "files");
        let mut lines = vec![
            format!("{} {} media out of {}", report::did(dry, "Uploaded", "upload"), t.uploaded_media, t.media_total),
            format!("{} {}", report::did(dry, "Uploaded", "upload"), files(t.uploaded_files)),
            format!("{} {}", report::did(dry, "Uploaded", "upload"), naturalsize(t.uploaded_bytes)),
            format!("{} {} media", report::did(dry, "Deleted", "delete"), t.deleted_media),
            format!("{} {}", report::did(dry, "Deleted", "delete"), files(t.deleted_files)),
            format!("{} {}", report::did(dry, "Deleted", "delete"), naturalsize(t.deleted_bytes)),
        ];
        if !t.deleted_by.is_empty() {
            let by: Vec<String> = Proof::ALL
                .iter()
                .filter_map(|p| t.deleted_by.get(p.as_str()).map(|n| format!("{n} by {}", p.describe())))
                .collect();
            lines.push(format!("Deletions proven: {}", by.join(", ")));
        }
        if t.already_present_files > 0 {
            let are = if t.already_present_files == 1 { "was" } else { "were" };
            lines.push(match dry {
                true => format!("Would skip {} already in the store (verified)", files(t.already_present_files)),
                false => format!("{} {are} already in the store (verified)", files(t.already_present_files)),
            });
        }
        if t.settling_files > 0 {
            let age = crate::duration::short(self.plan.settle);
            let was = if t.settling_files == 1 { "was" } else { "were" };
            lines.push(match dry {
                true => format!("Would leave {} modified in the last {age} for the next run", files(t.settling_files)),
                false => format!("{} modified in the last {age} {was} left for the next run", files(t.settling_files)),
            });
        }
        if t.repaired_local_files > 0 {
            lines.push(format!(
                "{} {}: the stored object matches the homeserver's record",
                report::did(dry, "Removed", "remove"),
                report::count(t.repaired_local_files, "damaged local copy", "damaged local copies")
            ));
        }
        if t.replaced_objects > 0 {
            lines.push(format!(
                "{} {} with the local file the homeserver's record confirms",
                report::did(dry, "Replaced", "replace"),
                report::count(t.replaced_objects, "object", "objects")
            ));
        }
        if t.archived_kept > 0 {
            lines.push(format!(
                "{} {}: the objects are in a class Synapse cannot read back",
                report::did(dry, "Kept", "keep"),
                files(t.archived_kept)
            ));
        }
        if t.conflicts > 0 {
            lines.push(format!(
                "{}: the object and the local file differ; {} both (see the messages above)",
                report::count(t.conflicts, "conflict", "conflicts"),
                if dry { "would keep" } else { "kept" }
            ));
        }
        if t.failed_files + t.invalid_rows > 0 {
            lines.push(format!(
                "{} failed and {} refused; their local files {} kept",
                files(t.failed_files),
                report::count(t.invalid_rows, "row was", "rows were"),
                if dry { "would be" } else { "were" }
            ));
        }
        lines
    }

    fn json(&self) -> serde_json::Value {
        self.totals.json(self.plan.dry_run)
    }

    fn is_noop(&self) -> bool {
        let t = self.totals;
        Totals { media_total: t.media_total, ..Default::default() } == *t
    }
}

impl Totals {
    pub fn json(&self, dry_run: bool) -> serde_json::Value {
        let mut value = serde_json::to_value(self).expect("plain counters serialize");
        if let Some(map) = value.as_object_mut() {
            map.insert("command".into(), "upload".into());
            map.insert("dry_run".into(), dry_run.into());
        }
        value
    }
}

/// The store settings an `upload` command line gives (credentials from
/// the AWS SDK's default chain, as boto3 takes them).
pub fn store_settings(args: &Options) -> Result<StoreSettings> {
    if args.swift {
        return crate::config::swift::upload_settings(args);
    }
    Ok(StoreSettings {
        bucket: args.bucket.clone(),
        endpoint_url: args.endpoint_url.clone(),
        region: None,
        storage_class: args.storage_class.clone(),
        prefix: args.prefix.clone(),
        sse_key: sse_key(args)?.map(Secret),
        sse_algorithm: args.sse_customer_algo.clone(),
        credentials: None,
        swift: None,
    })
}

fn sse_key(args: &Options) -> Result<Option<String>> {
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

/// The work of `upload`, shared with `migrate`.
pub fn upload(
    cache: &mut Cache,
    media: &MediaStore,
    store: &dyn ObjectStore,
    opts: &Plan,
    conflicts: Conflicts<'_>,
) -> Result<Totals> {
    let total = cache.count(Rows::NotDeleted)?;
    let mut totals = Totals { media_total: total, ..Default::default() };
    let mut progress = Progress::new("upload", "media", total, Counting::Transfer { dry_run: opts.dry_run });
    let reader = cache.reader()?;
    let stop = AtomicBool::new(false);
    let workers = opts.concurrency.max(1);
    let listing = report::Listing::new(opts.json);
    let worker =
        Worker { media, store, opts, conflicts, settled_before: SystemTime::now() - opts.settle, listing: &listing };
    let mut fatal: Option<StoreError> = None;

    let (job_tx, job_rx) = mpsc::sync_channel::<CacheRow>(workers * 2);
    let job_rx = Mutex::new(job_rx);
    let outcome: Result<()> = std::thread::scope(|scope| {
        let (done_tx, done_rx) = mpsc::channel::<(CacheRow, MediaResult)>();
        let stop = &stop;
        let worker = &worker;

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
                    let result = worker.process_media(&row);
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
            if !opts.dry_run && !pending.is_empty() {
                faults::point("before-mark");
                cache.set_deleted(pending)?;
            }
            pending.clear();
            Ok(())
        };
        for (row, r) in done_rx.iter() {
            if let Some(e) = r.fatal {
                if fatal.is_none() {
                    stop.store(true, Ordering::Relaxed);
                    fatal = Some(e);
                } else {
                    log::debug!("also: {e}");
                }
            }
            totals.add(&r.t);
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
            progress.advance(1, r.t.uploaded_files, r.t.uploaded_bytes);
        }
        record(&mut pending)?;
        producer.join().map_err(|_| anyhow!("cache reader thread panicked"))?
    });
    progress.finish();
    listing.flush();
    outcome?;
    if let Some(e) = fatal {
        return Err(anyhow!("stopped: {e}"));
    }
    Ok(totals)
}

struct Worker<'a> {
    media: &'a MediaStore,
    store: &'a dyn ObjectStore,
    opts: &'a Plan,
    conflicts: Conflicts<'a>,
    /// Files modified after this are still being written.
    settled_before: SystemTime,
    /// What a dry run would do, printed sorted at the end.
    listing: &'a report::Listing,
}

/// Why a file was not deleted this time, when that is not a failure.
enum Kept {
    /// Done with it: deleted, gone, or nothing to delete.
    Done,
    /// Left for the next run, without counting as a failure.
    Later,
    /// Counted as a failure or conflict: the media stays open.
    Failed,
}

impl Worker<'_> {
    fn process_media(&self, row: &CacheRow) -> MediaResult {
        let mut r = MediaResult::default();
        let paths = match row.paths() {
            Ok(paths) => paths,
            Err(invalid) => {
                log::error!("{invalid}");
                r.t.invalid_rows += 1;
                return r;
            }
        };
        let listing = match self.media.files_of(&paths) {
            Ok(found) => found,
            Err(e) => {
                log::error!("listing files of {}: {e}", paths.original);
                r.t.failed_files += 1;
                return r;
            }
        };
        for s in &listing.skipped {
            log::warn!("{s}; kept");
            r.t.failed_files += 1;
        }
        let mut all_done = listing.skipped.is_empty();
        for file in &listing.files {
            match self.process_file(row, &paths, file, &mut r.t) {
                Ok(Kept::Done) => {}
                Ok(Kept::Later | Kept::Failed) => all_done = false,
                Err(fatal) => {
                    r.fatal = Some(fatal);
                    return r;
                }
            }
        }
        // Look again rather than trust the listing: Synapse may have written
        // a new thumbnail meanwhile.
        r.gone = !self.opts.dry_run && all_done && self.media.any_file(&paths).is_ok_and(|present| !present);
        r
    }

    /// One file. `Err` only for failures that stop the run.
    fn process_file(
        &self,
        row: &CacheRow,
        paths: &MediaPaths,
        file: &LocalFile,
        t: &mut Totals,
    ) -> Result<Kept, StoreError> {
        let opts = self.opts;
        if file.modified > self.settled_before {
            log::debug!("{}: modified {} ago; left for the next run", file.rel, ago(file.modified));
            t.settling_files += 1;
            return Ok(Kept::Later);
        }
        let opened = match self.media.open_file(file) {
            Ok(Some(f)) => f,
            Ok(None) => {
                log::debug!("{}: removed or replaced meanwhile", file.rel);
                return Ok(Kept::Later);
            }
            Err(e) => {
                log::error!("opening {}: {e}", file.rel);
                t.failed_files += 1;
                return Ok(Kept::Failed);
            }
        };
        let meta = match opened.metadata() {
            Ok(m) => m,
            Err(e) => {
                log::error!("{}: {e}", file.rel);
                t.failed_files += 1;
                return Ok(Kept::Failed);
            }
        };
        let (size, modified) = (meta.len(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH));
        if modified > self.settled_before {
            t.settling_files += 1;
            return Ok(Kept::Later);
        }
        let data = match opened
            .try_clone()
            .map_err(|e| StoreError::local(e.to_string()))
            .and_then(|f| LocalData::of_file(f, size, self.store.part_size(size)))
        {
            Ok(d) => d,
            Err(e) => {
                log::warn!("{}: {e}; kept for the next run", file.rel);
                return Ok(Kept::Later);
            }
        };
        let key = format!("{}{}", opts.prefix, file.rel);
        // Where the store refuses to overwrite on request, a new object goes
        // up without a HEAD first; one that is there already is untouched,
        // and compared as below.
        let stored = match opts.dry_run {
            true => None,
            false => match self.store.put_if_absent(&key, &data) {
                Ok(Some(PutIfAbsent::Stored(proof))) => Some(proof),
                Ok(Some(PutIfAbsent::Exists) | None) => None,
                Err(e) => return self.failed(e, t),
            },
        };
        let existing = match stored {
            Some(_) => None,
            None => match self.store.head(&key) {
                Ok(existing) => existing,
                Err(e) => return self.failed(e, t),
            },
        };
        let proof = match (stored, existing) {
            (Some(proof), _) => match self.prove_put(&key, &data, proof, t)? {
                Some(proof) => proof,
                None => return Ok(Kept::Failed),
            },
            (None, None) => match self.put_and_prove(&key, &data, t)? {
                Some(proof) => proof,
                None => return Ok(Kept::Failed),
            },
            (None, Some(info)) if !info.readable && !opts.allow_archive => {
                log::warn!(
                    "{key}: the object is in storage class {}, which Synapse cannot read back without a restore; \
                     the local file is kept",
                    info.storage_class.as_deref().unwrap_or("?")
                );
                t.archived_kept += 1;
                return Ok(Kept::Later);
            }
            (None, Some(info)) => match self.store.compare(&key, &info, &data) {
                Err(e) => return self.failed(e, t),
                Ok(Comparison::Same(proof)) => {
                    t.already_present_files += 1;
                    proof
                }
                Ok(Comparison::Different(diff)) => {
                    match self.resolve_conflict(row, paths, file, &key, &info, &data, &diff.to_string(), t)? {
                        Resolution::Proven(proof) => proof,
                        Resolution::RemoveLocal => {
                            return Ok(self.remove(file, &opened, &data, size, modified, None, t));
                        }
                        Resolution::Kept => return Ok(Kept::Failed),
                    }
                }
            },
        };
        faults::point("after-verify");
        if !opts.delete {
            return Ok(Kept::Done);
        }
        if self.store.is_same_file(&key, &opened) {
            log::error!("{key}: the stored object is the local file itself (store and media store overlap); kept");
            t.failed_files += 1;
            return Ok(Kept::Failed);
        }
        Ok(self.remove(file, &opened, &data, size, modified, Some(proof), t))
    }

    /// A failed call: a systematic failure stops the run, anything else
    /// fails this file.
    fn failed(&self, e: StoreError, t: &mut Totals) -> Result<Kept, StoreError> {
        if e.kind.is_systematic() {
            return Err(e);
        }
        log::error!("{e}; local file kept");
        t.failed_files += 1;
        Ok(Kept::Failed)
    }

    /// Upload, then prove the stored bytes (by the answers, else by reading
    /// back). `Ok(None)`: failed, counted.
    fn put_and_prove(&self, key: &str, data: &LocalData, t: &mut Totals) -> Result<Option<Proof>, StoreError> {
        if self.opts.dry_run {
            self.listing.add(format!("would upload {key} ({})", naturalsize(data.digest.size)));
            t.uploaded_files += 1;
            t.uploaded_bytes += data.digest.size;
            return Ok(Some(Proof::Etag));
        }
        let proof = match self.store.put(key, data) {
            Ok(p) => p,
            Err(e) => return self.failed(e, t).map(|_| None),
        };
        self.prove_put(key, data, proof, t)
    }

    /// After a put: count it, and prove the stored bytes by the answers
    /// (`proof`), else by reading back. `Ok(None)`: failed, counted.
    fn prove_put(
        &self,
        key: &str,
        data: &LocalData,
        proof: Option<Proof>,
        t: &mut Totals,
    ) -> Result<Option<Proof>, StoreError> {
        faults::point("after-put");
        t.uploaded_files += 1;
        t.uploaded_bytes += data.digest.size;
        if let Some(proof) = proof {
            return Ok(Some(proof));
        }
        match self.store.verify_stored(key, data) {
            Ok(Comparison::Same(proof)) => Ok(Some(proof)),
            Ok(Comparison::Different(diff)) => {
                log::error!("{key}: the stored object does not match after upload ({diff}); local file kept");
                t.failed_files += 1;
                Ok(None)
            }
            Err(e) => self.failed(e, t).map(|_| None),
        }
    }

    /// An existing object differs from the local file: never overwrite it
    /// blindly. See [`Conflicts`].
    #[allow(clippy::too_many_arguments)]
    fn resolve_conflict(
        &self,
        row: &CacheRow,
        paths: &MediaPaths,
        file: &LocalFile,
        key: &str,
        info: &ObjectInfo,
        data: &LocalData,
        diff: &str,
        t: &mut Totals,
    ) -> Result<Resolution, StoreError> {
        let records = match self.conflicts {
            Conflicts::Keep => {
                log::error!(
                    "{key}: the object in the store differs from the local file ({diff}); both kept. \
                     `media-offload migrate` decides from the homeserver's record which copy is right; \
                     --overwrite-mismatched replaces the object with the local file"
                );
                t.conflicts += 1;
                return Ok(Resolution::Kept);
            }
            Conflicts::Overwrite => {
                log::warn!(
                    "{key}: the object differs from the local file ({diff}); replacing it (--overwrite-mismatched)"
                );
                return Ok(self.put_and_prove(key, data, t)?.map_or(Resolution::Kept, Resolution::Proven));
            }
            Conflicts::ByRecord(records) => records,
        };
        let thumbnail = (file.rel != paths.original).then(|| file.name());
        let record = match records.record(&row.origin, &row.media_id) {
            Ok(r) => r,
            Err(e) => {
                log::error!(
                    "{key}: the object differs from the local file ({diff}) and the homeserver's record could not be read: {e:#}; both kept"
                );
                t.failed_files += 1;
                return Ok(Resolution::Kept);
            }
        };
        let Some(expected) = record.as_ref().and_then(|r| r.expected(thumbnail)) else {
            log::error!(
                "{key}: the object differs from the local file ({diff}), and the homeserver database has no \
                 recorded length for it; both kept"
            );
            t.conflicts += 1;
            return Ok(Resolution::Kept);
        };
        let local_ok = match (data.digest.size == expected.length, expected.sha256) {
            (false, _) => false,
            (true, None) => true,
            (true, Some(want)) => data.sha256().map_err(|e| StoreError::local(format!("{}: {e}", file.rel)))? == want,
        };
        let object_ok = match (info.size == expected.length, expected.sha256) {
            (false, _) => false,
            (true, None) => true,
            (true, Some(want)) => match store::read_back(self.store, key, true) {
                Ok(Some(r)) => r.size == expected.length && r.sha256 == Some(want),
                Ok(None) => false,
                Err(e) => return self.failed(e, t).map(|_| Resolution::Kept),
            },
        };
        let record_text = match expected.sha256 {
            Some(h) => format!("{} bytes, SHA-256 {}", expected.length, hex::encode(h)),
            None => format!("{} bytes", expected.length),
        };
        // The object has the recorded length, but without a recorded hash
        // that proves nothing about its bytes: the local copy goes only if
        // it is the object cut short (an interrupted fetch-back, which
        // writes in place from the start).
        let truncated = match (local_ok, object_ok, expected.sha256) {
            (false, true, None) => match self.truncated_copy(key, data) {
                Ok(yes) => yes,
                Err(e) => return self.failed(e, t).map(|_| Resolution::Kept),
            },
            _ => true,
        };
        match (local_ok, object_ok) {
            (true, false) => {
                log::warn!(
                    "{key}: the object differs from the homeserver's record ({record_text}) and the local file \
                     matches it ({diff}); uploading the local file again"
                );
                let proof = self.put_and_prove(key, data, t)?;
                if proof.is_some() && !self.opts.dry_run {
                    t.replaced_objects += 1;
                }
                Ok(proof.map_or(Resolution::Kept, Resolution::Proven))
            }
            (false, true) if !truncated => {
                log::error!(
                    "{key}: the object and the local file differ ({diff}); the object has the recorded length \
                     ({record_text}) but the local file is not a truncated copy of it; both kept"
                );
                t.conflicts += 1;
                Ok(Resolution::Kept)
            }
            (false, true) => {
                log::warn!(
                    "{}: the local copy is damaged ({diff}; the homeserver's record says {record_text}), probably a \
                     failed or interrupted fetch from the store; removing it so Synapse serves the stored object",
                    file.rel
                );
                Ok(Resolution::RemoveLocal)
            }
            _ => {
                log::error!(
                    "{key}: the object and the local file differ ({diff}) and the homeserver's record \
                     ({record_text}) does not tell which is right; both kept"
                );
                t.conflicts += 1;
                Ok(Resolution::Kept)
            }
        }
    }

    /// Whether the local file is the first bytes of the object: its MD5 is
    /// that of the object's first `size` bytes, read back.
    fn truncated_copy(&self, key: &str, data: &LocalData) -> Result<bool, StoreError> {
        use md5::Digest as _;
        let (mut md5, mut left) = (md5::Md5::new(), data.digest.size);
        let found = self.store.read(key, &mut |chunk| {
            let take = chunk.len().min(left as usize);
            md5.update(&chunk[..take]);
            left -= take as u64;
            Ok(())
        })?;
        Ok(found && left == 0 && <[u8; 16]>::from(md5.finalize()) == data.digest.md5)
    }

    /// Delete a local file, if it is still the one that was read. `proof`
    /// None: a damaged copy the record condemned.
    #[allow(clippy::too_many_arguments)]
    fn remove(
        &self,
        file: &LocalFile,
        opened: &std::fs::File,
        data: &LocalData,
        size: u64,
        modified: SystemTime,
        proof: Option<Proof>,
        t: &mut Totals,
    ) -> Kept {
        if self.opts.dry_run {
            let what = if proof.is_some() { "delete" } else { "remove the damaged local copy" };
            self.listing.add(format!("would {what} {}", file.rel));
            match proof {
                Some(_) => {
                    t.deleted_files += 1;
                    t.deleted_bytes += data.digest.size;
                }
                None => t.repaired_local_files += 1,
            }
            return Kept::Done;
        }
        match self.media.unlink_verified(file, opened, size, modified) {
            Ok(Unlinked::Removed) => {
                faults::point("after-unlink");
                match proof {
                    Some(p) => {
                        t.deleted_files += 1;
                        t.deleted_bytes += size;
                        *t.deleted_by.entry(p.as_str()).or_default() += 1;
                    }
                    None => t.repaired_local_files += 1,
                }
                if let Some((dir, _)) = file.rel.rsplit_once('/') {
                    self.media.prune(dir);
                }
                Kept::Done
            }
            Ok(Unlinked::Gone) => Kept::Done,
            Ok(Unlinked::Changed) => {
                log::warn!("{}: changed while being offloaded; kept for the next run", file.rel);
                Kept::Later
            }
            Err(e) => {
                log::error!("deleting {}: {e}", file.rel);
                t.failed_files += 1;
                Kept::Failed
            }
        }
    }
}

enum Resolution {
    Proven(Proof),
    RemoveLocal,
    Kept,
}

fn ago(t: SystemTime) -> String {
    crate::duration::short(Duration::from_secs(SystemTime::now().duration_since(t).map_or(0, |d| d.as_secs())))
}
