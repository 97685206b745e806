//! `update BASE_PATH DURATION`: `update-db` then `check-deleted`, in one lock.

use std::path::Path;

use anyhow::Result;

use super::check_deleted::Reopen;
use super::{Context, check_deleted, update_db};
use crate::cache::Rows;
use crate::homeserver_db::HomeserverDb;
use crate::lock::StoreLock;
use crate::media_store::MediaStore;
use crate::report;

pub fn run(ctx: &Context, base: &Path, selection: &update_db::Options) -> Result<()> {
    let (_lock, mut cache) = ctx.open_cache()?;
    let mut db = HomeserverDb::connect(&update_db::database_of(selection)?)?;
    let synced = update_db::sync_with(&mut cache, &mut db, selection.duration)?;
    let media = MediaStore::open(base, cache.any(Rows::All)?)?;
    crate::lock::warn_if_root_over(&media);
    let _store_lock = StoreLock::acquire(&media, ctx.lock)?;
    let reopen = Reopen { cutoff_ms: synced.cutoff_ms, db: &mut db };
    let checked = check_deleted::check(&mut cache, &media, Some(reopen))?;
    report::print(ctx.json, &Summary { synced: &synced, checked: &checked });
    synced.into_result()?;
    checked.into_result()
}

struct Summary<'a> {
    synced: &'a update_db::Synced,
    checked: &'a check_deleted::Checked,
}

impl report::Summary for Summary<'_> {
    fn lines(&self) -> Vec<String> {
        let mut lines = self.synced.lines_for(false);
        lines.extend(self.checked.lines_for(false));
        lines
    }

    fn json(&self) -> serde_json::Value {
        let mut value = self.checked.json();
        value["command"] = "update".into();
        value["cutoff_ms"] = self.synced.cutoff_ms.into();
        value["new_rows"] = self.synced.new_rows.into();
        value["invalid_rows"] = self.synced.invalid_rows.into();
        value
    }

    fn is_noop(&self) -> bool {
        report::Summary::is_noop(self.synced) && self.checked.is_noop()
    }
}
