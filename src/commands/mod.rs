//! One module per subcommand. Each `run` prints its own summary and
//! returns an error whose kind decides the exit code.

use std::path::PathBuf;

use anyhow::Result;

use crate::cache::{Cache, LockMode, RunLock};

pub mod check_deleted;
pub mod demo;
pub mod update;
pub mod update_db;
pub mod upload;
pub mod write;

/// What every subcommand needs from the global flags.
#[derive(Debug, Clone)]
pub struct Context {
    pub cache_db: PathBuf,
    pub lock: LockMode,
    pub json: bool,
}

impl Context {
    /// Take the run lock, then open cache.db. The lock is released when the
    /// returned guard is dropped.
    pub fn open_cache(&self) -> Result<(RunLock, Cache)> {
        let lock = RunLock::acquire(&self.cache_db, self.lock)?;
        let cache = Cache::open(&self.cache_db)?;
        Ok((lock, cache))
    }
}

/// Walk cache rows page by page (short read transactions, flat memory).
pub const PAGE: usize = 2048;
