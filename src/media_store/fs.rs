//! File access in the media store, relative to directory descriptors.
//!
//! The store's top-level folders are opened once (they may be symlinks:
//! admins split disks that way). Everything below them is resolved beneath
//! those descriptors with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
//! (or, where the kernel or a seccomp filter refuses openat2, one
//! `openat(O_NOFOLLOW)` per component, which is as strict): a symlink
//! anywhere below the top level is an error, never followed, even if it
//! was swapped in a moment ago. A file is hashed and uploaded from the
//! descriptor it was opened as, and unlinked relative to its folder's
//! descriptor after checking that the name still refers to the same,
//! unchanged file. So whoever can write the media store cannot make a run
//! (as root, say) read or delete anything outside it.

use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

use super::{DENDRITE_TOP_LEVEL, MediaPaths, TOP_LEVEL, check_component};

/// Folders of the store found missing (and, to spare looking them up
/// again, found present) during one run: see
/// [`MediaStore::any_file_noting`]. Names are kept as 64-bit hashes, and
/// at most [`KnownFolders::LIMIT`] of each kind (some 10 MiB in all), so
/// memory stays flat on any store; once either kind is full, nothing more
/// is learnt and lookups simply go to the kernel.
///
/// A folder created after it was noted missing (Synapse fetching a media
/// back during the run), or one whose hash collides with a missing one's,
/// is then not seen: its media is marked deleted, which only makes
/// `upload` leave it alone, and the next check-deleted's walk of the
/// store reopens it. Nothing is ever deleted on this answer.
///
/// Made by [`KnownFolders::listing`], it also keeps the listings of the
/// folders shared by many media (`local_content/ab/cd`, and the folder of
/// thumbnail folders beside it), read once each, as sorted 64-bit hashes of
/// the names, at most [`KnownFolders::LISTED_NAMES`] names in all: a first
/// check-deleted, which asks about every row, then reads each such folder
/// once instead of resolving a path for every row in it. The same holds of
/// a listing as of a missing folder: an entry made after it was read is
/// not seen (its media marked deleted, reopened by the walk that follows),
/// and one removed since, or a hash collision, keeps a media open, which
/// `upload` finds empty. Neither deletes anything.
#[derive(Default)]
pub struct KnownFolders {
    /// Read at every lookup by every checker thread, written rarely.
    known: std::sync::RwLock<KnownDirs>,
    /// Whether shared folders are listed (see [`KnownFolders::listing`]).
    list: bool,
}

#[derive(Default)]
struct KnownDirs {
    absent: std::collections::HashSet<u64>,
    present: std::collections::HashSet<u64>,
    /// Shared folders (by name hash) and their entries' name hashes, sorted.
    listings: std::collections::HashMap<u64, Arc<[u64]>>,
    /// Entries in `listings`, all folders together.
    listed: usize,
}

/// The hash of a folder's relative path, or of an entry's name in a
/// listing (the raw bytes: a name that is not UTF-8 can match no media,
/// and is hashed all the same).
fn name_hash(name: impl AsRef<[u8]>) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(name.as_ref())
}

impl KnownFolders {
    /// Names noted of each kind, at most.
    pub const LIMIT: usize = 500_000;

    /// Entries kept in folder listings, at most (8 bytes each).
    pub const LISTED_NAMES: usize = 1_000_000;

    /// Folders noted, and the shared ones listed: for a run that asks
    /// about most rows, so that most shared folders are asked about many
    /// times. (A daily run, which asks about a few rows scattered over
    /// every folder, would read more entries than it asks about.)
    pub fn listing() -> Self {
        Self { list: true, ..Self::default() }
    }

    /// The listing of `rel_dir`, if it was read.
    fn listing_of(&self, rel_dir: &str) -> Option<Arc<[u64]>> {
        self.known().listings.get(&name_hash(rel_dir)).cloned()
    }

    /// Whether another listing may be read and kept.
    fn may_list(&self) -> bool {
        self.list && self.known().listed < Self::LISTED_NAMES
    }

    /// Keep the listing of `rel_dir` (sorted), if there is room and no
    /// other thread kept it first.
    fn keep_listing(&self, rel_dir: &str, names: Vec<u64>) {
        let mut known = self.known.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let room = known.listed + names.len() <= Self::LISTED_NAMES;
        let len = names.len();
        if let std::collections::hash_map::Entry::Vacant(slot) = known.listings.entry(name_hash(rel_dir))
            && room
        {
            slot.insert(names.into());
            known.listed += len;
        }
    }

    fn known(&self) -> std::sync::RwLockReadGuard<'_, KnownDirs> {
        self.known.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether `rel_dir` (or, `shared`, the folder itself) is beneath a
    /// folder noted missing.
    fn covers(&self, rel_dir: &str, shared: bool) -> bool {
        let known = self.known();
        if known.absent.is_empty() {
            return false;
        }
        ancestors_below_top(rel_dir).any(|p| known.absent.contains(&name_hash(p)))
            || (shared && known.absent.contains(&name_hash(rel_dir)))
    }

    fn is_present(&self, rel_dir: &str) -> bool {
        self.known().present.contains(&name_hash(rel_dir))
    }

    /// Whether nothing more can be noted (then nothing is probed either).
    fn is_full(&self) -> bool {
        let known = self.known();
        known.absent.len() >= Self::LIMIT || known.present.len() >= Self::LIMIT
    }

    fn note(&self, rel_dir: &str, present: bool) {
        let mut known = self.known.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let set = if present { &mut known.present } else { &mut known.absent };
        if set.len() < Self::LIMIT {
            set.insert(name_hash(rel_dir));
        }
    }
}

/// What a walk does with each folder it opens: the folder, its path, and
/// where its entries go.
type Descend<'a> =
    dyn FnMut(rustix::fd::OwnedFd, &str, &mut dyn FnMut(Walked) -> anyhow::Result<()>) -> anyhow::Result<()> + 'a;

/// The folder part of a relative path (`a/b/c` gives `a/b`).
fn folder_of(rel: &str) -> &str {
    rel.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// The ancestors of `rel_dir` below its top-level folder, shallowest
/// first, without `rel_dir` itself: `local_content/ab/cd` gives
/// `local_content/ab`.
fn ancestors_below_top(rel_dir: &str) -> impl Iterator<Item = &str> {
    let top_end = rel_dir.find('/').unwrap_or(rel_dir.len());
    rel_dir.match_indices('/').map(|(i, _)| i).filter(move |&i| i > top_end).map(move |i| &rel_dir[..i])
}

/// A media store directory, opened.
pub struct MediaStore {
    base: PathBuf,
    root: rustix::fd::OwnedFd,
    /// Whose layout: Synapse's four top-level folders, or Dendrite's one
    /// folder per first character of a hash.
    homeserver: &'static str,
    names: &'static [&'static str],
    /// The top-level folders, opened on first use.
    tops: Vec<OnceLock<Arc<rustix::fd::OwnedFd>>>,
}

/// A regular file of a media, as found by a listing.
#[derive(Debug, Clone)]
pub struct LocalFile {
    /// Relative path with `/` separators (the object key without prefix).
    pub rel: String,
    pub size: u64,
    pub modified: SystemTime,
    dir: Arc<rustix::fd::OwnedFd>,
    name: String,
    dev: u64,
    ino: u64,
}

impl LocalFile {
    /// The file name (the last component of `rel`).
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Something in the store that is not a regular file where one was expected.
#[derive(Debug, Clone)]
pub struct Skipped {
    pub rel: String,
    pub why: String,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.rel, self.why)
    }
}

