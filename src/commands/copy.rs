//! `copy`: move the media between stores (S3 to S3, Swift to S3, a store
//! back to the media store, ...), driven by the homeserver database,
//! streamed, verified at the destination, resumable from a state file.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, mpsc};

use anyhow::{Context as _, Result, bail};
use serde_json::json;

use super::Context;
use crate::config::copy::{Side, SideOptions};
use crate::config::settings::{Settings, StoreOptions};
use crate::copy_state::{CopyState, Entry, Status, Wanted};
use crate::error::Failure;
use crate::homeserver_db::HomeserverDb;
use crate::lock::{RunLock, StoreLock};
use crate::media_store::{MediaPaths, MediaStore, StoredFile, check_component};
use crate::report::{self, Counting, Progress, naturalsize};
use crate::store::live::LiveStore;
use crate::store::{self, Comparison, ErrorKind, Etag, LocalData, ObjectInfo, ObjectStore, SourceObject, StoreError};

/// How many bytes of objects a copy holds in memory at once, over all its
/// workers.
const COPY_MEMORY: u64 = 48 * 1024 * 1024;

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub from: SideOptions,
    pub to: SideOptions,
    /// Where the homeserver and its media store are.
    pub store: StoreOptions,
    pub state: Option<PathBuf>,
    pub all_objects: bool,
    pub delete_source: bool,
    pub overwrite_mismatched: bool,
    pub dry_run: bool,
}

/// One side, opened.
struct Opened {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// For the state file's pair and the summary.
    describe: String,
    live: bool,
    settings: Option<store::StoreSettings>,
}

impl Opened {
    fn key(&self, rel: &str) -> String {
        format!("{}{rel}", self.prefix)
    }
}

fn open_side(side: &Side, settings: &Settings, media: &Option<Arc<LiveStore>>, name: &str) -> Result<Opened> {
    let base = &settings.media_store_path;
    let from_settings = |s: &store::StoreSettings| -> Result<Opened> {
        let store: Arc<dyn ObjectStore> = Arc::from(store::open(s, base)?);
        let describe =
            if s.prefix.is_empty() { store.describe() } else { format!("{} prefix {:?}", store.describe(), s.prefix) };
        Ok(Opened { store, prefix: s.prefix.clone(), describe, live: false, settings: Some(s.clone()) })
    };
    match side {
        Side::MediaStore => {
            let live = media.clone().expect("the media store is opened when a side names it");
            Ok(Opened { describe: live.describe(), store: live, prefix: String::new(), live: true, settings: None })
        }
        Side::Homeserver => match &settings.store {
            Some(s) => from_settings(s),
            None => bail!(
                "--{name} store: no object store is configured (homeserver.yaml, the config file, MEDIA_OFFLOAD_BUCKET)"
            ),
        },
        Side::Store(s) => from_settings(s),
    }
}

/// What happened to one key.
#[derive(Debug)]
enum Outcome {
    Copied {
        bytes: u64,
    },
    Identical,
    /// Verified in an earlier run, and its source object is gone: deleted
    /// by that run, which was stopped before it could record it.
    SourceGone,
    WouldCopy {
        bytes: u64,
    },
    Conflict(String),
    MissingSource,
    /// Not at the source, but in the media store: not offloaded yet.
    LocalOnly,
    Failed(StoreError),
}

#[derive(Debug, Default)]
struct Tally {
    keys: u64,
    copied: u64,
    copied_bytes: u64,
    identical: u64,
    already_done: u64,
    conflicts: u64,
    missing: u64,
    local_only: u64,
    failed: u64,
    source_deleted: u64,
}

