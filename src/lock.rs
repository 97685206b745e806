//! One run at a time: an exclusive OS lock (`flock`) on `<cache.db>.lock`,
//! at its canonical path, and one on the media store's own folder, so that
//! two runs with different state files cannot work on one store either.
//! The kernel drops both however the process ends.
//!
//! Also here: what a run as root owes the service user. A root run over a
//! store owned by someone else says once who should run it, and gives the
//! files it creates (cache.db, its lock) to the owner of their folder, so
//! the service user's timer is not locked out afterwards.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::error::Failure;
use crate::media_store::MediaStore;
use crate::media_store::fs::StoreLockGuard;

/// How to behave when another run holds a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Exit at once with [`Failure::Locked`].
    Fail,
    /// Block until the other run finishes.
    Wait,
}

/// The lock on a state file, released when dropped.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    pub path: PathBuf,
}

/// `<cache.db>.lock`, next to cache.db as its canonical path names it, so
/// `./cache.db`, `/abs/cache.db` and a symlink to it share one lock.
pub fn lock_path(cache_path: &Path) -> PathBuf {
    let canonical = std::fs::canonicalize(cache_path).ok().or_else(|| {
        let parent = cache_path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Some(std::fs::canonicalize(parent).ok()?.join(cache_path.file_name()?))
    });
    let mut name = canonical.unwrap_or_else(|| cache_path.to_owned()).into_os_string();
    name.push(".lock");
    PathBuf::from(name)
}

impl RunLock {
    pub fn acquire(cache_path: &Path, mode: LockMode) -> Result<Self> {
        let path = lock_path(cache_path);
        let existed = path.exists();
        let (mut file, writable) =
            match OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path) {
                Ok(f) => (f, true),
                // A lock file left by a run as root: flock needs no write access.
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && existed => {
                    let f = File::open(&path).map_err(|_| not_ours(&path, &e))?;
                    (f, false)
                }
                Err(e) => return Err(not_ours(&path, &e)),
            };
        if !existed {
            hand_over(&path);
        }
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = holder_of(&file).or_else(|| read_holder_note(&mut file));
                when_held(mode, format!("the lock {}", path.display()), holder, || {
                    file.lock().with_context(|| format!("could not lock {}", path.display()))
                })?;
            }
            Err(TryLockError::Error(e)) => return Err(e).with_context(|| format!("could not lock {}", path.display())),
        }
        if writable {
            // Who holds it, for a second run's message (where /proc/locks
            // cannot be read).
            let note = format!(
                "pid {} started {}\n",
                std::process::id(),
                humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            );
            let _ = file.set_len(0).and_then(|()| file.rewind()).and_then(|()| file.write_all(note.as_bytes()));
        }
        Ok(Self { _file: file, path })
    }
}

fn not_ours(path: &Path, e: &std::io::Error) -> anyhow::Error {
    let owner = std::fs::metadata(path).ok().map(|m| (m.uid(), user_name(m.uid())));
    match (e.kind(), owner) {
        (std::io::ErrorKind::PermissionDenied, Some((uid, name))) => anyhow::anyhow!(
            "could not open the lock file {}: permission denied; it belongs to {name} (uid {uid}), left by a run as \
             that user: `chown {} {}` (as root) lets this user's runs use it",
            path.display(),
            user_name(rustix::process::geteuid().as_raw()),
            path.display()
        ),
        _ => anyhow::anyhow!("could not open the lock file {}: {e}", path.display()),
    }
}

/// The lock on the media store, released when dropped.
#[derive(Debug)]
pub struct StoreLock {
    _guard: StoreLockGuard,
}

impl StoreLock {
    pub fn acquire(store: &MediaStore, mode: LockMode) -> Result<Self> {
        let what = format!("the media store {}", store.base().display());
        let lock = |wait| store.try_lock(wait).with_context(|| format!("could not lock {what}"));
        if let Some(guard) = lock(false)? {
            return Ok(Self { _guard: guard });
        }
        let holder = store.identity().ok().and_then(|(dev, ino)| holder_of_inode(dev, ino));
        when_held(mode, what.clone(), holder, || {
            let guard = lock(true)?.context("the store lock could not be taken")?;
            Ok(Self { _guard: guard })
        })
    }
}

