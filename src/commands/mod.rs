//! One module per subcommand. Each `run` prints its own summary and
//! returns an error whose kind decides the exit code.

use std::path::PathBuf;

use anyhow::Result;

use crate::cache::Cache;
use crate::config::settings::LoadedFile;
use crate::lock::{LockMode, RunLock};

pub mod check;
pub mod check_deleted;
pub mod copy;
pub mod demo;
pub mod migrate;
pub mod purge;
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
    /// The --config file (empty if none was given).
    pub file: LoadedFile,
}

impl Context {
    /// The context of a run: the config file is read (and refused with a
    /// clear error) before anything else happens.
    pub fn new(
        cache_db: Option<PathBuf>,
        config: Option<&std::path::Path>,
        lock: LockMode,
        json: bool,
    ) -> Result<Self> {
        let file = LoadedFile::load(config)?;
        let cache_db = cache_db.or_else(|| file.config.cache_db.clone()).unwrap_or_else(|| PathBuf::from("cache.db"));
        Ok(Self { cache_db, lock, json, file })
    }

    /// Refuse a Dendrite homeserver (`dendrite_config` in the config file,
    /// or `MEDIA_OFFLOAD_DENDRITE_CONFIG`) for a command that offloads
    /// media: Dendrite cannot read media back from a store.
    pub fn refuse_dendrite(&self, command: &str) -> Result<()> {
        crate::config::dendrite::refuse_for_offload(&self.file, command)
    }

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