pub fn run(ctx: &Context, args: &Options) -> Result<()> {
    ctx.refuse_dendrite("copy")?;
    let from_side = Side::resolve("from", &args.from)?;
    let to_side = Side::resolve("to", &args.to)?;
    if args.delete_source && matches!(from_side, Side::MediaStore) {
        bail!(
            "--delete-source with --from media-store: use `upload --delete` or `migrate` to offload, which keep \
             cache.db right and prove each object first"
        );
    }
    let settings = Settings::resolve(&args.store, &ctx.file)?;
    let uses_media = |s: &Side| matches!(s, Side::MediaStore);
    let state_path = args.state.clone().unwrap_or_else(|| {
        let dir = ctx.cache_db.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        dir.join("copy-state.db")
    });

    // Locks first: the state file's, then the media store's and cache.db's
    // where the live media store is written.
    let _state_lock = if args.dry_run { None } else { Some(RunLock::acquire(&state_path, ctx.lock)?) };
    let media = if uses_media(&from_side) || uses_media(&to_side) {
        let opened = MediaStore::open(&settings.media_store_path, uses_media(&from_side))?;
        crate::lock::warn_if_root_over(&opened);
        Some(Arc::new(LiveStore::new(opened)))
    } else {
        None
    };
    let _media_lock = media.as_ref().map(|m| StoreLock::acquire(m.media_store(), ctx.lock)).transpose()?;
    // (cache.db's lock is held with it, until the run ends.)
    let mut cache = if uses_media(&to_side) && !args.dry_run { Some(ctx.open_cache()?) } else { None };

    let from = open_side(&from_side, &settings, &media, "from")?;
    let to = open_side(&to_side, &settings, &media, "to")?;
    if from.describe == to.describe {
        bail!("--from and --to are the same store ({})", from.describe);
    }
    log::info!("copying from {} to {}", from.describe, to.describe);
    let mut state = if args.dry_run {
        CopyState::open(std::path::Path::new(":memory:"), &from.describe, &to.describe)?
    } else {
        CopyState::open(&state_path, &from.describe, &to.describe)?
    };

    discover(args, &settings, &from, &mut state)?;
    let opened_local = if media.is_none() { MediaStore::open(&settings.media_store_path, false).ok() } else { None };
    let local = if from.live { None } else { media.as_ref().map(|m| m.media_store()).or(opened_local.as_ref()) };
    let total = state.count()?;
    let mut tally = Tally { keys: total, ..Tally::default() };
    let listing = report::Listing::new(ctx.json);
    let mut progress = Progress::new("copy", "keys", total, Counting::Transfer { dry_run: args.dry_run });
    let workers = settings.concurrency;
    let memory = Memory::new(COPY_MEMORY);
    let mut after = String::new();
    loop {
        let page = state.page(&after, super::PAGE)?;
        let Some(last) = page.last() else { break };
        after = last.key.clone();
        let (todo, done): (Vec<Entry>, Vec<Entry>) = page.into_iter().partition(|e| match e.status {
            Status::ToDo => true,
            Status::Verified => args.delete_source,
            Status::SourceDeleted => false,
        });
        tally.already_done += done.len() as u64;
        progress.advance(done.len() as u64, 0, 0);
        let run = Run { from: &from, to: &to, args, local, memory: &memory };
        let outcomes = copy_page(&run, &todo, workers)?;
        let mut changes = Vec::new();
        let mut restored = Vec::new();
        let mut stop = None;
        for (entry, outcome) in todo.iter().zip(outcomes) {
            let Some(outcome) = outcome else { continue };
            let (files, bytes) = match &outcome {
                Outcome::Copied { bytes, .. } | Outcome::WouldCopy { bytes } => (1, *bytes),
                _ => (0, 0),
            };
            progress.advance(1, files, bytes);
            match outcome {
                Outcome::Copied { bytes } => {
                    tally.copied += 1;
                    tally.copied_bytes += bytes;
                    changes.push((entry.key.clone(), Status::Verified));
                    restored.extend(entry.media.clone());
                }
                Outcome::Identical => {
                    tally.identical += 1;
                    changes.push((entry.key.clone(), Status::Verified));
                    restored.extend(entry.media.clone());
                }
                Outcome::SourceGone => {
                    tally.already_done += 1;
                    tally.source_deleted += 1;
                    changes.push((entry.key.clone(), Status::SourceDeleted));
                }
                Outcome::WouldCopy { bytes } => {
                    tally.copied += 1;
                    tally.copied_bytes += bytes;
                    listing.add(format!("would copy {} ({})", entry.key, naturalsize(bytes)));
                    if args.delete_source {
                        listing.add(format!("would delete {} at the source, once copied", from.key(&entry.key)));
                    }
                }
                Outcome::Conflict(why) => {
                    tally.conflicts += 1;
                    log::warn!("{}: {why}", to.key(&entry.key));
                }
                Outcome::LocalOnly => tally.local_only += 1,
                Outcome::MissingSource => {
                    tally.missing += 1;
                    log::warn!(
                        "{}: not in {} (the homeserver names it, the source has no such object)",
                        from.key(&entry.key),
                        from.describe
                    );
                }
                Outcome::Failed(e) => {
                    tally.failed += 1;
                    log::error!("{}: {e}", entry.key);
                    if e.kind.is_systematic() {
                        stop = Some(e);
                    }
                }
            }
        }
        if let Some((_, cache)) = cache.as_mut() {
            // Before the state: a crash in between redoes the page, which
            // finds the files identical and marks them again.
            let marks: Vec<_> = restored.into_iter().map(|(o, m)| (o, m, false)).collect();
            cache.set_deleted(&marks)?;
        }
        if !args.dry_run {
            state.set(&changes)?;
            if args.delete_source {
                // Only now: a key's source goes after its verified copy
                // is recorded, so a kill in between leaves a key that the
                // next run finds verified, with its source gone or not.
                tally.source_deleted += delete_sources(&from, &mut state, &changes, &mut tally.failed)?;
            }
        }
        if let Some(e) = stop {
            progress.finish();
            return Err(anyhow::Error::new(e).context("stopping: every further key would fail the same way"));
        }
    }
    progress.finish();
    listing.flush();
    report::print(ctx.json, &Summary { dry_run: args.dry_run, from: &from, to: &to, tally: &tally });
    let bad = tally.conflicts + tally.missing + tally.failed;
    if bad > 0 {
        return Err(Failure::NotCopied { count: bad }.into());
    }
    Ok(())
}