/// Another run holds `what`: fail at once with [`Failure::Locked`], or say
/// so and `wait` for it.
fn when_held<T>(mode: LockMode, what: String, holder: Option<String>, wait: impl FnOnce() -> Result<T>) -> Result<T> {
    let held = Failure::Locked { what, holder };
    match mode {
        LockMode::Fail => Err(held.into()),
        LockMode::Wait => {
            log::info!("{}; waiting for it to finish", held.held_by());
            wait()
        }
    }
}

/// Who holds a lock: "pid N, started T".
fn holder_of(file: &File) -> Option<String> {
    let meta = file.metadata().ok()?;
    holder_of_inode(meta.dev(), meta.ino())
}

/// The process holding a `flock` on (dev, ino), from /proc/locks.
fn holder_of_inode(dev: u64, ino: u64) -> Option<String> {
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
    let pid = locks.lines().find_map(|line| {
        // "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (kind, pid, id) = (fields.get(1)?, fields.get(4)?, fields.get(5)?);
        let mut parts = id.split(':');
        let (maj, min, i) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = *kind == "FLOCK"
            && u32::from_str_radix(maj, 16).ok()? == major
            && u32::from_str_radix(min, 16).ok()? == minor
            && i.parse::<u64>().ok()? == ino;
        matches.then(|| pid.parse::<u32>().ok()).flatten()
    })?;
    Some(match process_start(pid) {
        Some(start) => format!("pid {pid}, started {}", humantime::format_rfc3339_seconds(start)),
        None => format!("pid {pid}"),
    })
}

/// When process `pid` started: boot time plus its start in clock ticks.
fn process_start(pid: u32) -> Option<std::time::SystemTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields count from after its ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let ticks: u64 = after.split_whitespace().nth(19)?.parse().ok()?;
    let btime: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())?;
    let hz = rustix::param::clock_ticks_per_second().max(1);
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(btime + ticks / hz))
}

/// What the holder wrote into the lock file.
fn read_holder_note(file: &mut File) -> Option<String> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.take(200).read_to_string(&mut text).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.replace(" started", ", started"))
}

/// A user's name from /etc/passwd, else `uid N`.
pub fn user_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                let mut f = l.split(':');
                let name = f.next()?;
                (f.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_owned())
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// Running as root, give a file this run created to the owner of its
/// folder (the service user's state folder), so later runs as that user
/// can open it. Best effort: a failure is logged, not fatal.
pub fn hand_over(path: &Path) {
    if !rustix::process::geteuid().is_root() {
        return;
    }
    let Some(dir) = path.parent().map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p }) else { return };
    let Ok(meta) = std::fs::metadata(dir) else { return };
    if meta.uid() == 0 {
        return;
    }
    if let Err(e) = std::os::unix::fs::chown(path, Some(meta.uid()), Some(meta.gid())) {
        log::warn!("could not give {} to {} (the owner of its folder): {e}", path.display(), user_name(meta.uid()));
    } else {
        log::debug!("gave {} to {}, the owner of its folder", path.display(), user_name(meta.uid()));
    }
}

/// Say once, when running as root over a media store that belongs to
/// someone else, who should run it.
pub fn warn_if_root_over(store: &MediaStore) {
    if !rustix::process::geteuid().is_root() {
        return;
    }
    if let Ok((uid, _)) = store.owner()
        && uid != 0
    {
        let name = user_name(uid);
        log::warn!(
            "running as root over the media store {}, which belongs to {name}: run media-offload as that user \
             (e.g. `runuser -u {name} -- media-offload ...`, or the systemd unit); the files this run creates are \
             given to the owner of their folder",
            store.base().display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_fails_naming_the_lock_and_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache.db");
        let _held = RunLock::acquire(&cache, LockMode::Fail).unwrap();
        let err = RunLock::acquire(&cache, LockMode::Fail).unwrap_err();
        assert!(matches!(err.downcast_ref::<Failure>(), Some(Failure::Locked { .. })));
        let text = err.to_string();
        assert!(text.contains("cache.db.lock"), "{text}");
        assert!(text.contains(&format!("pid {}", std::process::id())), "{text}");
    }

    #[test]
    fn one_lock_for_every_spelling_of_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("cache.db");
        std::fs::write(&real, b"").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link.db")).unwrap();
        assert_eq!(lock_path(&dir.path().join("link.db")), lock_path(&real));
        assert_eq!(lock_path(&dir.path().join("sub/../cache.db")), lock_path(&real));
    }
}
