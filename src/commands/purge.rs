//! `purge`: remove media past a retention period everywhere they live:
//! the homeserver database, the local media store and the object store.
//!
//! * Remote media not accessed for `--remote-older-than` (on
//!   `COALESCE(last_access_ts, created_ts)`), except quarantined ones
//!   (purging them would let Synapse fetch them again and serve them).
//! * Local media only with `--local-older-than`, and never avatars (of
//!   users, room members, the user directory or rooms), quarantined media,
//!   media protected from quarantine, pending uploads or URL previews.
//! * Without durations: `media_retention` from homeserver.yaml.
//! * Dendrite (`--dendrite-config`): by `creation_ts`, local media only
//!   when asked, never an avatar of any origin (profiles, rooms, room
//!   members); a hash folder goes only with the last row of any origin
//!   that has its hash, otherwise only the rows go.
//!
//! Order, per batch: the database rows (media and thumbnails) in one
//! transaction, each re-checked against the rule so a media accessed since
//! it was selected is kept; then cache.db; then the local files; then the
//! objects, whose keys follow from the deleted rows and go in batch
//! deletes (no listing, no lookup: the store's credentials need only the
//! right to delete). Killed anywhere, what remains are orphans (files or
//! objects no row knows), which `check --fix` removes; never a row without
//! its bytes.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use serde_json::json;

use super::Context;
use crate::cache::Cache;
use crate::config::dendrite::{DendriteOptions, DendriteSettings};
use crate::config::settings::{Settings, StoreOptions};
use crate::duration::{cutoff_ms, parse_duration};
use crate::error::Failure;
use crate::faults;
use crate::homeserver_db::{Deleted, HomeserverDb, MediaDb, MediaKey, MediaRow, Retention};
use crate::lock::{RunLock, StoreLock};
use crate::media_store::fs::WalkedKind;
use crate::media_store::{InvalidRow, MediaKind, MediaPaths, MediaStore};
use crate::report::{self, naturalsize};
use crate::store::{self, ObjectStore};

/// Media per database transaction.
const BATCH: usize = 500;

/// Object keys per [`ObjectStore::delete_many`] call: S3's DeleteObjects
/// limit, so each call is one request there.
const OBJECT_BATCH: usize = 1000;

/// What one kind of media is purged by.
#[derive(Debug, Clone)]
struct Rule {
    kind: MediaKind,
    older_than: Duration,
    source: String,
    cutoff_ms: i64,
    size_gt: i64,
}

#[derive(Debug, Default, Clone)]
struct Tally {
    media: u64,
    files: u64,
    file_bytes: u64,
    /// Object keys deleted (or, in a dry run, to delete), whether or not an
    /// object was there: a batch delete does not say, and asking first
    /// would cost a lookup per key and a permission.
    object_keys: u64,
    avatars_kept: u64,
    kept_in_use: u64,
    /// Media whose rows went but whose files other rows still use.
    rows_only: u64,
    refused: u64,
    failed: u64,
}

/// What `purge` is asked to do.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub remote_older_than: Option<Duration>,
    pub local_older_than: Option<Duration>,
    /// Only local media larger than this many bytes.
    pub size_gt: Option<u64>,
    pub dry_run: bool,
    /// Purge although the database does not look like the live one.
    pub force: bool,
    pub store: StoreOptions,
    /// A Dendrite homeserver instead of Synapse.
    pub dendrite: DendriteOptions,
}

