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
//!
//! Order, per batch: the database rows (media and thumbnails) in one
//! transaction, each re-checked against the rule so a media accessed since
//! it was selected is kept; then cache.db; then the local files; then the
//! objects. Killed anywhere, what remains are orphans (files or objects no
//! row knows), which `check --fix` removes; never a row without its bytes.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use serde_json::json;

use super::Context;
use crate::cache::Cache;
use crate::config::settings::{Settings, StoreOptions};
use crate::duration::{cutoff_ms, parse_duration};
use crate::error::Failure;
use crate::faults;
use crate::homeserver_db::{HomeserverDb, Param};
use crate::lock::{RunLock, StoreLock};
use crate::media_store::fs::WalkedKind;
use crate::media_store::{MediaKind, MediaPaths, MediaStore};
use crate::report::{self, naturalsize};
use crate::store::{self, ObjectStore};

/// Media per database transaction.
const BATCH: usize = 500;

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
    objects: u64,
    object_bytes: u64,
    avatars_kept: u64,
    kept_in_use: u64,
    refused: u64,
    failed: u64,
}

struct Target {
    origin: String,
    media_id: String,
    paths: MediaPaths,
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
}

pub fn run(ctx: &Context, args: &Options) -> Result<()> {
    let settings = Settings::resolve(&args.store, &ctx.file)?;
    let rules = rules(ctx, args, &settings)?;
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
    ensure_live(&mut db, &settings.database.describe(), &media, args.force, "purge")?;
    let purger = Purger {
        media: &media,
        store: store.as_deref(),
        prefix: &prefix,
        dry_run: args.dry_run,
        listing: report::Listing::new(ctx.json),
        concurrency: settings.concurrency,
    };

    let mut results = Vec::new();
    for rule in &rules {
        log::info!(
            "purging {} media not accessed for {} (from {})",
            rule.kind.as_str(),
            crate::duration::short(rule.older_than),
            rule.source
        );
        let avatars = match rule.kind {
            MediaKind::Local => avatar_media_ids(&mut db, settings.homeserver.server_name.as_deref())?,
            MediaKind::Remote => HashSet::new(),
        };
        let tally = purger.purge(&mut db, cache.as_mut(), rule, &avatars)?;
        results.push((rule.clone(), tally));
    }
    purger.listing.flush();
    report::print(ctx.json, &Summary { dry_run: args.dry_run, results: &results, has_store: store.is_some() });
    let failed: u64 = results.iter().map(|(_, t)| t.failed + t.refused).sum();
    match failed {
        0 => Ok(()),
        count => Err(Failure::Partial { count }.into()),
    }
}

fn rules(ctx: &Context, args: &Options, settings: &Settings) -> Result<Vec<Rule>> {
    let file = &ctx.file.config.purge;
    // The policy comes whole from the first place that sets one: the
    // command line, else the config file's purge section, else
    // media_retention. A kind one of them leaves out is not purged, so
    // `--remote-older-than` alone never deletes local media.
    let from_flags = [(args.remote_older_than, "--remote-older-than"), (args.local_older_than, "--local-older-than")]
        .map(|(d, name)| d.map(|d| (d, name.to_owned())));
    let from_file = |text: &Option<String>, key: &str| -> Result<Option<(Duration, String)>> {
        let Some(text) = text else { return Ok(None) };
        let source = ctx.file.source(&format!("purge.{key}"));
        parse_duration(text).map(|d| Some((d, source.clone()))).map_err(|e| anyhow!("{source}: {e}"))
    };
    let retention = |d: Option<Duration>| d.map(|d| (d, format!("{}: media_retention", settings.homeserver.origin)));
    let [remote, local] = if from_flags.iter().any(Option::is_some) {
        from_flags
    } else if file.remote_older_than.is_some() || file.local_older_than.is_some() {
        [
            from_file(&file.remote_older_than, "remote_older_than")?,
            from_file(&file.local_older_than, "local_older_than")?,
        ]
    } else {
        [retention(settings.homeserver.remote_media_lifetime), retention(settings.homeserver.local_media_lifetime)]
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
            "nothing to purge: no retention is set. Pass --remote-older-than and/or --local-older-than, set \
             purge.remote_older_than or purge.local_older_than in the config file, or media_retention in {}",
            settings.homeserver.origin
        );
    }
    Ok(rules)
}