/// A media's files on disk.
#[derive(Debug, Default)]
pub struct Listing {
    pub files: Vec<LocalFile>,
    /// Symlinks and other oddities: reported, never followed.
    pub skipped: Vec<Skipped>,
}

/// What an unlink found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unlinked {
    Removed,
    /// Someone else removed it first.
    Gone,
    /// The name now refers to another file, or the file changed: kept.
    Changed,
}

/// Whether openat2 can be used: 0 not tried yet, 1 yes, 2 no.
static OPENAT2: AtomicU8 = AtomicU8::new(0);

fn errno_io(e: Errno, rel: &str) -> io::Error {
    let e = io::Error::from(e);
    io::Error::new(e.kind(), format!("{rel}: {e}"))
}

fn is_absent(e: Errno) -> bool {
    e == Errno::NOENT || e == Errno::NOTDIR
}

/// A symlink on the way (ELOOP with RESOLVE_NO_SYMLINKS or O_NOFOLLOW),
/// or a path that would leave the folder (EXDEV with RESOLVE_BENEATH).
fn is_refused_link(e: Errno) -> bool {
    e == Errno::LOOP || e == Errno::XDEV
}

fn modified(st: &Stat) -> SystemTime {
    let (secs, nanos) = (st.st_mtime, st.st_mtime_nsec as u32);
    if secs >= 0 { SystemTime::UNIX_EPOCH + Duration::new(secs as u64, nanos) } else { SystemTime::UNIX_EPOCH }
}

fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// Open `rest` (components below `dir`, already validated) beneath `dir`
/// without following any symlink.
fn open_beneath(dir: &rustix::fd::OwnedFd, rest: &str, flags: OFlags) -> Result<rustix::fd::OwnedFd, Errno> {
    // RESOLVE_NO_SYMLINKS refuses a symlink in every component, the last
    // included (ELOOP); O_NOFOLLOW with O_DIRECTORY would say ENOTDIR.
    let flags = flags | OFlags::CLOEXEC;
    if OPENAT2.load(Ordering::Relaxed) != 2 {
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        match rustix::fs::openat2(dir, rest, flags, Mode::empty(), resolve) {
            Err(Errno::NOSYS | Errno::PERM) if OPENAT2.load(Ordering::Relaxed) == 0 => {
                log::debug!("openat2 is not available; resolving paths one component at a time");
                OPENAT2.store(2, Ordering::Relaxed);
            }
            other => {
                OPENAT2.store(1, Ordering::Relaxed);
                return other;
            }
        }
    }
    open_by_components(dir, rest, flags)
}

/// `rest` beneath `dir`, one `openat(O_NOFOLLOW)` per component: where
/// openat2 is not available (old kernels, seccomp filters), as strict.
fn open_by_components(dir: &rustix::fd::OwnedFd, rest: &str, flags: OFlags) -> Result<rustix::fd::OwnedFd, Errno> {
    let mut pieces = rest.split('/').peekable();
    let mut current: Option<rustix::fd::OwnedFd> = None;
    while let Some(piece) = pieces.next() {
        let at = current.as_ref().unwrap_or(dir);
        let last = pieces.peek().is_none();
        let f = if last { flags } else { OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC };
        match rustix::fs::openat(at, piece, f | OFlags::NOFOLLOW, Mode::empty()) {
            Ok(fd) => current = Some(fd),
            // O_NOFOLLOW | O_DIRECTORY on a symlink says ENOTDIR: tell a
            // symlink from a file that is in the way.
            Err(Errno::NOTDIR) => {
                let link = rustix::fs::statat(at, piece, AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| file_type(&st) == FileType::Symlink);
                return Err(if link { Errno::LOOP } else { Errno::NOTDIR });
            }
            Err(e) => return Err(e),
        }
    }
    current.ok_or(Errno::INVAL)
}

impl MediaStore {
    /// Open the media store at `base`. A path that is not a folder is
    /// refused; so is one with none of Synapse's top-level folders while
    /// there are rows to judge against it (a typo must not mark every
    /// media as deleted).
    pub fn open(base: &Path, has_rows: bool) -> anyhow::Result<Self> {
        Self::open_as(base, has_rows, "Synapse", TOP_LEVEL)
    }

    /// Open a Dendrite media store (`media_api.base_path`): its top-level
    /// folders are the first characters of the hashes; `tmp/` (Dendrite's
    /// uploads in progress) is never walked nor touched.
    pub fn open_dendrite(base: &Path, has_rows: bool) -> anyhow::Result<Self> {
        Self::open_as(base, has_rows, "Dendrite", DENDRITE_TOP_LEVEL)
    }