/// Delete the source objects of the keys just recorded as verified, in
/// batches, and record that; returns how many went. A key whose delete
/// failed stays verified: the next run deletes it.
fn delete_sources(from: &Opened, state: &mut CopyState, changes: &[(String, Status)], failed: &mut u64) -> Result<u64> {
    let rels: Vec<&str> = changes.iter().filter(|(_, s)| *s == Status::Verified).map(|(k, _)| k.as_str()).collect();
    if rels.is_empty() {
        return Ok(0);
    }
    let keys: Vec<String> = rels.iter().map(|r| from.key(r)).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let errors = from.store.delete_many(&refs);
    crate::faults::point("copy-after-source-delete");
    let mut stop = None;
    for (key, e) in &errors {
        log::error!("deleting {key} at the source: {e}");
        if e.kind.is_systematic() {
            stop = Some(e.clone());
        }
    }
    *failed += errors.len() as u64;
    let bad: std::collections::HashSet<&str> = errors.iter().map(|(k, _)| k.as_str()).collect();
    let done: Vec<(String, Status)> = rels
        .iter()
        .zip(&keys)
        .filter(|(_, k)| !bad.contains(k.as_str()))
        .map(|(r, _)| ((*r).to_owned(), Status::SourceDeleted))
        .collect();
    state.set(&done)?;
    if let Some(e) = stop {
        return Err(anyhow::Error::new(e).context("stopping: the source refuses deletes"));
    }
    Ok(done.len() as u64)
}

