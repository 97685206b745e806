//! `update BASE_PATH DURATION`: `update-db` then `check-deleted`, in one lock.

use std::path::Path;

use anyhow::Result;
use serde_json::json;

use super::{Context, check_deleted, update_db};
use crate::cli::DbSelection;
use crate::report;

pub fn run(ctx: &Context, base: &Path, selection: &DbSelection) -> Result<()> {
    let (_lock, mut cache) = ctx.open_cache()?;
    let synced = update_db::sync(&mut cache, selection)?;
    let checked = check_deleted::check(&mut cache, base)?;
    let mut lines = vec![format!("Synced {} new rows", synced.new_rows)];
    lines.extend(checked.lines());
    report::summary(
        ctx.json,
        &lines,
        json!({"command": "update", "cutoff_ms": synced.cutoff_ms, "new_rows": synced.new_rows,
               "invalid_rows": synced.invalid_rows, "checked": checked.checked,
               "marked_deleted": checked.marked_deleted, "reopened": checked.reopened, "failed": checked.failed}),
    );
    synced.into_result()?;
    checked.into_result()
}