/// Local media ids in use as an avatar, as Synapse's own purge protects
/// them: profiles, room memberships, the user directory and room state.
fn avatar_media_ids(db: &mut HomeserverDb, server_name: Option<&str>) -> Result<HashSet<String>> {
    const SQL: &str = "SELECT avatar_url FROM profiles WHERE avatar_url LIKE 'mxc://%' \
         UNION SELECT avatar_url FROM room_memberships WHERE avatar_url LIKE 'mxc://%' \
         UNION SELECT avatar_url FROM user_directory WHERE avatar_url LIKE 'mxc://%' \
         UNION SELECT avatar FROM room_stats_state WHERE avatar LIKE 'mxc://%'";
    let mut ids = HashSet::new();
    db.for_each_row(SQL, &[], "avatars (profiles, room_memberships, user_directory, room_stats_state)", |row| {
        let Some(url) = row.into_iter().next().flatten() else { return Ok(()) };
        let Some((server, id)) = url.trim_start_matches("mxc://").split_once('/') else { return Ok(()) };
        // Without a server_name, any server's id protects ours: safe side.
        if server_name.is_none_or(|name| name == server) {
            ids.insert(id.to_owned());
        }
        Ok(())
    })?;
    log::debug!("{} local media are avatars and will be kept", ids.len());
    Ok(ids)
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
    db: &mut HomeserverDb,
    db_name: &str,
    media: &MediaStore,
    force: bool,
    what: &str,
) -> Result<()> {
    const DAY_MS: i64 = 86_400_000;
    let now = cutoff_ms(Duration::ZERO);
    let recent = |ts: Option<i64>| ts.is_some_and(|ts| now - ts < DAY_MS);
    let event = db.newest_event();
    if recent(event) {
        return Ok(());
    }
    let newest = event.max(db.newest_media_activity()?);
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
         {}: this does not look like the database Synapse uses now (a SQLite file left behind after moving to \
         PostgreSQL looks like this)",
        media.base().display(),
        humantime::format_rfc3339_seconds(modified)
    );
    if force {
        log::warn!("{message}; going on because of --force");
        return Ok(());
    }
    bail!("refusing to {what}: {message}. Check the database settings, or pass --force")
}

struct Purger<'a> {
    media: &'a MediaStore,
    store: Option<&'a dyn ObjectStore>,
    prefix: &'a str,
    dry_run: bool,
    /// What a dry run would delete, printed sorted at the end.
    listing: report::Listing,
    concurrency: usize,
}