pub fn run(ctx: &Context, args: &Options) -> Result<()> {
    if let Some(dendrite) = DendriteSettings::resolve(&args.dendrite, &ctx.file)? {
        return run_dendrite(ctx, args, &dendrite);
    }
    let settings = Settings::resolve(&args.store, &ctx.file)?;
    let hs = &settings.homeserver;
    let retention = [hs.remote_media_lifetime, hs.local_media_lifetime]
        .map(|d| d.map(|d| (d, format!("{}: media_retention", hs.origin))));
    let rules = rules(ctx, args, retention, &format!("media_retention in {}", hs.origin))?;
    let _lock = RunLock::acquire(&ctx.cache_db, ctx.lock)?;
    let media = MediaStore::open(&settings.media_store_path, true)?;
    crate::lock::warn_if_root_over(&media);
    let _store_lock = StoreLock::acquire(&media, ctx.lock)?;
    let store = match &settings.store {
        Some(s) => Some(store::open(s, &settings.media_store_path)?),
        None => {
            log::warn!("no object store configured: purging the database and local files only");
            None
        }
    };
    let prefix = settings.store.as_ref().map(|s| s.prefix.clone()).unwrap_or_default();
    // A dry run changes nothing; and with no cache.db there is nothing to update.
    let mut cache = if args.dry_run || !ctx.cache_db.exists() { None } else { Some(Cache::open(&ctx.cache_db)?) };
    let mut db = HomeserverDb::connect_writable(&settings.database)?;
    ensure_live(db.media(), &settings.database.describe(), &media, args.force, "purge")?;
    let purger = Purger {
        media: &media,
        store: store.as_deref(),
        prefix: &prefix,
        dry_run: args.dry_run,
        listing: report::Listing::new(ctx.json),
        concurrency: settings.concurrency,
        layout: synapse_paths,
    };
    let server_name = settings.homeserver.server_name.as_deref();
    // Synapse's own purge keeps local avatars only.
    purger.run(ctx, db.media(), cache.as_mut(), &rules, |db, kind| match kind {
        MediaKind::Local => db.avatars(server_name),
        MediaKind::Remote => Ok(HashSet::new()),
    })
}

/// `purge --dendrite-config`: the same rules on Dendrite's tables and its
/// shared hash folders; no cache.db and no object store (Dendrite reads
/// none); avatars of any origin are kept.
fn run_dendrite(ctx: &Context, args: &Options, dendrite: &DendriteSettings) -> Result<()> {
    refuse_store_for_dendrite(&args.store, ctx, "purge")?;
    let rules = rules(ctx, args, [None, None], "a Dendrite homeserver has no retention setting of its own")?;
    let _lock = RunLock::acquire(&ctx.cache_db, ctx.lock)?;
    let media = MediaStore::open_dendrite(&dendrite.base_path, true)?;
    crate::lock::warn_if_root_over(&media);
    let _store_lock = StoreLock::acquire(&media, ctx.lock)?;
    let mut db = crate::homeserver_db::dendrite::connect(dendrite, true)?;
    ensure_live(&mut *db, &dendrite.describe(), &media, args.force, "purge")?;
    let purger = Purger {
        media: &media,
        store: None,
        prefix: "",
        dry_run: args.dry_run,
        listing: report::Listing::new(ctx.json),
        concurrency: args.store.concurrency.map_or(16, usize::from),
        layout: dendrite_paths,
    };
    let mut avatars = None;
    purger.run(ctx, &mut *db, None, &rules, |db, _| {
        if avatars.is_none() {
            avatars = Some(db.avatars(None)?);
        }
        Ok(avatars.clone().unwrap_or_default())
    })
}

/// Dendrite's layout: one folder per hash.
pub(crate) fn dendrite_paths(row: &MediaRow) -> Result<MediaPaths, InvalidRow> {
    MediaPaths::dendrite(&row.key.origin, &row.key.media_id, &row.location)
}

/// Refuse object store settings for a Dendrite homeserver: it reads none.
pub(crate) fn refuse_store_for_dendrite(flags: &StoreOptions, ctx: &Context, command: &str) -> Result<()> {
    let flag = [
        (flags.bucket.is_some(), "--bucket"),
        (flags.homeserver_config_path.is_some(), "--homeserver-config-path"),
        (flags.media_store_path.is_some(), "--media-store-path"),
        (ctx.file.config.bucket.is_some(), "bucket in the config file"),
    ]
    .into_iter()
    .find_map(|(set, name)| set.then_some(name));
    if let Some(name) = flag {
        bail!(
            "{command} --dendrite-config does not take {name}: the media store is media_api.base_path in              dendrite.yaml, and Dendrite cannot read media from an object store"
        );
    }
    Ok(())
}

