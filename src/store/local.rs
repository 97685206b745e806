//! A store that is a directory with the media store's relative layout: what
//! Synapse's own `FileStorageProviderBackend` reads. Objects are written to
//! a temporary file, synced and renamed into place, and the folder is
//! synced after the rename: a crash never leaves a partial object under its
//! final name, and an object that is not durable is not reported stored.
//! Its answers prove nothing by themselves: the caller reads objects back.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::{ErrorKind, Etag, Listed, LocalData, ObjectInfo, ObjectStore, Proof, StoreError};
use crate::media_store::check_component;

pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// An existing directory: a mistyped path must not become a new folder
    /// that the media then moves into.
    pub fn open(root: &Path) -> anyhow::Result<Self> {
        match fs::metadata(root) {
            Ok(m) if m.is_dir() => Ok(Self { root: root.to_owned() }),
            Ok(_) => anyhow::bail!("store directory {} is not a directory", root.display()),
            Err(e) => anyhow::bail!("store directory {}: {e} (create it first)", root.display()),
        }
    }

    /// Validate every component of a key (the prefix comes from the user).
    fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        let mut path = self.root.clone();
        for piece in key.split('/').filter(|p| !p.is_empty()) {
            check_component(piece).map_err(|why| StoreError::new(ErrorKind::Invalid, format!("key {key:?}: {why}")))?;
            path.push(piece);
        }
        Ok(path)
    }

    /// Remove the folders above `key` that a deletion left empty, up to
    /// (not including) the store's root and the media layout's top level.
    fn prune(&self, key: &str) {
        let mut dir = Path::new(key).parent();
        while let Some(d) = dir.filter(|d| d.components().count() > 1) {
            if fs::remove_dir(self.root.join(d)).is_err() {
                break;
            }
            dir = d.parent();
        }
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

impl ObjectStore for LocalStore {
    fn describe(&self) -> String {
        format!("directory {}", self.root.display())
    }

    fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        let path = self.path_of(key)?;
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => {
                Ok(Some(ObjectInfo { size: m.len(), etag: Etag::Opaque, storage_class: None, readable: true }))
            }
            Ok(_) => Err(StoreError::new(ErrorKind::Invalid, format!("{} is not a regular file", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::local(format!("{}: {e}", path.display()))),
        }
    }

    fn read_range(
        &self,
        key: &str,
        offset: u64,
        len: u64,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), StoreError>,
    ) -> Result<bool, StoreError> {
        use std::io::{Seek, SeekFrom};
        let path = self.path_of(key)?;
        let io = |e: std::io::Error| StoreError::local(format!("reading {}: {e}", path.display()));
        let mut file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io(e)),
        };
        file.seek(SeekFrom::Start(offset)).map_err(io)?;
        let mut file = file.take(len);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = file.read(&mut buf).map_err(io)?;
            if n == 0 {
                return Ok(true);
            }
            sink(&buf[..n])?;
        }
    }

    fn is_same_file(&self, key: &str, file: &fs::File) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Ok(target) = self.path_of(key) else { return false };
        match (fs::metadata(target), file.metadata()) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }

    fn put(&self, key: &str, data: &LocalData) -> Result<Option<Proof>, StoreError> {
        let target = self.path_of(key)?;
        let dir = target.parent().expect("a key has a parent under the root").to_owned();
        let io = |what: &str, e: std::io::Error| StoreError::local(format!("{what} {}: {e}", target.display()));
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(|e| io("creating the folder of", e))?;
            // Make the new folders themselves durable, up to the root.
            let mut d = dir.parent();
            while let Some(p) = d.filter(|p| p.starts_with(&self.root)) {
                sync_dir(p).map_err(|e| io("syncing the folders of", e))?;
                d = p.parent();
            }
        }
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        // One name per key: the run lock allows one writer, and a file left
        // by a killed run is simply overwritten by the next.
        let tmp = dir.join(format!(".{name}.media-offload.tmp"));
        let result = (|| -> Result<(), StoreError> {
            let mut to = fs::File::create(&tmp).map_err(|e| io("creating", e))?;
            data.content
                .for_each_chunk(0, data.digest.size, |chunk| to.write_all(chunk).map_err(|e| io("writing", e)))?;
            to.flush().and_then(|_| to.sync_all()).map_err(|e| io("syncing", e))?;
            fs::rename(&tmp, &target).map_err(|e| io("renaming into", e))?;
            // Without this the rename may not survive a power loss: the put
            // has not happened until the folder says so.
            sync_dir(&dir).map_err(|e| io("syncing the folder of", e))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map(|()| None)
    }

    fn list(&self, prefix: &str, each: &mut dyn FnMut(Listed) -> Result<(), StoreError>) -> Result<(), StoreError> {
        // Walk only the folder the prefix names (up to its last '/'), then
        // filter by the rest; keys use '/' whatever the platform.
        let dir_part = prefix.rfind('/').map_or("", |i| &prefix[..i]);
        let start = self.path_of(dir_part)?;
        let mut stack = vec![(start, dir_part.to_owned())];
        while let Some((dir, rel)) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::local(format!("listing {}: {e}", dir.display()))),
            };
            let mut names: Vec<_> = entries
                .map(|e| e.map_err(|e| StoreError::local(format!("listing {}: {e}", dir.display()))))
                .collect::<Result<_, _>>()?;
            names.sort_by_key(|e| e.file_name());
            for entry in names.into_iter().rev() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let key = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
                let Ok(meta) = fs::symlink_metadata(entry.path()) else { continue };
                if meta.is_dir() {
                    if key.starts_with(prefix) || prefix.starts_with(&format!("{key}/")) {
                        stack.push((entry.path(), key));
                    }
                } else if meta.is_file() && key.starts_with(prefix) && !name.ends_with(".media-offload.tmp") {
                    each(Listed { key, size: meta.len(), modified: meta.modified().ok() })?;
                }
            }
        }
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        match fs::remove_file(&path) {
            Ok(()) => {
                self.prune(key);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::local(format!("deleting {}: {e}", path.display()))),
        }
    }
}