impl Purger<'_> {
    fn purge(
        &self,
        db: &mut HomeserverDb,
        mut cache: Option<&mut Cache>,
        rule: &Rule,
        avatars: &HashSet<String>,
    ) -> Result<Tally> {
        let mut tally = Tally::default();
        let mut after = (String::new(), String::new());
        loop {
            let page = select_page(db, rule, &after)?;
            let Some(last) = page.last() else { break };
            after = (last.0.clone(), last.1.clone());
            let mut targets = Vec::with_capacity(page.len());
            for (origin, media_id, filesystem_id) in page {
                if rule.kind == MediaKind::Local && avatars.contains(&media_id) {
                    tally.avatars_kept += 1;
                    continue;
                }
                match MediaPaths::new(&origin, &media_id, &filesystem_id, rule.kind) {
                    Ok(paths) => targets.push(Target { origin, media_id, paths }),
                    Err(invalid) => {
                        log::error!("{invalid}; its row is kept");
                        tally.refused += 1;
                    }
                }
            }
            if self.dry_run {
                for t in &targets {
                    self.listing.add(format!("would delete row {} {}", rule.kind.as_str(), mxc(t)));
                }
            } else {
                let deleted = delete_rows(db, rule, &targets)?;
                faults::point("after-purge-commit");
                tally.kept_in_use += (targets.len() - deleted.iter().filter(|d| **d).count()) as u64;
                targets = targets.into_iter().zip(deleted).filter_map(|(t, d)| d.then_some(t)).collect();
                if let Some(cache) = cache.as_deref_mut() {
                    let keys: Vec<_> = targets.iter().map(|t| (t.origin.clone(), t.media_id.clone())).collect();
                    cache.remove(&keys)?;
                }
            }
            tally.media += targets.len() as u64;
            self.remove_bytes(&targets, &mut tally);
        }
        Ok(tally)
    }

    /// Files, then objects, of media whose rows are gone (or, in a dry
    /// run, would be), spread over the worker threads.
    fn remove_bytes(&self, targets: &[Target], tally: &mut Tally) {
        let shared = Mutex::new(std::mem::take(tally));
        let next = Mutex::new(targets.iter());
        std::thread::scope(|scope| {
            for _ in 0..self.concurrency.min(targets.len().max(1)) {
                scope.spawn(|| {
                    loop {
                        let Some(t) = next.lock().expect("queue poisoned").next() else { break };
                        let mut mine = Tally::default();
                        self.remove_one(t, &mut mine);
                        let mut all = shared.lock().expect("tally poisoned");
                        all.files += mine.files;
                        all.file_bytes += mine.file_bytes;
                        all.objects += mine.objects;
                        all.object_bytes += mine.object_bytes;
                        all.failed += mine.failed;
                    }
                });
            }
        });
        *tally = shared.into_inner().expect("tally poisoned");
    }

    fn remove_one(&self, t: &Target, tally: &mut Tally) {
        if self.dry_run {
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
                    log::error!("deleting files of {} (its row is gone; `check --fix` removes the rest): {e}", mxc(t));
                    tally.failed += 1;
                }
            }
        }
        let Some(store) = self.store else { return };
        let original = format!("{}{}", self.prefix, t.paths.original);
        let thumbnails = format!("{}{}/", self.prefix, t.paths.thumbnail_dir);
        let mut keys = Vec::new();
        let listed = store
            .list(&original, &mut |o| {
                if o.key == original {
                    keys.push(o);
                }
                Ok(())
            })
            .and_then(|()| {
                store.list(&thumbnails, &mut |o| {
                    keys.push(o);
                    Ok(())
                })
            });
        if let Err(e) = listed {
            log::error!("listing objects of {}: {e}", mxc(t));
            tally.failed += 1;
            return;
        }
        for o in keys {
            if self.dry_run {
                self.listing.add(format!("would delete object {} ({})", o.key, naturalsize(o.size)));
            } else if let Err(e) = store.delete(&o.key) {
                log::error!("{e} (its row is gone; `check --fix` removes the object)");
                tally.failed += 1;
                continue;
            } else {
                faults::point("after-purge-object");
            }
            tally.objects += 1;
            tally.object_bytes += o.size;
        }
    }
}

fn mxc(t: &Target) -> String {
    if t.origin.is_empty() { format!("(local)/{}", t.media_id) } else { format!("{}/{}", t.origin, t.media_id) }
}

/// The conditions a row must meet to be purged, shared by the selection and
/// the deletion (which re-checks them, so a media accessed meanwhile stays).
fn conditions(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Remote => "COALESCE(last_access_ts, created_ts) < CAST($1 AS BIGINT) AND quarantined_by IS NULL",
        MediaKind::Local => {
            "COALESCE(last_access_ts, created_ts) < CAST($1 AS BIGINT) AND media_length IS NOT NULL \
             AND media_length > CAST($2 AS BIGINT) AND url_cache IS NULL AND quarantined_by IS NULL \
             AND NOT safe_from_quarantine"
        }
    }
}

