//! `update BASE_PATH DURATION`: `update-db` then `check-deleted`, in one lock.

use std::path::Path;

use anyhow::Result;

use super::check_deleted::Reopen;
use super::{Context, check_deleted, update_db};
use crate::cache::Rows;
use crate::cli::DbSelection;
use crate::homeserver_db::HomeserverDb;
use crate::lock::StoreLock;
use crate::media_store::MediaStore;
use crate::report;

pub fn run(ctx: &Context, base: &Path, selection: &DbSelection) -> Result<()> {
    let (_lock, mut cache) = ctx.open_cache()?;
    let mut db = HomeserverDb::connect(&update_db::database_of(selection)?)?;
    let synced = update_db::sync_with(&mut cache, &mut db, selection.duration)?;
    let media = MediaStore::open(base, cache.count(Rows::All)? > 0)?;
    crate::lock::warn_if_root_over(&media);
    let _store_lock = StoreLock::acquire(&media, ctx.lock)?;
    let reopen = Reopen { cutoff_ms: synced.cutoff_ms, db: &mut db };
    let checked = check_deleted::check(&mut cache, &media, Some(reopen))?;
    let mut lines = vec![format!("Synced {} new rows", synced.new_rows)];
    lines.extend(checked.lines());
    let mut value = checked.json();
    value["command"] = "update".into();
    value["cutoff_ms"] = synced.cutoff_ms.into();
    value["new_rows"] = synced.new_rows.into();
    value["invalid_rows"] = synced.invalid_rows.into();
    report::summary(ctx.json, &lines, value);
    synced.into_result()?;
    checked.into_result()
}