fn rules(
    ctx: &Context,
    args: &Options,
    retention: [Option<(Duration, String)>; 2],
    where_else: &str,
) -> Result<Vec<Rule>> {
    let file = &ctx.file.config.purge;
    // The policy comes whole from the first place that sets one: the
    // command line, else the config file's purge section, else the
    // homeserver's retention. A kind one of them leaves out is not purged,
    // so `--remote-older-than` alone never deletes local media.
    let from_flags = [(args.remote_older_than, "--remote-older-than"), (args.local_older_than, "--local-older-than")]
        .map(|(d, name)| d.map(|d| (d, name.to_owned())));
    let from_file = |text: &Option<String>, key: &str| -> Result<Option<(Duration, String)>> {
        let Some(text) = text else { return Ok(None) };
        let source = ctx.file.source(&format!("purge.{key}"));
        parse_duration(text).map(|d| Some((d, source.clone()))).map_err(|e| anyhow!("{source}: {e}"))
    };
    let [remote, local] = if from_flags.iter().any(Option::is_some) {
        from_flags
    } else if file.remote_older_than.is_some() || file.local_older_than.is_some() {
        [
            from_file(&file.remote_older_than, "remote_older_than")?,
            from_file(&file.local_older_than, "local_older_than")?,
        ]
    } else {
        retention
    };
    let size_gt = args.size_gt.or(file.size_gt).unwrap_or(0);
    let size_gt = i64::try_from(size_gt).map_err(|_| anyhow!("--size-gt {size_gt} is too large"))?;
    let mut rules = Vec::new();
    for (kind, found) in [(MediaKind::Remote, remote), (MediaKind::Local, local)] {
        if let Some((older_than, source)) = found {
            rules.push(Rule { kind, older_than, source, cutoff_ms: cutoff_ms(older_than), size_gt });
        }
    }
    if rules.is_empty() {
        bail!(
            "nothing to purge: no retention is set. Pass --remote-older-than and/or --local-older-than, or set \
             purge.remote_older_than or purge.local_older_than in the config file ({where_else})"
        );
    }
    Ok(rules)
}

/// Refuse to act on a database that is not the one Synapse writes to now.
///
/// A purge deletes what the database says is old, and `check --fix` what it
/// does not know. A database left behind (a SQLite file after a move to
/// PostgreSQL, a restored backup) says everything is old and knows nothing
/// new. So: if its newest activity (the newest event received, found by
/// index; else the newest media `created_ts` or `last_access_ts`) is within
/// the last day, it is live. Otherwise look for a file in the media store
/// modified more than a day after that activity; one such file means the
/// media store lives on without this database. (The walk happens only on a
/// database with no activity for a day: a quiet, small homeserver.)
pub(crate) fn ensure_live(
    db: &mut dyn MediaDb,
    db_name: &str,
    media: &MediaStore,
    force: bool,
    what: &str,
) -> Result<()> {
    const DAY_MS: i64 = 86_400_000;
    let now = cutoff_ms(Duration::ZERO);
    let recent = |ts: Option<i64>| ts.is_some_and(|ts| now - ts < DAY_MS);
    let newest = db.newest_activity()?;
    if recent(newest) {
        return Ok(());
    }
    let threshold = newest.unwrap_or(0) + DAY_MS;
    let mut found = None;
    let walked = media.walk(&mut |w| {
        if let WalkedKind::File { modified, .. } = w.what {
            let ms = modified.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
            if ms > threshold {
                found = Some((w.rel, modified));
                bail!("found");
            }
        }
        Ok(())
    });
    let Some((rel, modified)) = found else {
        return walked;
    };
    let newest_text = match newest {
        Some(ts) => format!(
            "activity (a media stored or viewed, an event received) is from {}",
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ts.max(0) as u64))
        ),
        None => "activity does not exist (no events, no media rows)".to_owned(),
    };
    let message = format!(
        "the database's ({db_name}) newest {newest_text}, but the media store {} holds {rel}, modified \
         {}: this does not look like the database the homeserver uses now (a SQLite file left behind after \
         moving to PostgreSQL looks like this)",
        media.base().display(),
        humantime::format_rfc3339_seconds(modified)
    );
    if force {
        log::warn!("{message}; going on because of --force");
        return Ok(());
    }
    bail!("refusing to {what}: {message}. Check the database settings, or pass --force")
}