/// The next page of candidates after `after` (origin, media_id), by key.
fn select_page(db: &mut HomeserverDb, rule: &Rule, after: &(String, String)) -> Result<Vec<(String, String, String)>> {
    let sql = match rule.kind {
        MediaKind::Remote => format!(
            "SELECT media_origin, media_id, filesystem_id FROM remote_media_cache WHERE {} \
             AND (media_origin > $2 OR (media_origin = $2 AND media_id > $3)) \
             ORDER BY media_origin, media_id LIMIT {BATCH}",
            conditions(MediaKind::Remote)
        ),
        MediaKind::Local => format!(
            "SELECT '', media_id, media_id FROM local_media_repository WHERE {} AND media_id > $3 \
             ORDER BY media_id LIMIT {BATCH}",
            conditions(MediaKind::Local)
        ),
    };
    let params = match rule.kind {
        MediaKind::Remote => {
            vec![Param::Int(rule.cutoff_ms), Param::Text(after.0.clone()), Param::Text(after.1.clone())]
        }
        MediaKind::Local => vec![Param::Int(rule.cutoff_ms), Param::Int(rule.size_gt), Param::Text(after.1.clone())],
    };
    let mut page = Vec::new();
    let table = match rule.kind {
        MediaKind::Remote => "remote_media_cache",
        MediaKind::Local => "local_media_repository",
    };
    db.for_each_row(&sql, &params, table, |row| {
        let mut row = row.into_iter().map(Option::unwrap_or_default);
        let mut next = || row.next().unwrap_or_default();
        page.push((next(), next(), next()));
        Ok(())
    })?;
    Ok(page)
}

/// Delete the rows of `targets` (media and thumbnails) in one transaction;
/// true for each media whose row was deleted.
fn delete_rows(db: &mut HomeserverDb, rule: &Rule, targets: &[Target]) -> Result<Vec<bool>> {
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    let (media_sql, thumbs_sql) = match rule.kind {
        MediaKind::Remote => (
            format!(
                "DELETE FROM remote_media_cache WHERE {} AND media_origin = $2 AND media_id = $3",
                conditions(MediaKind::Remote)
            ),
            "DELETE FROM remote_media_cache_thumbnails WHERE media_origin = $1 AND media_id = $2".to_owned(),
        ),
        MediaKind::Local => (
            format!("DELETE FROM local_media_repository WHERE {} AND media_id = $3", conditions(MediaKind::Local)),
            "DELETE FROM local_media_repository_thumbnails WHERE media_id = $1".to_owned(),
        ),
    };
    let mut statements = Vec::with_capacity(targets.len() * 2);
    for t in targets {
        let index = statements.len();
        match rule.kind {
            MediaKind::Remote => {
                statements.push((
                    media_sql.as_str(),
                    vec![Param::Int(rule.cutoff_ms), Param::Text(t.origin.clone()), Param::Text(t.media_id.clone())],
                    None,
                ));
                statements.push((
                    thumbs_sql.as_str(),
                    vec![Param::Text(t.origin.clone()), Param::Text(t.media_id.clone())],
                    Some(index),
                ));
            }
            MediaKind::Local => {
                statements.push((
                    media_sql.as_str(),
                    vec![Param::Int(rule.cutoff_ms), Param::Int(rule.size_gt), Param::Text(t.media_id.clone())],
                    None,
                ));
                statements.push((thumbs_sql.as_str(), vec![Param::Text(t.media_id.clone())], Some(index)));
            }
        }
    }
    let changed = db.transaction(&statements)?;
    Ok(changed.chunks(2).map(|pair| pair[0] > 0).collect())
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
                    "{} {} ({})",
                    report::did(dry, "Deleted", "delete"),
                    report::count(t.objects, "object", "objects"),
                    naturalsize(t.object_bytes)
                ));
            }
            if t.avatars_kept > 0 {
                let avatars = report::count(t.avatars_kept, "avatar", "avatars");
                lines.push(format!("{} {avatars}", report::did(dry, "Kept", "keep")));
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
                       "media": t.media, "files": t.files, "file_bytes": t.file_bytes, "objects": t.objects,
                       "object_bytes": t.object_bytes, "avatars_kept": t.avatars_kept, "kept_in_use": t.kept_in_use,
                       "refused": t.refused, "failed": t.failed}),
            );
        }
        value.insert("command".into(), json!("purge"));
        value.insert("dry_run".into(), json!(self.dry_run));
        value.insert("object_store".into(), json!(self.has_store));
        serde_json::Value::Object(value)
    }

    fn is_noop(&self) -> bool {
        self.results.iter().all(|(_, t)| t.media + t.files + t.objects + t.refused + t.failed == 0)
    }
}