/// Fill the state with the keys to copy: what the homeserver database
/// names (originals, thumbnail rows, and thumbnail files present at the
/// source for a media that has a row), or with `--all-objects` every
/// object of the source.
fn discover(args: &Options, settings: &Settings, from: &Opened, state: &mut CopyState) -> Result<()> {
    let mut batch: Vec<Wanted> = Vec::new();
    let mut added = 0u64;
    let mut flush = |batch: &mut Vec<Wanted>, state: &mut CopyState| -> Result<()> {
        added += state.add(batch)?;
        batch.clear();
        Ok(())
    };
    if args.all_objects {
        let mut failed = None;
        from.store
            .list(&from.prefix, &mut |o| {
                let rel = o.key[from.prefix.len()..].to_owned();
                batch.push(Wanted { key: rel, media: None });
                if batch.len() >= 5000
                    && let Err(e) = flush(&mut batch, state)
                {
                    failed = Some(e);
                    return Err(StoreError::local("stopped"));
                }
                Ok(())
            })
            .or_else(|e| if failed.is_some() { Ok(()) } else { Err(e) })
            .with_context(|| format!("listing {}", from.describe))?;
        if let Some(e) = failed {
            return Err(e);
        }
        flush(&mut batch, state)?;
        log::info!("{added} new keys listed at the source");
        return Ok(());
    }
    let mut db = HomeserverDb::connect(&settings.database)?;
    let mut refused = 0u64;
    db.media().for_each_media(&mut |m| {
        if m.no_bytes.is_some() {
            return Ok(());
        }
        let row = &m.row;
        match MediaPaths::new(&row.key.origin, &row.key.media_id, &row.location, row.kind) {
            Ok(paths) => batch
                .push(Wanted { key: paths.original, media: Some((row.key.origin.clone(), row.key.media_id.clone())) }),
            Err(e) => {
                refused += 1;
                log::warn!("{e}");
            }
        }
        if batch.len() >= 5000 {
            flush(&mut batch, state)?;
        }
        Ok(())
    })?;
    flush(&mut batch, state)?;
    db.media().for_each_thumbnail(&mut |t| {
        match MediaPaths::new(&t.origin, &t.location, &t.location, t.kind) {
            // Only a thumbnail of an original that is copied: not those of
            // URL previews (kept under url_cache_thumbnails/, never offloaded).
            Ok(paths) if check_component(&t.name).is_ok() => {
                if state.has(&paths.original)? {
                    batch.push(Wanted { key: format!("{}/{}", paths.thumbnail_dir, t.name), media: None });
                }
            }
            _ => {
                refused += 1;
                log::warn!("refusing thumbnail row {:?} of {:?} {:?}: not a valid path", t.name, t.origin, t.location);
            }
        }
        if batch.len() >= 5000 {
            flush(&mut batch, state)?;
        }
        Ok(())
    })?;
    flush(&mut batch, state)?;
    // Thumbnails present at the source without a row (Synapse's dynamic
    // ones, rows lost): copied when their media has a row.
    for top in ["local_thumbnails/", "remote_thumbnail/"] {
        let prefix = from.key(top);
        let mut failed = None;
        from.store
            .list(&prefix, &mut |o| {
                let rel = &o.key[from.prefix.len()..];
                let Some(stored) = StoredFile::parse(rel) else { return Ok(()) };
                let Ok(paths) =
                    MediaPaths::new(&stored.origin, &stored.filesystem_id, &stored.filesystem_id, stored.kind)
                else {
                    return Ok(());
                };
                match state.has(&paths.original) {
                    Ok(true) => batch.push(Wanted { key: rel.to_owned(), media: None }),
                    Ok(false) => {}
                    Err(e) => {
                        failed = Some(e);
                        return Err(StoreError::local("stopped"));
                    }
                }
                Ok(())
            })
            .or_else(|e| if failed.is_some() || e.kind == ErrorKind::NotFound { Ok(()) } else { Err(e) })
            .with_context(|| format!("listing the thumbnails of {}", from.describe))?;
        if let Some(e) = failed {
            return Err(e);
        }
        flush(&mut batch, state)?;
    }
    if refused > 0 {
        log::warn!("{refused} rows refused (see above): their files are not copied");
    }
    log::info!("{added} new keys from the homeserver database");
    Ok(())
}

/// Copy the keys of a page, `workers` at a time; outcomes in page order.
fn copy_page(run: &Run<'_>, todo: &[Entry], workers: usize) -> Result<Vec<Option<Outcome>>> {
    if todo.is_empty() {
        return Ok(Vec::new());
    }
    let (send, receive) = mpsc::channel::<usize>();
    for i in 0..todo.len() {
        send.send(i).expect("the receiver is here");
    }
    drop(send);
    let receive = Mutex::new(receive);
    let results: Mutex<HashMap<usize, Outcome>> = Mutex::new(HashMap::new());
    // A systematic failure stops every worker.
    let stopped = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..workers.min(todo.len()) {
            s.spawn(|| {
                loop {
                    let next = receive.lock().expect("queue").recv();
                    let Ok(i) = next else { break };
                    if stopped.load(std::sync::atomic::Ordering::Relaxed) {
                        continue;
                    }
                    let outcome = copy_one(run, &todo[i]);
                    if let Outcome::Failed(e) = &outcome
                        && e.kind.is_systematic()
                    {
                        stopped.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    results.lock().expect("results").insert(i, outcome);
                }
            });
        }
    });
    let mut results = results.into_inner().expect("results");
    // A key not tried (the run stopped) has no outcome and stays to do.
    Ok((0..todo.len()).map(|i| results.remove(&i)).collect())
}

/// Two ETags that checksum the content and agree, with equal sizes.
fn same_by_etags(a: &ObjectInfo, b: &ObjectInfo) -> bool {
    a.size == b.size
        && match (a.etag, b.etag) {
            (Etag::Md5(x), Etag::Md5(y)) => x == y,
            (Etag::Multipart { md5: x, parts: p }, Etag::Multipart { md5: y, parts: q }) => x == y && p == q,
            _ => false,
        }
}