/// Where a homeserver keeps a media's files, from its row.
pub(crate) type Layout = fn(&MediaRow) -> Result<MediaPaths, InvalidRow>;

/// Synapse's layout: by origin and filesystem id.
pub(crate) fn synapse_paths(row: &MediaRow) -> Result<MediaPaths, InvalidRow> {
    MediaPaths::new(&row.key.origin, &row.key.media_id, &row.location, row.kind)
}

/// A media whose rows are gone (or, in a dry run, would go).
struct Target {
    deleted: Deleted,
    paths: MediaPaths,
}

pub(crate) struct Purger<'a> {
    pub media: &'a MediaStore,
    pub store: Option<&'a dyn ObjectStore>,
    pub prefix: &'a str,
    pub dry_run: bool,
    /// What a dry run would delete, printed sorted at the end.
    pub listing: report::Listing,
    pub concurrency: usize,
    pub layout: Layout,
}

impl Purger<'_> {
    /// Every rule in turn, then the listing of a dry run and the summary.
    fn run(
        &self,
        ctx: &Context,
        db: &mut dyn MediaDb,
        mut cache: Option<&mut Cache>,
        rules: &[Rule],
        mut avatars: impl FnMut(&mut dyn MediaDb, MediaKind) -> Result<HashSet<MediaKey>>,
    ) -> Result<()> {
        let mut results = Vec::new();
        for rule in rules {
            log::info!(
                "purging {} media not accessed for {} (from {})",
                rule.kind.as_str(),
                crate::duration::short(rule.older_than),
                rule.source
            );
            let keep = avatars(db, rule.kind)?;
            let tally = self.purge(db, cache.as_deref_mut(), rule, &keep)?;
            results.push((rule.clone(), tally));
        }
        self.listing.flush();
        report::print(ctx.json, &Summary { dry_run: self.dry_run, results: &results, has_store: self.store.is_some() });
        let failed: u64 = results.iter().map(|(_, t)| t.failed + t.refused).sum();
        match failed {
            0 => Ok(()),
            count => Err(Failure::Partial { count }.into()),
        }
    }

    /// Purge what `rule` selects: page by page, rows first (in one
    /// transaction per page; a dry run rolls it back), then cache.db, then
    /// files, then objects.
    fn purge(
        &self,
        db: &mut dyn MediaDb,
        mut cache: Option<&mut Cache>,
        rule: &Rule,
        avatars: &HashSet<MediaKey>,
    ) -> Result<Tally> {
        let mut tally = Tally::default();
        let mut after: Option<MediaKey> = None;
        let retention = Retention { kind: rule.kind, cutoff_ms: rule.cutoff_ms, size_gt: rule.size_gt };
        loop {
            let page = db.candidates(&retention, after.as_ref(), BATCH)?;
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            let mut chosen = Vec::with_capacity(page.len());
            for row in page {
                if avatars.contains(&row.key) {
                    tally.avatars_kept += 1;
                    continue;
                }
                match (self.layout)(&row) {
                    Ok(_) => chosen.push(row),
                    Err(invalid) => {
                        log::error!("{invalid}; its row is kept");
                        tally.refused += 1;
                    }
                }
            }
            let deleted = db.delete_page(&retention, &chosen, self.dry_run)?;
            if self.dry_run {
                for d in &deleted {
                    self.listing.add(format!("would delete row {} {}", rule.kind.as_str(), mxc(&d.row.key)));
                }
            } else {
                faults::point("after-purge-commit");
                tally.kept_in_use += (chosen.len() - deleted.len()) as u64;
                if let Some(cache) = cache.as_deref_mut() {
                    let keys: Vec<_> =
                        deleted.iter().map(|d| (d.row.key.origin.clone(), d.row.key.media_id.clone())).collect();
                    cache.remove(&keys)?;
                }
            }
            tally.media += deleted.len() as u64;
            let targets: Vec<Target> = deleted
                .into_iter()
                .filter_map(|deleted| Some(Target { paths: (self.layout)(&deleted.row).ok()?, deleted }))
                .collect();
            tally.rows_only += targets.iter().filter(|t| t.deleted.shared).count() as u64;
            self.remove_files(&targets, &mut tally);
            self.remove_objects(&targets, &mut tally)?;
        }
        Ok(tally)
    }

    /// The files of media whose rows are gone (or, in a dry run, would
    /// be), spread over the worker threads.
    fn remove_files(&self, targets: &[Target], tally: &mut Tally) {
        let shared = Mutex::new(std::mem::take(tally));
        let next = Mutex::new(targets.iter());
        std::thread::scope(|scope| {
            for _ in 0..self.concurrency.min(targets.len().max(1)) {
                scope.spawn(|| {
                    loop {
                        let Some(t) = next.lock().expect("queue poisoned").next() else { break };
                        let mut mine = Tally::default();
                        self.remove_files_of(t, &mut mine);
                        let mut all = shared.lock().expect("tally poisoned");
                        all.files += mine.files;
                        all.file_bytes += mine.file_bytes;
                        all.failed += mine.failed;
                    }
                });
            }
        });
        *tally = shared.into_inner().expect("tally poisoned");
    }

    fn remove_files_of(&self, t: &Target, tally: &mut Tally) {
        if t.deleted.shared {
            // Other rows still use these files: only the rows went.
        } else if self.dry_run {
            match self.media.files_of(&t.paths) {
                Ok(listing) => {
                    for f in listing.files {
                        self.listing.add(format!("would delete file {} ({})", f.rel, naturalsize(f.size)));
                        tally.files += 1;
                        tally.file_bytes += f.size;
                    }
                }
                Err(e) => {
                    log::error!("listing files of {}: {e}", t.paths.original);
                    tally.failed += 1;
                }
            }
        } else {
            match self.media.remove_media(&t.paths) {
                Ok((files, bytes)) => {
                    tally.files += files;
                    tally.file_bytes += bytes;
                    faults::point("after-purge-files");
                }
                Err(e) => {
                    let who = mxc(&t.deleted.row.key);
                    log::error!("deleting files of {who} (its row is gone; `check --fix` removes the rest): {e}");
                    tally.failed += 1;
                }
            }
        }
    }

    /// The objects of media whose rows are gone (or, in a dry run, would
    /// be): the original's key and each deleted thumbnail row's, computed,
    /// never listed or looked up, deleted [`OBJECT_BATCH`] keys at a time.
    /// A failure every further call would meet too (credentials refused,
    /// the store unreachable) stops the run.
    fn remove_objects(&self, targets: &[Target], tally: &mut Tally) -> Result<()> {
        let Some(store) = self.store else { return Ok(()) };
        let keys = object_keys(self.prefix, targets);
        if self.dry_run {
            for key in &keys {
                self.listing.add(format!("would delete object key {key}"));
            }
            tally.object_keys += keys.len() as u64;
            return Ok(());
        }
        for chunk in keys.chunks(OBJECT_BATCH) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            let failed = store.delete_many(&refs);
            tally.object_keys += (chunk.len() - failed.len().min(chunk.len())) as u64;
            tally.failed += failed.len() as u64;
            if let Some((_, e)) = failed.iter().find(|(_, e)| e.kind.is_systematic()) {
                bail!(
                    "stopped: {e} ({} object keys of purged media not deleted; their rows are gone, \
                     `check --fix` removes the objects)",
                    failed.len()
                );
            }
            for (key, e) in &failed {
                log::error!("deleting object {key}: {e} (its row is gone; `check --fix` removes the object)");
            }
            faults::point("after-purge-object");
        }
        Ok(())
    }
}