    fn open_as(
        base: &Path,
        has_rows: bool,
        homeserver: &'static str,
        names: &'static [&'static str],
    ) -> anyhow::Result<Self> {
        let root = rustix::fs::open(base, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| match e {
                Errno::NOTDIR => anyhow::anyhow!("media store {} is not a directory", base.display()),
                e => anyhow::anyhow!("media store {}: {}", base.display(), io::Error::from(e)),
            })?;
        let tops = names.iter().map(|_| OnceLock::new()).collect();
        let store = Self { base: base.to_owned(), root, homeserver, names, tops };
        store.ensure_layout(has_rows)?;
        Ok(store)
    }

    /// Refuse a folder with none of Synapse's top-level folders while there
    /// are rows to judge against it.
    pub fn ensure_layout(&self, has_rows: bool) -> anyhow::Result<()> {
        if has_rows && !self.names.iter().any(|top| self.top(top).is_ok_and(|t| t.is_some())) {
            let expected = if self.names.len() > 8 {
                "a folder named by a hash's first character".to_owned()
            } else {
                self.names.join(", ")
            };
            anyhow::bail!(
                "{} does not look like a {} media store (none of {expected} inside); check the media store path",
                self.base.display(),
                self.homeserver,
            );
        }
        Ok(())
    }

    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Owner (uid, gid) of the store's folder.
    pub fn owner(&self) -> io::Result<(u32, u32)> {
        let st = rustix::fs::fstat(&self.root)?;
        Ok((st.st_uid, st.st_gid))
    }

    /// A top-level folder, opened (following a symlink) on first use;
    /// `None` while it does not exist.
    fn top(&self, name: &str) -> io::Result<Option<Arc<rustix::fd::OwnedFd>>> {
        let index = self.names.iter().position(|t| *t == name).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{name}: not a top-level folder of a media store"))
        })?;
        if let Some(fd) = self.tops[index].get() {
            return Ok(Some(fd.clone()));
        }
        match rustix::fs::openat(&self.root, name, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        {
            Ok(fd) => Ok(Some(self.tops[index].get_or_init(|| Arc::new(fd)).clone())),
            Err(e) if is_absent(e) => Ok(None),
            Err(e) => Err(errno_io(e, name)),
        }
    }

    /// The folder `rel_dir` (e.g. `local_content/ab/cd`). `Ok(None)` when it
    /// does not exist; an error with ELOOP when a symlink is on the way.
    fn dir(&self, rel_dir: &str) -> Result<Option<Arc<rustix::fd::OwnedFd>>, Errno> {
        if !rel_dir.contains('/') {
            return self.top(rel_dir).map_err(|e| e.raw_os_error().map_or(Errno::IO, Errno::from_raw_os_error));
        }
        Ok(self.dir_to_read(rel_dir)?.map(Arc::new))
    }

    /// [`Self::dir`], answered from `absent` where it can be. When the
    /// folder is missing, its ancestors below the top level are looked up,
    /// shallowest first, until the missing one is found and noted; `shared`
    /// says whether the folder itself is worth noting (a folder of many
    /// media's originals, not one media's thumbnail folder).
    fn dir_noting(
        &self,
        rel_dir: &str,
        shared: bool,
        absent: Option<&KnownFolders>,
    ) -> Result<Option<Arc<rustix::fd::OwnedFd>>, Errno> {
        let Some(absent) = absent else { return self.dir(rel_dir) };
        if absent.covers(rel_dir, shared) {
            return Ok(None);
        }
        let found = self.dir(rel_dir)?;
        if found.is_none() {
            self.learn_missing(rel_dir, true, shared, absent);
        }
        Ok(found)
    }

    /// Something (of any kind) is at `rel` (a file in folder `rel_dir`),
    /// asked with one lookup of the whole path, answered from `absent`
    /// where it can be, noting there what a miss teaches.
    fn exists_noting(&self, rel: &str, rel_dir: &str, absent: &KnownFolders) -> Result<bool, Errno> {
        if absent.covers(rel_dir, true) {
            return Ok(false);
        }
        let (top, rest) = rel.split_once('/').expect("media paths have folders");
        let top = match self.top(top) {
            Ok(Some(t)) => t,
            Ok(None) => return Ok(false),
            Err(e) => return Err(e.raw_os_error().map_or(Errno::IO, Errno::from_raw_os_error)),
        };
        match open_beneath(&top, rest, OFlags::PATH) {
            Ok(_) => Ok(true),
            Err(e) if is_absent(e) => {
                self.learn_missing(rel_dir, false, true, absent);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether the shared folder `rel_dir` has an entry (of any kind)
    /// `name`, answered from its listing, read on first use; `None` when
    /// `known` keeps no listings, or no more. A missing folder is noted
    /// as [`Self::dir_noting`] notes it; a symlink on the way is an error
    /// with ELOOP.
    fn listed(&self, rel_dir: &str, name: &str, known: &KnownFolders) -> Result<Option<bool>, Errno> {
        if !known.list {
            return Ok(None);
        }
        let wanted = name_hash(name);
        if let Some(names) = known.listing_of(rel_dir) {
            return Ok(Some(names.binary_search(&wanted).is_ok()));
        }
        if !known.may_list() {
            return Ok(None);
        }
        let Some(dir) = self.dir_noting(rel_dir, true, Some(known))? else { return Ok(Some(false)) };
        let mut names = Vec::new();
        each_entry(&dir, |entry| {
            names.push(name_hash(entry.file_name().to_bytes()));
            true
        })?;
        names.sort_unstable();
        let found = names.binary_search(&wanted).is_ok();
        known.keep_listing(rel_dir, names);
        Ok(Some(found))
    }

    /// After a miss below `rel_dir`, find which folder is missing: its
    /// ancestors below the top level, shallowest first, then (`shared`,
    /// and not `known_missing` already) the folder itself; the first
    /// missing one is noted, those found present too. `shared`: the folder
    /// holds many media's files (not one media's thumbnail folder).
    fn learn_missing(&self, rel_dir: &str, known_missing: bool, shared: bool, absent: &KnownFolders) {
        if absent.is_full() {
            return;
        }
        let itself = (shared && !known_missing).then_some(rel_dir);
        for prefix in ancestors_below_top(rel_dir).chain(itself) {
            if absent.is_present(prefix) {
                continue;
            }
            match self.dir(prefix) {
                Ok(None) => {
                    absent.note(prefix, false);
                    return;
                }
                Ok(Some(_)) => absent.note(prefix, true),
                Err(_) => return,
            }
        }
        if shared && known_missing {
            absent.note(rel_dir, false);
        }
    }

    /// The regular file `name` in `dir`, if it is one.
    fn entry(
        &self,
        dir: &Arc<rustix::fd::OwnedFd>,
        rel_dir: &str,
        name: &str,
        listing: &mut Listing,
    ) -> io::Result<()> {
        let rel = format!("{rel_dir}/{name}");
        let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(e) if is_absent(e) => return Ok(()),
            Err(e) => return Err(errno_io(e, &rel)),
        };
        match file_type(&st) {
            FileType::RegularFile => listing.files.push(LocalFile {
                rel,
                size: st.st_size.max(0) as u64,
                modified: modified(&st),
                dir: dir.clone(),
                name: name.to_owned(),
                dev: st.st_dev,
                ino: st.st_ino,
            }),
            FileType::Directory => log::debug!("{rel}: a folder where a file belongs; ignored"),
            FileType::Symlink => listing.skipped.push(Skipped { rel, why: "is a symlink; not followed".into() }),
            _ => listing.skipped.push(Skipped { rel, why: "not a regular file".into() }),
        }
        Ok(())
    }

    /// The media's files: the original and every regular file in its
    /// thumbnail folder, sorted. Symlinked folders and files, and other
    /// oddities, are in `skipped`.
    pub fn files_of(&self, paths: &MediaPaths) -> io::Result<Listing> {
        let mut listing = Listing::default();
        let (original_dir, original_name) = paths.original.rsplit_once('/').expect("media paths have folders");
        match self.dir(original_dir) {
            Ok(Some(dir)) => self.entry(&dir, original_dir, original_name, &mut listing)?,
            Ok(None) => {}
            Err(e) if is_refused_link(e) => listing
                .skipped
                .push(Skipped { rel: original_dir.to_owned(), why: "a symlink on the way; not followed".into() }),
            Err(e) => return Err(errno_io(e, original_dir)),
        }
        let thumbs = &paths.thumbnail_dir;
        let dir = match self.dir(thumbs) {
            Ok(Some(dir)) => dir,
            Ok(None) => return Ok(listing),
            Err(e) if is_refused_link(e) => {
                listing.skipped.push(Skipped { rel: thumbs.clone(), why: "a symlink on the way; not followed".into() });
                return Ok(listing);
            }
            Err(e) => return Err(errno_io(e, thumbs)),
        };
        for name in read_names(&dir, thumbs)? {
            match name {
                Ok(name) => self.entry(&dir, thumbs, &name, &mut listing)?,
                Err(raw) => listing.skipped.push(Skipped {
                    rel: format!("{thumbs}/{raw}"),
                    why: "file name is not valid UTF-8 or not a plain name".into(),
                }),
            }
        }
        listing.files.sort_by(|a, b| a.rel.cmp(&b.rel));
        // Dendrite keeps the original in the thumbnails' folder.
        listing.files.dedup_by(|a, b| a.rel == b.rel);
        Ok(listing)
    }

    /// Whether anything of the media is still on local disk, by the rule
    /// `upload` lists files with: an original of any kind, or an entry
    /// other than a folder in the thumbnail folder. A symlink on the way
    /// counts as present, so its media stays open (and reported by
    /// `upload`) instead of being hidden.
    pub fn any_file(&self, paths: &MediaPaths) -> io::Result<bool> {
        self.any_file_in(paths, None)
    }

    /// [`Self::any_file`], skipping the lookups that `absent` already
    /// answers and noting there the folders it finds missing: a first
    /// `check-deleted` over millions of rows whose files are gone then asks
    /// the kernel about each missing folder once, not twice per row.
    pub fn any_file_noting(&self, paths: &MediaPaths, absent: &KnownFolders) -> io::Result<bool> {
        self.any_file_in(paths, Some(absent))
    }

    fn any_file_in(&self, paths: &MediaPaths, absent: Option<&KnownFolders>) -> io::Result<bool> {
        let (original_dir, original_name) = paths.original.rsplit_once('/').expect("media paths have folders");
        if let Some(absent) = absent {
            match self.listed(original_dir, original_name, absent) {
                Ok(Some(true)) => return Ok(true),
                Ok(Some(false)) => return self.any_thumbnail(paths, Some(absent)),
                Ok(None) => {}
                Err(e) if is_refused_link(e) => return Ok(true),
                Err(e) => return Err(errno_io(e, original_dir)),
            }
            // One lookup of the whole path (O_PATH: nothing is opened for
            // reading) where the folder and a stat took two.
            match self.exists_noting(&paths.original, original_dir, absent) {
                Ok(true) => return Ok(true),
                Ok(false) => {}
                Err(e) if is_refused_link(e) => return Ok(true),
                Err(e) => return Err(errno_io(e, &paths.original)),
            }
            return self.any_thumbnail(paths, Some(absent));
        }
        match self.dir(original_dir) {
            Ok(Some(dir)) => match rustix::fs::statat(&dir, original_name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(_) => return Ok(true),
                Err(e) if is_absent(e) => {}
                Err(e) => return Err(errno_io(e, &paths.original)),
            },
            Ok(None) => {}
            Err(e) if is_refused_link(e) => return Ok(true),
            Err(e) => return Err(errno_io(e, original_dir)),
        }
        self.any_thumbnail(paths, None)
    }

    /// Whether the media's thumbnail folder holds anything but folders.
    fn any_thumbnail(&self, paths: &MediaPaths, absent: Option<&KnownFolders>) -> io::Result<bool> {
        if let Some(absent) = absent {
            let (parent, name) = paths.thumbnail_dir.rsplit_once('/').expect("media paths have folders");
            match self.listed(parent, name, absent) {
                Ok(Some(false)) => return Ok(false),
                Ok(_) => {}
                Err(e) if is_refused_link(e) => return Ok(true),
                Err(e) => return Err(errno_io(e, parent)),
            }
        }
        let dir = match self.dir_noting(&paths.thumbnail_dir, false, absent) {
            Ok(Some(dir)) => dir,
            Ok(None) => return Ok(false),
            Err(e) if is_refused_link(e) => return Ok(true),
            Err(e) => return Err(errno_io(e, &paths.thumbnail_dir)),
        };
        let mut found = false;
        each_entry(&dir, |entry| {
            let is_dir = match entry.file_type() {
                FileType::Unknown => rustix::fs::statat(&*dir, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| file_type(&st) == FileType::Directory),
                t => t == FileType::Directory,
            };
            found = !is_dir;
            !found
        })
        .map_err(|e| errno_io(e, &paths.thumbnail_dir))?;
        Ok(found)
    }

    /// Whether `rel` is a regular file, resolved beneath the store.
    pub fn has_file(&self, rel: &str) -> io::Result<bool> {
        let Some((dir_rel, name)) = rel.rsplit_once('/') else { return Ok(false) };
        match self.dir(dir_rel) {
            Ok(Some(dir)) => match rustix::fs::statat(&*dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => Ok(file_type(&st) == FileType::RegularFile),
                Err(e) if is_absent(e) => Ok(false),
                Err(e) => Err(errno_io(e, rel)),
            },
            Ok(None) => Ok(false),
            Err(e) if is_refused_link(e) => Ok(false),
            Err(e) => Err(errno_io(e, dir_rel)),
        }
    }

    /// Open a listed file for reading, beneath its folder's descriptor.
    /// `Ok(None)` if it is gone or is no longer the file that was listed.
    pub fn open_file(&self, file: &LocalFile) -> io::Result<Option<File>> {
        // O_NONBLOCK: a FIFO swapped in for the file must not block the run.
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&*file.dir, file.name.as_str(), flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) if is_absent(e) || e == Errno::LOOP => return Ok(None),
            Err(e) => return Err(errno_io(e, &file.rel)),
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| errno_io(e, &file.rel))?;
        if file_type(&st) != FileType::RegularFile || st.st_dev != file.dev || st.st_ino != file.ino {
            return Ok(None);
        }
        Ok(Some(File::from(fd)))
    }

    /// Unlink `file`, which was opened as `opened` and hashed at `size`
    /// bytes and `modified`, relative to its folder's descriptor: only if
    /// the name still refers to that file and the file is unchanged.
    pub fn unlink_verified(
        &self,
        file: &LocalFile,
        opened: &File,
        size: u64,
        modified: SystemTime,
    ) -> io::Result<Unlinked> {
        let now = rustix::fs::fstat(opened).map_err(|e| errno_io(e, &file.rel))?;
        if now.st_size.max(0) as u64 != size || self::modified(&now) != modified {
            return Ok(Unlinked::Changed);
        }
        match rustix::fs::statat(&*file.dir, file.name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if st.st_dev == now.st_dev && st.st_ino == now.st_ino => {}
            Ok(_) => return Ok(Unlinked::Changed),
            Err(e) if is_absent(e) => return Ok(Unlinked::Gone),
            Err(e) => return Err(errno_io(e, &file.rel)),
        }
        match rustix::fs::unlinkat(&*file.dir, file.name.as_str(), AtFlags::empty()) {
            Ok(()) => Ok(Unlinked::Removed),
            Err(e) if is_absent(e) => Ok(Unlinked::Gone),
            Err(e) => Err(errno_io(e, &file.rel)),
        }
    }

    /// Remove a media's files (original and thumbnails) and the folders
    /// that leaves empty, without any check: for media whose rows are gone.
    /// Returns the files and bytes removed; a symlink or other oddity stops
    /// it (the rest is left for `check`).
    pub fn remove_media(&self, paths: &MediaPaths) -> io::Result<(u64, u64)> {
        let listing = self.files_of(paths)?;
        if let Some(s) = listing.skipped.first() {
            return Err(io::Error::other(format!("{s}; left in place")));
        }
        let (mut count, mut bytes) = (0, 0);
        for file in &listing.files {
            match rustix::fs::unlinkat(&*file.dir, file.name.as_str(), AtFlags::empty()) {
                Ok(()) => {
                    count += 1;
                    bytes += file.size;
                }
                Err(e) if is_absent(e) => {}
                Err(e) => return Err(errno_io(e, &file.rel)),
            }
        }
        self.prune(&paths.thumbnail_dir);
        self.prune(paths.original.rsplit_once('/').map_or("", |(d, _)| d));
        Ok((count, bytes))
    }

    /// Remove one regular file by its relative path (an orphan `check
    /// --fix` found); false if it was not there. Its emptied folders go too.
    pub fn remove_rel(&self, rel: &str) -> io::Result<bool> {
        let Some((dir_rel, name)) = rel.rsplit_once('/') else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{rel}: not below a top-level folder")));
        };
        check_component(name).map_err(|why| io::Error::new(io::ErrorKind::InvalidInput, format!("{rel}: {why}")))?;
        let dir = match self.dir(dir_rel) {
            Ok(Some(d)) => d,
            Ok(None) => return Ok(false),
            Err(e) => return Err(errno_io(e, dir_rel)),
        };
        match rustix::fs::statat(&*dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if file_type(&st) == FileType::RegularFile => {}
            Ok(_) => return Err(io::Error::other(format!("{rel}: not a regular file; left in place"))),
            Err(e) if is_absent(e) => return Ok(false),
            Err(e) => return Err(errno_io(e, rel)),
        }
        match rustix::fs::unlinkat(&*dir, name, AtFlags::empty()) {
            Ok(()) => {
                self.prune(dir_rel);
                Ok(true)
            }
            Err(e) if is_absent(e) => Ok(false),
            Err(e) => Err(errno_io(e, rel)),
        }
    }

    /// Remove `rel_dir` if it is empty, then each folder above it that is
    /// left empty; never the store's top-level folders.
    pub fn prune(&self, rel_dir: &str) {
        let mut dir = rel_dir;
        while let Some((parent, name)) = dir.rsplit_once('/') {
            let Ok(Some(parent_fd)) = self.dir(parent) else { break };
            if rustix::fs::unlinkat(&*parent_fd, name, AtFlags::REMOVEDIR).is_err() {
                break; // not empty, already gone, or not ours to remove
            }
            dir = parent;
        }
    }

    /// Visit every entry below the top-level folders, depth first in
    /// name order, never following a symlink. Folders are descended into,
    /// not visited; each file's size and modification time are read.
    pub fn walk(&self, each: &mut dyn FnMut(Walked) -> anyhow::Result<()>) -> anyhow::Result<()> {
        for top in self.names {
            let Some(fd) = self.top_to_read(top)? else { continue };
            self.walk_dir(fd, top, Detail::Stat, each)?;
        }
        Ok(())
    }

    /// A descriptor of the top-level folder `name` of its own, to read its
    /// entries with (reading moves a descriptor's position).
    fn top_to_read(&self, name: &str) -> io::Result<Option<rustix::fd::OwnedFd>> {
        let Some(fd) = self.top(name)? else { return Ok(None) };
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        rustix::fs::openat(&*fd, ".", flags, Mode::empty()).map(Some).map_err(|e| errno_io(e, name))
    }

    /// The folder `rel_dir` below a top-level one, opened beneath it
    /// without following symlinks, as a descriptor of its own (to read
    /// its entries with); [`Self::dir`] otherwise.
    fn dir_to_read(&self, rel_dir: &str) -> Result<Option<rustix::fd::OwnedFd>, Errno> {
        let (top, rest) = rel_dir.split_once('/').ok_or(Errno::INVAL)?;
        let top = match self.top(top) {
            Ok(Some(t)) => t,
            Ok(None) => return Ok(None),
            Err(e) => return Err(e.raw_os_error().map_or(Errno::IO, Errno::from_raw_os_error)),
        };
        match open_beneath(&top, rest, OFlags::RDONLY | OFlags::DIRECTORY) {
            Ok(fd) => Ok(Some(fd)),
            Err(e) if is_absent(e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn walk_dir(
        &self,
        dir: rustix::fd::OwnedFd,
        rel_dir: &str,
        detail: Detail,
        each: &mut dyn FnMut(Walked) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        self.walk_entries(dir, rel_dir, detail, each, &mut |child, rel, each| self.walk_dir(child, rel, detail, each))
    }

    /// The entries of `dir` (read through this descriptor, not a copy),
    /// in name order: files and oddities to `each`, folders (opened
    /// without following a symlink) to `descend`.
    fn walk_entries(
        &self,
        dir: rustix::fd::OwnedFd,
        rel_dir: &str,
        detail: Detail,
        each: &mut dyn FnMut(Walked) -> anyhow::Result<()>,
        descend: &mut Descend<'_>,
    ) -> anyhow::Result<()> {
        let mut reader = rustix::fs::Dir::new(dir).map_err(|e| errno_io(e, rel_dir))?;
        let mut names = Vec::new();
        for (name, kind) in read_typed(&mut reader, rel_dir)? {
            match name {
                Ok(name) => names.push((name, kind)),
                Err(raw) => each(Walked { rel: format!("{rel_dir}/{raw}"), what: WalkedKind::Other })?,
            }
        }
        names.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let dir = reader.fd().map_err(|e| errno_io(e, rel_dir))?;
        for (name, kind) in names {
            let rel = format!("{rel_dir}/{name}");
            // The folder entry's type where it is enough (and known): a
            // symlink is typed as one, and a folder is opened below
            // without following one, whatever the entry said.
            let (kind, st) = match (detail, kind) {
                (Detail::Names, kind) if kind != FileType::Unknown => (kind, None),
                _ => match rustix::fs::statat(dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => (file_type(&st), Some(st)),
                    Err(e) if is_absent(e) => continue,
                    Err(e) => return Err(errno_io(e, &rel).into()),
                },
            };
            match kind {
                FileType::Directory => {
                    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                    match rustix::fs::openat(dir, name.as_str(), flags, Mode::empty()) {
                        Ok(child) => descend(child, &rel, each)?,
                        // Gone, or replaced by a symlink or a file since.
                        Err(e) if is_absent(e) || e == Errno::LOOP || e == Errno::NOTDIR => continue,
                        Err(e) => return Err(errno_io(e, &rel).into()),
                    }
                }
                FileType::RegularFile => {
                    let what = match st {
                        Some(st) => WalkedKind::File { size: st.st_size.max(0) as u64, modified: modified(&st) },
                        None => WalkedKind::Named,
                    };
                    each(Walked { rel, what })?;
                }
                _ => each(Walked { rel, what: WalkedKind::Other })?,
            }
        }
        Ok(())
    }

    /// [`Self::walk`] for names only, with the folders below the
    /// top-level ones read on `threads` threads: the daily check-deleted
    /// walks tens of thousands of folders, one at a time a core's work
    /// while the other idles. Regular files come as [`WalkedKind::Named`],
    /// typed by their folder entries (a stat only where the file system
    /// gives no type), not looked at further.
    /// `each` runs on this thread and sees each folder's entries together
    /// and in name order, but the folders in no set order. Memory: a few
    /// chunks of entries per thread, whatever the store's size.
    pub fn walk_parallel(
        &self,
        threads: usize,
        each: &mut dyn FnMut(Walked) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        const CHUNK: usize = 512;
        // The folders are queued by name and opened when their turn comes:
        // `remote_content` holds a folder per server, tens of thousands on
        // a large homeserver, far more descriptors than a process may hold.
        let mut folders = Vec::new();
        for top in self.names {
            let Some(fd) = self.top_to_read(top)? else { continue };
            self.walk_entries(fd, top, Detail::Names, each, &mut |_, rel, _| {
                folders.push(rel.to_owned());
                Ok(())
            })?;
        }
        let queue = std::sync::Mutex::new(folders.into_iter());
        let (send, receive) = std::sync::mpsc::sync_channel::<anyhow::Result<Vec<Walked>>>(threads.max(1) * 2);
        std::thread::scope(|scope| {
            for _ in 0..threads.max(1) {
                let (send, queue) = (send.clone(), &queue);
                scope.spawn(move || {
                    let mut chunk: Vec<Walked> = Vec::with_capacity(CHUNK);
                    loop {
                        let next = queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).next();
                        let Some(rel) = next else { break };
                        let dir = match self.dir_to_read(&rel) {
                            Ok(Some(dir)) => dir,
                            // Gone, or replaced by a symlink or a file, since it was listed.
                            Ok(None) => continue,
                            Err(e) if is_refused_link(e) || e == Errno::NOTDIR => continue,
                            Err(e) => {
                                let _ = send.send(Err(errno_io(e, &rel).into()));
                                return;
                            }
                        };
                        let walked = self.walk_dir(dir, &rel, Detail::Names, &mut |entry| {
                            // A chunk ends only between folders, so a
                            // folder's entries reach `each` together.
                            if chunk.len() >= CHUNK
                                && chunk.last().is_some_and(|l: &Walked| folder_of(&l.rel) != folder_of(&entry.rel))
                            {
                                let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                                send.send(Ok(full)).map_err(|_| anyhow::anyhow!("the walk was stopped"))?;
                            }
                            chunk.push(entry);
                            Ok(())
                        });
                        if let Err(e) = walked {
                            // Nobody listening: the consumer stopped first.
                            let _ = send.send(Err(e));
                            return;
                        }
                    }
                    if !chunk.is_empty() {
                        let _ = send.send(Ok(chunk));
                    }
                });
            }
            drop(send);
            let mut consume = || {
                for chunk in receive.iter() {
                    for entry in chunk? {
                        each(entry)?;
                    }
                }
                Ok(())
            };
            let consumed = consume();
            // Stopped early: the threads' next send fails, and they end.
            drop(receive);
            consumed
        })
    }

    /// A regular file's size and modification time, resolved beneath the
    /// store without following symlinks; `None` if there is none.
    pub fn stat_rel(&self, rel: &str) -> io::Result<Option<(u64, SystemTime)>> {
        let Some((dir_rel, name)) = rel.rsplit_once('/') else { return Ok(None) };
        match self.dir(dir_rel) {
            Ok(Some(dir)) => match rustix::fs::statat(&*dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if file_type(&st) == FileType::RegularFile => {
                    Ok(Some((st.st_size.max(0) as u64, modified(&st))))
                }
                Ok(_) => Err(io::Error::other(format!("{rel}: not a regular file"))),
                Err(e) if is_absent(e) => Ok(None),
                Err(e) => Err(errno_io(e, rel)),
            },
            Ok(None) => Ok(None),
            Err(e) if is_refused_link(e) => {
                Err(io::Error::other(format!("{dir_rel}: a symlink on the way; not followed")))
            }
            Err(e) => Err(errno_io(e, dir_rel)),
        }
    }

    /// Open the regular file `rel` for reading, beneath the store, never
    /// through a symlink; `None` if there is none.
    pub fn open_rel(&self, rel: &str) -> io::Result<Option<File>> {
        let Some((dir_rel, name)) = rel.rsplit_once('/') else { return Ok(None) };
        let dir = match self.dir(dir_rel) {
            Ok(Some(dir)) => dir,
            Ok(None) => return Ok(None),
            Err(e) if is_refused_link(e) => {
                return Err(io::Error::other(format!("{dir_rel}: a symlink on the way; not followed")));
            }
            Err(e) => return Err(errno_io(e, dir_rel)),
        };
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&*dir, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) if is_absent(e) => return Ok(None),
            Err(e) if e == Errno::LOOP => return Err(io::Error::other(format!("{rel}: is a symlink; not followed"))),
            Err(e) => return Err(errno_io(e, rel)),
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| errno_io(e, rel))?;
        if file_type(&st) != FileType::RegularFile {
            return Err(io::Error::other(format!("{rel}: not a regular file")));
        }
        Ok(Some(File::from(fd)))
    }

    /// Write the file `rel` (validated components) as the homeserver would
    /// find it: its folders made beneath the store without following
    /// symlinks, the bytes `fill` writes put under a temporary name,
    /// synced, then renamed into place and the folder synced. Files and
    /// folders get the store folder's owner (when run as root) and its
    /// permission bits (files without the execute bits).
    pub fn write_rel(&self, rel: &str, fill: &mut dyn FnMut(&mut File) -> io::Result<()>) -> io::Result<()> {
        let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidInput, format!("{rel}: {why}"));
        let mut pieces: Vec<&str> = rel.split('/').collect();
        let name = pieces.pop().filter(|_| !pieces.is_empty()).ok_or_else(|| invalid("no folder".into()))?;
        if !self.names.contains(&pieces[0]) {
            return Err(invalid("not below a top-level folder of the media store".into()));
        }
        for piece in pieces.iter().chain([&name]) {
            check_component(piece).map_err(|why| invalid(why.to_owned()))?;
        }
        let root = rustix::fs::fstat(&self.root)?;
        let owner = rustix::process::geteuid().is_root().then_some((root.st_uid, root.st_gid));
        let dir_mode = Mode::from_raw_mode(root.st_mode & 0o7777);
        let file_mode = Mode::from_raw_mode(root.st_mode & 0o666);
        let own = |fd: &rustix::fd::OwnedFd, mode: Mode| -> io::Result<()> {
            rustix::fs::fchmod(fd, mode)?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::fchown(fd, Some(uid), Some(gid))?;
            }
            Ok(())
        };
        let mut dir =
            rustix::fs::openat(&self.root, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        let mut dir_rel = String::new();
        for piece in &pieces {
            if !dir_rel.is_empty() {
                dir_rel.push('/');
            }
            dir_rel.push_str(piece);
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let next = match rustix::fs::openat(&dir, *piece, flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&dir, *piece, dir_mode) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(errno_io(e, &dir_rel)),
                    }
                    let fd =
                        rustix::fs::openat(&dir, *piece, flags, Mode::empty()).map_err(|e| errno_io(e, &dir_rel))?;
                    own(&fd, dir_mode)?;
                    rustix::fs::fsync(&dir).map_err(|e| errno_io(e, &dir_rel))?;
                    fd
                }
                Err(e) if e == Errno::LOOP || e == Errno::NOTDIR => {
                    return Err(io::Error::other(format!("{dir_rel}: not a folder (a symlink?); not followed")));
                }
                Err(e) => return Err(errno_io(e, &dir_rel)),
            };
            dir = next;
        }
        // One temporary name per file: one writer holds the store's lock,
        // and a file a killed run left is overwritten by the next.
        let tmp = format!(".{name}.media-offload.tmp");
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&dir, tmp.as_str(), flags, file_mode).map_err(|e| errno_io(e, rel))?;
        let result = (|| -> io::Result<()> {
            own(&fd, file_mode)?;
            let mut file = File::from(fd);
            fill(&mut file)?;
            file.sync_all()?;
            rustix::fs::renameat(&dir, tmp.as_str(), &dir, name)?;
            rustix::fs::fsync(&dir)?;
            Ok(())
        })();
        if result.is_err() {
            let _ = rustix::fs::unlinkat(&dir, tmp.as_str(), AtFlags::empty());
        }
        result.map_err(|e| io::Error::new(e.kind(), format!("writing {rel}: {e}")))
    }

    /// Take an exclusive lock on the media store itself (`flock` on its
    /// folder), so that two runs with different state files still cannot
    /// work on one store at once. `Ok(None)` if another process holds it.
    pub fn try_lock(&self, wait: bool) -> io::Result<Option<StoreLockGuard>> {
        // A descriptor of its own (flock locks belong to the open file), of
        // the folder already opened, not of whatever the path names now.
        let fd =
            rustix::fs::openat(&self.root, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        let op = if wait {
            rustix::fs::FlockOperation::LockExclusive
        } else {
            rustix::fs::FlockOperation::NonBlockingLockExclusive
        };
        match rustix::fs::flock(&fd, op) {
            Ok(()) => Ok(Some(StoreLockGuard { _fd: fd })),
            Err(Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// (device, inode) of the store's folder, to find a lock's holder.
    pub fn identity(&self) -> io::Result<(u64, u64)> {
        let st = rustix::fs::fstat(&self.root)?;
        Ok((st.st_dev, st.st_ino))
    }
}

/// Held while a run works on the store; the lock goes with the process.
#[derive(Debug)]
pub struct StoreLockGuard {
    _fd: rustix::fd::OwnedFd,
}

/// How much a walk reads of each entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Detail {
    /// Each file's size and modification time: a stat per entry.
    Stat,
    /// Names and types from the folder entries (a stat only where the
    /// file system gives no type).
    Names,
}

/// One entry of [`MediaStore::walk`].
#[derive(Debug, Clone)]
pub struct Walked {
    pub rel: String,
    pub what: WalkedKind,
}

#[derive(Debug, Clone, Copy)]
pub enum WalkedKind {
    File {
        size: u64,
        modified: SystemTime,
    },
    /// A regular file by its folder entry's type, its size and times not
    /// read ([`MediaStore::walk_parallel`]).
    Named,
    /// A symlink, a FIFO, a name that is not UTF-8 or not a plain name...
    Other,
}

/// A folder entry's name: `Ok` for a plain UTF-8 name, `Err` (the name,
/// lossily) for the others.
type EntryName = Result<String, String>;

/// The names in a folder (see [`EntryName`]).
fn read_names(dir: &rustix::fd::OwnedFd, rel: &str) -> io::Result<Vec<EntryName>> {
    let mut reader = rustix::fs::Dir::read_from(dir).map_err(|e| errno_io(e, rel))?;
    Ok(read_typed(&mut reader, rel)?.into_iter().map(|(name, _)| name).collect())
}

/// The names in the folder `reader` reads, each with the type its entry
/// gives (`Unknown` where the file system gives none).
fn read_typed(reader: &mut rustix::fs::Dir, rel: &str) -> io::Result<Vec<(EntryName, FileType)>> {
    let mut out = Vec::new();
    each_in(reader, |entry| {
        let bytes = entry.file_name().to_bytes();
        let name = match std::str::from_utf8(bytes) {
            Ok(name) if check_component(name).is_ok() => Ok(name.to_owned()),
            _ => Err(String::from_utf8_lossy(bytes).into_owned()),
        };
        out.push((name, entry.file_type()));
        true
    })
    .map_err(|e| errno_io(e, rel))?;
    Ok(out)
}

/// Calls `f` with each entry of the folder `dir` but `.` and `..`, until
/// it returns false (through a descriptor of its own: `dir` may be shared).
fn each_entry(dir: &rustix::fd::OwnedFd, f: impl FnMut(&rustix::fs::DirEntry) -> bool) -> Result<(), Errno> {
    each_in(&mut rustix::fs::Dir::read_from(dir)?, f)
}

/// [`each_entry`] for a folder already opened for reading.
fn each_in(reader: &mut rustix::fs::Dir, mut f: impl FnMut(&rustix::fs::DirEntry) -> bool) -> Result<(), Errno> {
    while let Some(entry) = reader.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." && !f(&entry) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media_store::MediaKind;

    fn store_with(files: &[(&str, &[u8])]) -> (tempfile::TempDir, MediaStore) {
        let dir = tempfile::tempdir().unwrap();
        for (rel, data) in files {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        }
        let store = MediaStore::open(dir.path(), false).unwrap();
        (dir, store)
    }

    fn local(id: &str) -> MediaPaths {
        MediaPaths::new("", id, id, MediaKind::Local).unwrap()
    }

    #[test]
    fn lists_original_and_thumbnails_skipping_symlinks() {
        let (dir, store) = store_with(&[
            ("local_content/ab/cd/efgh", b"hello"),
            ("local_thumbnails/ab/cd/efgh/32-32-image-png-crop", b"t"),
        ]);
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("local_thumbnails/ab/cd/efgh/evil")).unwrap();
        let listing = store.files_of(&local("abcdefgh")).unwrap();
        let rels: Vec<_> = listing.files.iter().map(|f| (f.rel.as_str(), f.size)).collect();
        assert_eq!(
            rels,
            vec![("local_content/ab/cd/efgh", 5), ("local_thumbnails/ab/cd/efgh/32-32-image-png-crop", 1)]
        );
        assert_eq!(listing.skipped.len(), 1);
        assert!(store.any_file(&local("abcdefgh")).unwrap());
        assert!(!store.any_file(&local("zzzzzzzz")).unwrap());
    }

    #[test]
    fn symlinked_folders_below_the_top_level_are_never_followed() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("efgh"), b"not ours").unwrap();
        let (dir, store) = store_with(&[("local_content/ab/.keep", b"")]);
        std::os::unix::fs::symlink(outside.path(), dir.path().join("local_content/ab/cd")).unwrap();
        let listing = store.files_of(&local("abcdefgh")).unwrap();
        assert!(listing.files.is_empty());
        assert_eq!(listing.skipped.len(), 1, "{:?}", listing.skipped);
        assert!(store.any_file(&local("abcdefgh")).unwrap(), "kept open, not marked deleted");
        assert!(store.remove_rel("local_content/ab/cd/efgh").is_err());
        assert!(outside.path().join("efgh").exists());
        // A symlinked top-level folder is fine (admins split disks so).
        let real = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(real.path().join("ab/cd")).unwrap();
        std::fs::write(real.path().join("ab/cd/efgh"), b"ours").unwrap();
        std::fs::remove_dir_all(dir.path().join("local_content")).unwrap();
        std::os::unix::fs::symlink(real.path(), dir.path().join("local_content")).unwrap();
        let store = MediaStore::open(dir.path(), true).unwrap();
        assert_eq!(store.files_of(&local("abcdefgh")).unwrap().files.len(), 1);
    }

    #[test]
    fn noted_absent_folders_answer_like_the_kernel() {
        let (dir, store) = store_with(&[
            ("local_content/ab/cd/efgh", b"hello"),
            ("local_thumbnails/ab/zz/yyyy/32-32-image-png-crop", b"t"),
        ]);
        let absent = KnownFolders::default();
        for id in ["abcdefgh", "abcdxxxx", "abzzyyyy", "abqqrrrr", "ababcdcd", "qqrrssss", "qqrrtttt"] {
            let noted = store.any_file_noting(&local(id), &absent).unwrap();
            assert_eq!(noted, store.any_file(&local(id)).unwrap(), "{id}");
            assert_eq!(noted, store.any_file_noting(&local(id), &absent).unwrap(), "{id}, asked again");
        }
        let known = absent.known();
        let noted = |set: &std::collections::HashSet<u64>, name: &str| set.contains(&name_hash(name));
        assert!(noted(&known.absent, "local_content/qq"));
        assert!(noted(&known.absent, "local_thumbnails/qq"));
        assert!(noted(&known.absent, "local_content/ab/qq"));
        assert!(noted(&known.present, "local_content/ab"));
        assert!(noted(&known.present, "local_content/ab/cd"));
        assert!(!noted(&known.absent, "local_thumbnails/ab/cd/xxxx"), "no per-media folder");
        drop(known);
        // A symlink where the original is: present (kept open, reported by upload).
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("local_content/ab/cd/link")).unwrap();
        assert!(store.any_file_noting(&local("abcdlink"), &absent).unwrap());
        assert!(store.any_file(&local("abcdlink")).unwrap());
        // What was noted stays true only for the run: a folder made since
        // is not seen (its media marked deleted, reopened by the next walk).
        std::fs::create_dir_all(dir.path().join("local_content/qq/rr")).unwrap();
        std::fs::write(dir.path().join("local_content/qq/rr/ssss"), b"back").unwrap();
        assert!(store.any_file(&local("qqrrssss")).unwrap());
        assert!(!store.any_file_noting(&local("qqrrssss"), &absent).unwrap());
        assert_eq!(
            ancestors_below_top("remote_thumbnail/o/ab/cd/ef").collect::<Vec<_>>(),
            ["remote_thumbnail/o", "remote_thumbnail/o/ab", "remote_thumbnail/o/ab/cd"]
        );
    }

    #[test]
    fn listed_folders_answer_like_the_kernel() {
        let (dir, store) = store_with(&[
            ("local_content/ab/cd/efgh", b"hello"),
            ("local_thumbnails/ab/cd/thmb/32-32-image-png-crop", b"t"),
            ("local_thumbnails/ab/cd/empt/.keep/x", b"folders only"),
        ]);
        std::fs::remove_file(dir.path().join("local_thumbnails/ab/cd/empt/.keep/x")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("local_content/ab/cd/link")).unwrap();
        std::fs::create_dir_all(dir.path().join("local_content/zz")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("local_content/zz/yy")).unwrap();
        let known = KnownFolders::listing();
        let ids = ["abcdefgh", "abcdthmb", "abcdempt", "abcdlink", "abcdxxxx", "zzyyxxxx", "qqrrssss", "abqqrrrr"];
        for round in 0..2 {
            for id in ids {
                let listed = store.any_file_noting(&local(id), &known).unwrap();
                assert_eq!(listed, store.any_file(&local(id)).unwrap(), "{id}, round {round}");
            }
        }
        let folders = known.known();
        assert!(folders.listings.contains_key(&name_hash("local_content/ab/cd")));
        assert!(folders.listings.contains_key(&name_hash("local_thumbnails/ab/cd")));
        assert_eq!(folders.listed, 2 + 2, "two originals and two thumbnail folders");
        drop(folders);
        // A listing holds for the run: an original written since is not
        // seen (marked deleted, reopened by the walk that follows).
        std::fs::write(dir.path().join("local_content/ab/cd/newf"), b"new").unwrap();
        assert!(store.any_file(&local("abcdnewf")).unwrap());
        assert!(!store.any_file_noting(&local("abcdnewf"), &known).unwrap());
        // Without listings (the default), the same questions go to the kernel.
        let plain = KnownFolders::default();
        assert!(store.any_file_noting(&local("abcdnewf"), &plain).unwrap());
        assert!(plain.known().listings.is_empty());
    }

    #[test]
    fn the_parallel_walk_sees_what_the_walk_sees() {
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        for i in 0..300 {
            files.push((format!("local_content/a{}/c{}/m{i:04}", i % 7, i % 3), b"x".to_vec()));
            files.push((format!("local_thumbnails/a{}/c{}/m{i:04}/32-32-image-png-crop", i % 7, i % 3), b"t".to_vec()));
        }
        files.push(("remote_content/example.org/ab/cd/efgh".into(), b"r".to_vec()));
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(p, d)| (p.as_str(), d.as_slice())).collect();
        let (dir, store) = store_with(&refs);
        std::os::unix::fs::symlink("/etc", dir.path().join("local_content/a1/link")).unwrap();
        let mut serial = Vec::new();
        store
            .walk(&mut |w| {
                serial.push((w.rel, matches!(w.what, WalkedKind::File { .. })));
                Ok(())
            })
            .unwrap();
        for threads in [1, 3] {
            let mut parallel = Vec::new();
            store
                .walk_parallel(threads, &mut |w| {
                    // Names only: files by their folder entries' type.
                    assert!(!matches!(w.what, WalkedKind::File { .. }), "{}: stat read", w.rel);
                    parallel.push((w.rel, matches!(w.what, WalkedKind::Named)));
                    Ok(())
                })
                .unwrap();
            parallel.sort();
            let mut expected = serial.clone();
            expected.sort();
            assert_eq!(parallel, expected, "{threads} threads");
        }
        assert_eq!(serial.len(), 602, "the symlink is reported, not followed");
        // The consumer stopping stops the walk, with its error.
        let mut seen = 0;
        let err = store
            .walk_parallel(2, &mut |_| {
                seen += 1;
                if seen == 10 { anyhow::bail!("enough") } else { Ok(()) }
            })
            .unwrap_err();
        assert_eq!(err.to_string(), "enough");
    }

    #[test]
    fn unlink_only_the_file_that_was_opened_unchanged() {
        let (dir, store) = store_with(&[("local_content/ab/cd/efgh", b"hello")]);
        let paths = local("abcdefgh");
        let file = store.files_of(&paths).unwrap().files.remove(0);
        let opened = store.open_file(&file).unwrap().unwrap();
        // Replaced under the same name: not the file we hashed.
        let path = dir.path().join("local_content/ab/cd/efgh");
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"hello").unwrap();
        assert_eq!(store.unlink_verified(&file, &opened, 5, file.modified).unwrap(), Unlinked::Changed);
        assert!(path.exists());
        let file = store.files_of(&paths).unwrap().files.remove(0);
        let opened = store.open_file(&file).unwrap().unwrap();
        assert_eq!(store.unlink_verified(&file, &opened, 4, file.modified).unwrap(), Unlinked::Changed, "size");
        assert_eq!(store.unlink_verified(&file, &opened, 5, file.modified).unwrap(), Unlinked::Removed);
        assert!(!path.exists());
        store.prune("local_content/ab/cd");
        assert!(!dir.path().join("local_content/ab").exists());
        assert!(dir.path().join("local_content").is_dir(), "top-level folder kept");
    }

    #[test]
    fn walk_visits_files_and_reports_oddities() {
        let (dir, store) = store_with(&[("local_content/ab/cd/efgh", b"x"), ("remote_content/o/ab/cd/ef", b"yy")]);
        std::os::unix::fs::symlink("/etc", dir.path().join("local_content/ab/link")).unwrap();
        let mut seen = Vec::new();
        store
            .walk(&mut |w| {
                seen.push((w.rel, matches!(w.what, WalkedKind::File { .. })));
                Ok(())
            })
            .unwrap();
        assert_eq!(
            seen,
            vec![
                ("local_content/ab/cd/efgh".to_owned(), true),
                ("local_content/ab/link".to_owned(), false),
                ("remote_content/o/ab/cd/ef".to_owned(), true)
            ]
        );
    }

    #[test]
    fn the_component_walk_refuses_symlinks_as_openat2_does() {
        let outside = tempfile::tempdir().unwrap();
        let (dir, store) = store_with(&[("local_content/ab/cd/efgh", b"x"), ("local_content/zz/.keep", b"")]);
        std::os::unix::fs::symlink(outside.path(), dir.path().join("local_content/zz/yy")).unwrap();
        std::fs::write(dir.path().join("local_content/zz/file"), b"").unwrap();
        let top = store.top("local_content").unwrap().unwrap();
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        assert!(open_by_components(&top, "ab/cd", flags).is_ok());
        for (rest, want) in [("zz/yy", Errno::LOOP), ("zz/file", Errno::NOTDIR), ("zz/none", Errno::NOENT)] {
            assert_eq!(open_by_components(&top, rest, flags).err(), Some(want), "{rest}");
            assert_eq!(open_beneath(&top, rest, flags).err(), Some(want), "{rest} (openat2)");
        }
    }

    #[test]
    fn the_store_lock_excludes_a_second_holder() {
        let (_dir, store) = store_with(&[]);
        let held = store.try_lock(false).unwrap();
        assert!(held.is_some());
        assert!(store.try_lock(false).unwrap().is_none());
        drop(held);
        assert!(store.try_lock(false).unwrap().is_some());
    }
}