/// What every worker needs.
struct Run<'a> {
    from: &'a Opened,
    to: &'a Opened,
    args: &'a Options,
    /// The media store, to tell a key missing at the source that is still
    /// on local disk (not offloaded yet) from one that is lost.
    local: Option<&'a MediaStore>,
    memory: &'a Memory,
}

fn copy_one(run: &Run<'_>, entry: &Entry) -> Outcome {
    match try_copy_one(run, &entry.key, entry.status == Status::Verified) {
        Ok(o) => o,
        Err(e) => Outcome::Failed(e),
    }
}

fn try_copy_one(run: &Run<'_>, rel: &str, verified_before: bool) -> Result<Outcome, StoreError> {
    let (from, to, args) = (run.from, run.to, run.args);
    let (src_key, dst_key) = (from.key(rel), to.key(rel));
    let Some(src) = from.store.head(&src_key)? else {
        if verified_before {
            return Ok(Outcome::SourceGone);
        }
        if run.local.is_some_and(|m| m.has_file(rel).unwrap_or(false)) {
            return Ok(Outcome::LocalOnly);
        }
        return Ok(Outcome::MissingSource);
    };
    if !src.readable {
        return Err(StoreError::new(
            ErrorKind::Archived,
            format!("{src_key}: its storage class needs a restore before it can be read"),
        ));
    }
    let existing = to.store.head(&dst_key)?;
    let read_source = || -> Result<LocalData, StoreError> {
        let object = SourceObject::new(from.store.clone(), src_key.clone(), src.size);
        let data = LocalData::of_object(object, to.store.part_size(src.size))?;
        if let Etag::Md5(md5) = src.etag
            && md5 != data.digest.md5
        {
            return Err(StoreError::new(
                ErrorKind::BadDigest,
                format!("{src_key}: the bytes read do not have the MD5 of the source's ETag; not copied"),
            ));
        }
        Ok(data)
    };
    if let Some(dst) = &existing {
        let same = same_by_etags(&src, dst) || {
            let _memory = run.memory.take(buffered(src.size));
            let data = read_source()?;
            match to.store.compare(&dst_key, dst, &data)? {
                Comparison::Same(_) => true,
                Comparison::Different(d) if !args.overwrite_mismatched => {
                    return Ok(Outcome::Conflict(format!(
                        "the destination holds another object ({}, the source's is {} bytes, MD5 {}); kept: \
                         --overwrite-mismatched replaces it",
                        describe_object(d.object_size, d.object_md5),
                        d.local_size,
                        hex::encode(d.local_md5)
                    )));
                }
                Comparison::Different(_) if args.dry_run => return Ok(Outcome::WouldCopy { bytes: src.size }),
                Comparison::Different(_) => return put_verified(to, &dst_key, &data),
            }
        };
        if same {
            return Ok(Outcome::Identical);
        }
    }
    if args.dry_run {
        return Ok(Outcome::WouldCopy { bytes: src.size });
    }
    let _memory = run.memory.take(buffered(src.size));
    let data = read_source()?;
    put_verified(to, &dst_key, &data)
}

/// What copying an object of `size` bytes holds in memory at most: the
/// object itself up to the in-memory limit; above, the parts in flight
/// (S3 reads up to 4 parts ahead) and a read window.
fn buffered(size: u64) -> u64 {
    if size <= store::COPY_IN_MEMORY_LIMIT { size } else { 5 * store::COPY_IN_MEMORY_LIMIT }
}

/// The bytes of objects the workers may hold in memory at once: a worker
/// waits for room before it reads an object, so sixteen large objects do
/// not take sixteen times their buffers.
struct Memory {
    left: Mutex<u64>,
    freed: std::sync::Condvar,
    total: u64,
}

/// Room taken in [`Memory`], given back when dropped.
struct Taken<'a> {
    memory: &'a Memory,
    n: u64,
}

impl Memory {
    fn new(total: u64) -> Self {
        Self { left: Mutex::new(total), freed: std::sync::Condvar::new(), total }
    }

    fn take(&self, n: u64) -> Taken<'_> {
        let n = n.min(self.total);
        let mut left = self.left.lock().unwrap_or_else(|e| e.into_inner());
        while *left < n {
            left = self.freed.wait(left).unwrap_or_else(|e| e.into_inner());
        }
        *left -= n;
        Taken { memory: self, n }
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        *self.memory.left.lock().unwrap_or_else(|e| e.into_inner()) += self.n;
        self.memory.freed.notify_all();
    }
}

