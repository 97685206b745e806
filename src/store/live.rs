//! The live media store as one side of a copy: Synapse's own folder,
//! reached only beneath its directory descriptors, never through a
//! symlink (`media_store::fs`). Keys are the relative paths.

use std::io::{Read, Seek, SeekFrom, Write};

use super::{ErrorKind, Etag, Listed, LocalData, ObjectInfo, ObjectStore, Proof, StoreError};
use crate::media_store::MediaStore;
use crate::media_store::fs::WalkedKind;

pub struct LiveStore {
    store: MediaStore,
}

impl LiveStore {
    pub fn new(store: MediaStore) -> Self {
        Self { store }
    }

    pub fn media_store(&self) -> &MediaStore {
        &self.store
    }

    fn error(&self, e: std::io::Error) -> StoreError {
        StoreError::local(format!("media store {}: {e}", self.store.base().display()))
    }

    fn stream(
        &self,
        key: &str,
        offset: u64,
        len: u64,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), StoreError>,
    ) -> Result<bool, StoreError> {
        let Some(mut file) = self.store.open_rel(key).map_err(|e| self.error(e))? else { return Ok(false) };
        if offset > 0 {
            file.seek(SeekFrom::Start(offset)).map_err(|e| self.error(e))?;
        }
        let mut file = file.take(len);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = file.read(&mut buf).map_err(|e| self.error(e))?;
            if n == 0 {
                return Ok(true);
            }
            sink(&buf[..n])?;
        }
    }
}

impl ObjectStore for LiveStore {
    fn describe(&self) -> String {
        format!("the media store {}", self.store.base().display())
    }

    fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        let found = self.store.stat_rel(key).map_err(|e| self.error(e))?;
        Ok(found.map(|(size, _)| ObjectInfo { size, etag: Etag::Opaque, storage_class: None, readable: true }))
    }

    fn put(&self, key: &str, data: &LocalData) -> Result<Option<Proof>, StoreError> {
        let mut failed: Option<StoreError> = None;
        let written = self.store.write_rel(key, &mut |file| {
            data.content
                .for_each_chunk(0, data.digest.size, |chunk| {
                    file.write_all(chunk).map_err(|e| StoreError::local(format!("writing {key}: {e}")))
                })
                .map_err(|e| {
                    let message = e.message.clone();
                    failed = Some(e);
                    std::io::Error::other(message)
                })
        });
        match (written, failed) {
            (Ok(()), _) => Ok(None),
            (Err(_), Some(source)) => Err(source),
            (Err(e), None) => Err(self.error(e)),
        }
    }

    fn read_range(
        &self,
        key: &str,
        offset: u64,
        len: u64,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), StoreError>,
    ) -> Result<bool, StoreError> {
        self.stream(key, offset, len, sink)
    }

    fn list(&self, prefix: &str, each: &mut dyn FnMut(Listed) -> Result<(), StoreError>) -> Result<(), StoreError> {
        let mut failed = None;
        let walked = self.store.walk(&mut |w| {
            if let WalkedKind::File { size, modified } = w.what
                && w.rel.starts_with(prefix)
                && !w.rel.ends_with(".media-offload.tmp")
                && let Err(e) = each(Listed { key: w.rel, size, modified: Some(modified) })
            {
                failed = Some(e.clone());
                anyhow::bail!(e);
            }
            Ok(())
        });
        match (walked, failed) {
            (Ok(()), _) => Ok(()),
            (Err(_), Some(e)) => Err(e),
            (Err(e), None) => Err(StoreError::new(ErrorKind::Local, format!("{e:#}"))),
        }
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.store.remove_rel(key).map(|_| ()).map_err(|e| self.error(e))
    }
}