/// The object keys of purged media: each original's, and the file of each
/// deleted thumbnail row's.
fn object_keys(prefix: &str, targets: &[Target]) -> Vec<String> {
    let mut keys = Vec::with_capacity(targets.len() * 2);
    for t in targets {
        keys.push(format!("{prefix}{}", t.paths.original));
        keys.extend(t.deleted.thumbnails.iter().map(|(name, _)| format!("{prefix}{}/{name}", t.paths.thumbnail_dir)));
    }
    keys
}

fn mxc(key: &MediaKey) -> String {
    if key.origin.is_empty() { format!("(local)/{}", key.media_id) } else { format!("{}/{}", key.origin, key.media_id) }
}

/// `purge`'s summary: per kind purged, what went and what was kept.
struct Summary<'a> {
    dry_run: bool,
    results: &'a [(Rule, Tally)],
    has_store: bool,
}

impl report::Summary for Summary<'_> {
    fn lines(&self) -> Vec<String> {
        let dry = self.dry_run;
        let mut lines = Vec::new();
        for (rule, t) in self.results {
            let kind = rule.kind.as_str();
            lines.push(format!(
                "{} {} {kind} media not accessed for {}",
                report::did(dry, "Purged", "purge"),
                t.media,
                crate::duration::short(rule.older_than)
            ));
            lines.push(format!(
                "{} {} ({})",
                report::did(dry, "Deleted", "delete"),
                report::count(t.files, "file", "files"),
                naturalsize(t.file_bytes)
            ));
            if self.has_store {
                lines.push(format!(
                    "{} {} (a batch delete does not say which had an object)",
                    report::did(dry, "Deleted", "delete"),
                    report::count(t.object_keys, "object key", "object keys"),
                ));
            }
            if t.avatars_kept > 0 {
                let avatars = report::count(t.avatars_kept, "avatar", "avatars");
                lines.push(format!("{} {avatars}", report::did(dry, "Kept", "keep")));
            }
            if t.rows_only > 0 {
                lines.push(format!(
                    "{} the rows only of {} whose files other rows still use",
                    report::did(dry, "Deleted", "delete"),
                    report::count(t.rows_only, "media", "media")
                ));
            }
            if t.kept_in_use > 0 {
                lines.push(format!("Kept {} media accessed or protected since they were selected", t.kept_in_use));
            }
            if t.refused + t.failed > 0 {
                lines.push(format!(
                    "{} refused and {} failed; see the messages above",
                    report::count(t.refused, "row was", "rows were"),
                    report::count(t.failed, "deletion", "deletions")
                ));
            }
        }
        lines
    }

    fn json(&self) -> serde_json::Value {
        let mut value = serde_json::Map::new();
        for (rule, t) in self.results {
            value.insert(
                rule.kind.as_str().to_owned(),
                json!({"older_than_secs": rule.older_than.as_secs(), "source": rule.source, "cutoff_ms": rule.cutoff_ms,
                       "media": t.media, "files": t.files, "file_bytes": t.file_bytes,
                       "object_keys": t.object_keys, "avatars_kept": t.avatars_kept, "kept_in_use": t.kept_in_use,
                       "rows_only": t.rows_only,
                       "refused": t.refused, "failed": t.failed}),
            );
        }
        value.insert("command".into(), json!("purge"));
        value.insert("dry_run".into(), json!(self.dry_run));
        value.insert("object_store".into(), json!(self.has_store));
        serde_json::Value::Object(value)
    }

    fn is_noop(&self) -> bool {
        self.results.iter().all(|(_, t)| t.media + t.files + t.object_keys + t.refused + t.failed == 0)
    }
}