fn describe_object(size: u64, md5: Option<[u8; 16]>) -> String {
    match md5 {
        Some(m) => format!("{size} bytes, MD5 {}", hex::encode(m)),
        None => format!("{size} bytes"),
    }
}

fn put_verified(to: &Opened, dst_key: &str, data: &LocalData) -> Result<Outcome, StoreError> {
    let proof = to.store.put(dst_key, data)?;
    crate::faults::point("copy-after-put");
    if proof.is_none() {
        match to.store.verify_stored(dst_key, data)? {
            Comparison::Same(_) => {}
            Comparison::Different(d) => {
                return Err(StoreError::new(
                    ErrorKind::BadDigest,
                    format!("{dst_key}: the destination does not hold what was sent ({d})"),
                ));
            }
        }
    }
    crate::faults::point("copy-after-verify");
    Ok(Outcome::Copied { bytes: data.digest.size })
}

/// What to change in homeserver.yaml for Synapse to read the destination.
fn config_change(to: &Opened) -> String {
    if to.live {
        return "the media are in the media store again: remove the storage provider from media_storage_providers \
                in homeserver.yaml and stop the offload timer"
            .to_owned();
    }
    let Some(s) = &to.settings else { return String::new() };
    if s.swift.is_some() {
        return format!("in homeserver.yaml's Swift storage provider config, set container: {}", s.bucket);
    }
    if let Ok(store::Target::Directory(dir)) = store::parse_target(&s.bucket) {
        return format!(
            "Synapse reads a directory store with synapse.media.storage_provider.FileStorageProviderBackend, \
             config: directory: {}",
            dir.display()
        );
    }
    let mut parts = vec![format!("bucket: {}", s.bucket)];
    if let Some(e) = &s.endpoint_url {
        parts.push(format!("endpoint_url: {e}"));
    }
    if let Some(r) = &s.region {
        parts.push(format!("region_name: {r}"));
    }
    if !s.prefix.is_empty() {
        parts.push(format!("prefix: {}", s.prefix));
    }
    format!(
        "in homeserver.yaml's s3_storage_provider.S3StorageProviderBackend config, set {} (and its access keys)",
        parts.join(", ")
    )
}

struct Summary<'a> {
    dry_run: bool,
    from: &'a Opened,
    to: &'a Opened,
    tally: &'a Tally,
}

impl report::Summary for Summary<'_> {
    fn lines(&self) -> Vec<String> {
        let t = self.tally;
        let mut out = vec![format!(
            "{} {} ({}) from {} to {}; {} identical already, {} done in earlier runs.",
            report::did(self.dry_run, "Copied", "copy"),
            report::count(t.copied, "key", "keys"),
            naturalsize(t.copied_bytes),
            self.from.describe,
            self.to.describe,
            t.identical,
            t.already_done
        )];
        if t.source_deleted > 0 {
            out.push(format!(
                "Deleted {} at the source, each after its copy was verified.",
                report::count(t.source_deleted, "object", "objects")
            ));
        }
        if t.local_only > 0 {
            out.push(format!(
                "{} only in the media store (not offloaded yet): not copied; the offload puts them in the store \
                 homeserver.yaml names.",
                report::count(t.local_only, "key is", "keys are")
            ));
        }
        if t.conflicts + t.missing + t.failed > 0 {
            out.push(format!(
                "Not copied: {} conflicting (kept at the destination), {} missing at the source, {} failed; see the \
                 messages above. A rerun retries them.",
                t.conflicts, t.missing, t.failed
            ));
        } else if !self.dry_run {
            let verified = t.copied + t.identical + t.already_done;
            out.push(format!("{verified} of the {} keys are at the destination, verified.", t.keys));
            out.push(format!("Next: {}.", config_change(self.to)));
        }
        out
    }

    fn json(&self) -> serde_json::Value {
        let t = self.tally;
        json!({
            "command": "copy",
            "dry_run": self.dry_run,
            "from": self.from.describe,
            "to": self.to.describe,
            "keys": t.keys,
            "copied": t.copied,
            "copied_bytes": t.copied_bytes,
            "skipped_identical": t.identical,
            "already_done": t.already_done,
            "conflicts": t.conflicts,
            "missing_source": t.missing,
            "local_only": t.local_only,
            "failed": t.failed,
            "source_deleted": t.source_deleted,
            "homeserver_config_change": config_change(self.to),
        })
    }

    fn is_noop(&self) -> bool {
        let t = self.tally;
        t.copied + t.identical + t.conflicts + t.missing + t.failed + t.source_deleted + t.local_only == 0
    }
}
