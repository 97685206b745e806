//! `write [OUT|-]`: list the files and thumbnail folders of every media not
//! known to be deleted (e.g. for rsync or rclone `--files-from`).

use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context as _, Result};

use super::{Context, PAGE};
use crate::cache::{Cache, Rows};

pub fn run(ctx: &Context, out: &Path) -> Result<()> {
    // Read-only: no lock needed, and a running upload is not disturbed.
    let cache = Cache::open(&ctx.cache_db)?;
    let sink: Box<dyn Write> = if out == Path::new("-") {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::fs::File::create(out).with_context(|| format!("could not create {}", out.display()))?)
    };
    let mut sink = BufWriter::new(sink);
    let mut after = 0;
    let mut invalid = 0u64;
    loop {
        let page = cache.page(Rows::NotDeleted, after, PAGE)?;
        let Some(last) = page.last() else { break };
        after = last.rowid;
        for row in &page {
            match row.paths() {
                Ok(p) => match writeln!(sink, "{}\n{}/", p.original, p.thumbnail_dir) {
                    // `write | head`: the reader has what it wanted.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                    other => other.with_context(|| format!("writing to {}", out.display()))?,
                },
                Err(why) => {
                    log::error!("{why}");
                    invalid += 1;
                }
            }
        }
    }
    match sink.flush() {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
        other => other.with_context(|| format!("writing to {}", out.display()))?,
    }
    match invalid {
        0 => Ok(()),
        count => Err(crate::error::Failure::Partial { count }.into()),
    }
}
