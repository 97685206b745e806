//! `check --dendrite-config`: where Dendrite's rows and its media folder
//! disagree.
//!
//! 1. thumbnail rows without their media row;
//! 3. files in hash folders that no row's hash refers to (`tmp/`, Dendrite's
//!    uploads in progress, is never looked at; younger than the grace
//!    period: left alone);
//! 4. rows whose file is missing: Dendrite answers them with a 404 for
//!    good, remote media too;
//! 6. a `file` whose size is not the `file_size_bytes` of its rows.
//!
//! A thumbnail file without a thumbnail row is normal (the folder is shared
//! by every row with the hash, each with its own thumbnail rows) and is not
//! reported. `--fix` removes the orphans of 1 and 3 only.

use std::time::SystemTime;

use anyhow::Result;
use rusqlite::{OptionalExtension, params};

use super::{Context, Index, Options, Report, Stores, counted_file, finish, fix, grace_period, orphan_thumbnail_rows};
use crate::config::dendrite::DendriteSettings;
use crate::homeserver_db::{MediaKey, dendrite};
use crate::lock::{RunLock, StoreLock};
use crate::media_store::{MediaPaths, MediaStore, dendrite_file};
use crate::report::naturalsize;

pub(super) fn run(ctx: &Context, args: &Options, settings: &DendriteSettings) -> Result<()> {
    crate::commands::purge::refuse_store_for_dendrite(&args.store, ctx, "check")?;
    let grace = grace_period(ctx, args)?;
    let _lock = RunLock::acquire(&ctx.cache_db, ctx.lock)?;
    let media = MediaStore::open_dendrite(&settings.base_path, true)?;
    crate::lock::warn_if_root_over(&media);
    let _store_lock = StoreLock::acquire(&media, ctx.lock)?;
    let mut db = dendrite::connect(settings, args.fix)?;
    let index = Index::create(&ctx.cache_db)?;
    index.conn.execute_batch(
        "CREATE TABLE rows (origin TEXT, media_id TEXT, hash TEXT, length INTEGER);
         CREATE TABLE present (hash TEXT PRIMARY KEY) WITHOUT ROWID;",
    )?;
    let young_before = SystemTime::now() - grace;
    let keep = args.samples;
    let server = settings.server_names[0].as_str();
    let mut r = Report::default();

    let tx = index.conn.unchecked_transaction()?;
    db.for_each_media(&mut |m| {
        r.rows += 1;
        tx.prepare_cached("INSERT INTO rows VALUES (?1, ?2, ?3, ?4)")?.execute(params![
            m.row.key.origin,
            m.row.key.media_id,
            m.row.location,
            m.length
        ])?;
        Ok(())
    })?;
    tx.execute_batch("CREATE INDEX rows_hash ON rows (hash)")?;
    tx.commit()?;
    let orphan_rows = orphan_thumbnail_rows(&mut *db, server, keep, &mut r)?;

    // Every file of the hash folders.
    let tx = index.conn.unchecked_transaction()?;
    media.walk(&mut |entry| {
        let Some((size, modified)) = counted_file(&media, &entry, keep, &mut r) else { return Ok(()) };
        let Some((hash, name)) = dendrite_file(&entry.rel) else {
            r.not_media_files.add(entry.rel, size, keep);
            return Ok(());
        };
        let recorded: Option<Option<i64>> = index
            .conn
            .prepare_cached("SELECT length FROM rows WHERE hash = ?1 LIMIT 1")?
            .query_row([&hash], |row| row.get(0))
            .optional()?;
        match recorded {
            Some(length) => {
                if name == "file" {
                    index.conn.prepare_cached("INSERT OR IGNORE INTO present VALUES (?1)")?.execute([&hash])?;
                    if let Some(length) = length.and_then(|l| u64::try_from(l).ok())
                        && length != size
                        && modified <= young_before
                    {
                        r.damaged_files.add(
                            format!("{} ({size} bytes; the homeserver recorded {length})", entry.rel),
                            size,
                            keep,
                        );
                    }
                }
            }
            None if modified > young_before => r.young += 1,
            None => {
                r.unknown_files.add(format!("{} ({})", entry.rel, naturalsize(size)), size, keep);
                index.orphan("file", &entry.rel, size)?;
            }
        }
        Ok(())
    })?;
    tx.commit()?;

    // Rows whose file was not seen, looked at once more (Dendrite may have
    // written the file, or a purge removed the row, meanwhile).
    let mut candidates = Vec::new();
    {
        let mut stmt = index
            .conn
            .prepare("SELECT origin, media_id, hash FROM rows WHERE hash NOT IN (SELECT hash FROM present)")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let (origin, media_id, hash): (String, String, String) = (row.get(0)?, row.get(1)?, row.get(2)?);
            match MediaPaths::dendrite(&origin, &media_id, &hash) {
                Ok(paths) => candidates.push((MediaKey::new(origin, media_id), paths.original)),
                Err(invalid) => log::warn!("{invalid}"),
            }
        }
    }
    for (key, original) in candidates {
        if !media.has_file(&original)? && db.has_media(&key)? {
            r.lost_media.add(format!("{} ({original})", key.mxc(server)), 0, keep);
        }
    }

    if args.fix {
        crate::commands::purge::ensure_live(&mut *db, &settings.describe(), &media, args.force, "fix")?;
        fix(&media, None, &mut *db, &index, &orphan_rows, args.force, &mut r)?;
    }
    finish(ctx, args.fix, grace, Stores::Dendrite, &r)
}
