//! Synapse's media store layout: where a media's original and thumbnails
//! live, checked so that no database value can reach outside the store.

use std::fmt;
use std::io;
use std::path::Path;

/// Top-level folders of a Synapse media store. Never pruned.
pub const TOP_LEVEL: &[&str] = &["local_content", "local_thumbnails", "remote_content", "remote_thumbnail"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Local,
    Remote,
}

impl MediaKind {
    /// The `type` column of cache.db.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Local => "local",
            MediaKind::Remote => "remote",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "local" => Some(Self::Local),
            "remote" => Some(Self::Remote),
            _ => None,
        }
    }
}

/// A row whose values cannot be turned into a path inside the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refusing row (origin {origin:?}, media_id {media_id:?}): {reason}")]
pub struct InvalidRow {
    pub origin: String,
    pub media_id: String,
    pub reason: String,
}

/// Where one media's files live, relative to the store root, with `/`
/// separators (they double as object keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaPaths {
    pub original: String,
    pub thumbnail_dir: String,
}

impl MediaPaths {
    /// Validate the row and compute its paths, exactly as Synapse (and
    /// `s3_media_upload`) lay them out.
    pub fn new(origin: &str, media_id: &str, filesystem_id: &str, kind: MediaKind) -> Result<Self, InvalidRow> {
        let invalid = |reason: String| InvalidRow { origin: origin.to_owned(), media_id: media_id.to_owned(), reason };
        // Python slices by code point, so do we.
        let chars: Vec<char> = filesystem_id.chars().collect();
        if chars.len() < 5 {
            return Err(invalid(format!("filesystem id {filesystem_id:?} is shorter than 5 characters")));
        }
        let part = |r: std::ops::Range<usize>| chars[r].iter().collect::<String>();
        let (a, b, rest) = (part(0..2), part(2..4), part(4..chars.len()));
        for piece in [&a, &b, &rest] {
            check_component(piece).map_err(|why| invalid(format!("filesystem id {filesystem_id:?}: {why}")))?;
        }
        let (content, thumbs) = match kind {
            MediaKind::Local => ("local_content".to_owned(), "local_thumbnails".to_owned()),
            MediaKind::Remote => {
                check_component(origin).map_err(|why| invalid(format!("origin {origin:?}: {why}")))?;
                (format!("remote_content/{origin}"), format!("remote_thumbnail/{origin}"))
            }
        };
        Ok(Self { original: format!("{content}/{a}/{b}/{rest}"), thumbnail_dir: format!("{thumbs}/{a}/{b}/{rest}") })
    }
}

/// What a path in the media store (or an object key without its prefix)
/// belongs to, read back from Synapse's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    pub kind: MediaKind,
    /// Empty for local media.
    pub origin: String,
    /// The filesystem id (the media id, for local media).
    pub filesystem_id: String,
    /// A file in the media's thumbnail folder.
    pub thumbnail: bool,
}

impl StoredFile {
    /// `local_content/ab/cd/rest`, `local_thumbnails/ab/cd/rest/<file>`,
    /// `remote_content/<origin>/ab/cd/rest` or
    /// `remote_thumbnail/<origin>/ab/cd/rest/<file>`; anything else is None.
    pub fn parse(rel: &str) -> Option<Self> {
        let parts: Vec<&str> = rel.split('/').collect();
        let (kind, thumbnail, origin, rest) = match *parts.first()? {
            "local_content" => (MediaKind::Local, false, "", &parts[1..]),
            "local_thumbnails" => (MediaKind::Local, true, "", &parts[1..]),
            "remote_content" => (MediaKind::Remote, false, *parts.get(1)?, &parts[2..]),
            "remote_thumbnail" => (MediaKind::Remote, true, *parts.get(1)?, &parts[2..]),
            _ => return None,
        };
        let want = if thumbnail { 4 } else { 3 };
        if rest.len() != want
            || rest.iter().chain([&origin].into_iter().filter(|o| !o.is_empty())).any(|p| check_component(p).is_err())
        {
            return None;
        }
        if rest[0].chars().count() != 2 || rest[1].chars().count() != 2 {
            return None;
        }
        Some(Self {
            kind,
            origin: origin.to_owned(),
            filesystem_id: format!("{}{}{}", rest[0], rest[1], rest[2]),
            thumbnail,
        })
    }
}

/// Remove a media's files (original and thumbnails, never following a
/// symlink) and the folders that leaves empty. Returns the files and bytes
/// removed; the first error stops it (the rest is left for a rerun).
pub fn remove_media_files(base: &Path, paths: &MediaPaths) -> io::Result<(u64, u64)> {
    let (files, skipped) = local_files(base, paths)?;
    if let Some(s) = skipped.first() {
        return Err(io::Error::other(format!("{s}; left in place")));
    }
    let (mut count, mut bytes) = (0, 0);
    for file in &files {
        match std::fs::remove_file(base.join(&file.rel)) {
            Ok(()) => {
                count += 1;
                bytes += file.size;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(with_path(e, &file.rel)),
        }
    }
    prune_empty_folder(base, Path::new(&paths.thumbnail_dir));
    prune_empty_dirs(base, &paths.original);
    Ok((count, bytes))
}

/// One path component from a database value or a directory listing.
pub fn check_component(piece: &str) -> Result<(), &'static str> {
    if piece.is_empty() {
        Err("empty path component")
    } else if piece == "." || piece == ".." {
        Err("would escape the media store (`.` or `..`)")
    } else if piece.contains(['/', '\\']) {
        Err("contains a path separator")
    } else if piece.contains('\0') {
        Err("contains a NUL byte")
    } else {
        Ok(())
    }
}

/// A file of a media found on local disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFile {
    /// Relative path with `/` separators (the object key without prefix).
    pub rel: String,
    pub size: u64,
}

/// Something in the store that is not a regular file where one was expected.
#[derive(Debug)]
pub struct Skipped {
    pub rel: String,
    pub why: String,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.rel, self.why)
    }
}

/// The media's files on disk: the original and every regular file in its
/// thumbnail folder. Symlinks and other oddities are reported in `skipped`,
/// never followed.
pub fn local_files(base: &Path, paths: &MediaPaths) -> io::Result<(Vec<LocalFile>, Vec<Skipped>)> {
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    let original_dir = parent_of(&paths.original);
    if let Some(link) = symlinked_folder(base, original_dir)? {
        skipped.push(Skipped { rel: link, why: "is a symlink; not followed".into() });
    } else {
        match std::fs::symlink_metadata(base.join(&paths.original)) {
            Ok(meta) if meta.is_file() => files.push(LocalFile { rel: paths.original.clone(), size: meta.len() }),
            Ok(_) => skipped.push(Skipped { rel: paths.original.clone(), why: "not a regular file".into() }),
            Err(e) if is_absent(&e) => {}
            Err(e) => return Err(with_path(e, &paths.original)),
        }
    }
    if let Some(link) = symlinked_folder(base, &paths.thumbnail_dir)? {
        skipped.push(Skipped { rel: link, why: "is a symlink; not followed".into() });
        return Ok((files, skipped));
    }
    let dir = match std::fs::read_dir(base.join(&paths.thumbnail_dir)) {
        Ok(dir) => dir,
        Err(e) if is_absent(&e) => return Ok((files, skipped)),
        Err(e) => return Err(with_path(e, &paths.thumbnail_dir)),
    };
    for entry in dir {
        let entry = entry.map_err(|e| with_path(e, &paths.thumbnail_dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| check_component(n).is_ok()) else {
            skipped.push(Skipped {
                rel: format!("{}/{}", paths.thumbnail_dir, name.to_string_lossy()),
                why: "file name is not valid UTF-8 or not a plain name".into(),
            });
            continue;
        };
        let rel = format!("{}/{name}", paths.thumbnail_dir);
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            Err(e) if is_absent(&e) => continue,
            Err(e) => return Err(with_path(e, &rel)),
        };
        if meta.is_file() {
            files.push(LocalFile { rel, size: meta.len() });
        } else if meta.is_dir() {
            // Not Synapse's; not a file of this media either (as in the
            // Python tool), so it neither blocks nor counts.
            log::debug!("{rel}: a folder inside a thumbnail folder; ignored");
        } else {
            skipped.push(Skipped { rel, why: "not a regular file".into() });
        }
    }
    files.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok((files, skipped))
}

/// Whether anything of the media is still on local disk, by the same rule
/// `upload` lists files with: an original of any kind, or an entry other than
/// a folder in the thumbnail folder. Symlinked folders count as present, so
/// their media stay open (and reported by `upload`) instead of being hidden.
pub fn any_local_file(base: &Path, paths: &MediaPaths) -> io::Result<bool> {
    if symlinked_folder(base, parent_of(&paths.original))?.is_some()
        || symlinked_folder(base, &paths.thumbnail_dir)?.is_some()
    {
        return Ok(true);
    }
    match std::fs::symlink_metadata(base.join(&paths.original)) {
        Ok(_) => return Ok(true),
        Err(e) if is_absent(&e) => {}
        Err(e) => return Err(with_path(e, &paths.original)),
    }
    let dir = match std::fs::read_dir(base.join(&paths.thumbnail_dir)) {
        Ok(dir) => dir,
        Err(e) if is_absent(&e) => return Ok(false),
        Err(e) => return Err(with_path(e, &paths.thumbnail_dir)),
    };
    for entry in dir {
        let entry = entry.map_err(|e| with_path(e, &paths.thumbnail_dir))?;
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Remove the folders above `rel` that the deletion left empty, up to but
/// not including the store's top-level folders.
pub fn prune_empty_dirs(base: &Path, rel: &str) {
    if let Some(dir) = Path::new(rel).parent() {
        prune_empty_folder(base, dir);
    }
}

/// Remove `rel_dir` if empty, then each folder above it that is left
/// empty, never the store's top-level folders.
pub fn prune_empty_folder(base: &Path, rel_dir: &Path) {
    let mut dir = Some(rel_dir);
    while let Some(d) = dir {
        if d.components().count() <= 1 {
            break;
        }
        if std::fs::remove_dir(base.join(d)).is_err() {
            break; // not empty, already gone, or not ours to remove
        }
        dir = d.parent();
    }
}

/// Refuse a base path that is not a media store, so a typo cannot mark
/// every row as deleted. A store with none of Synapse's folders is only
/// accepted when there are no rows to judge against it.
pub fn check_base_path(base: &Path, has_rows: bool) -> anyhow::Result<()> {
    let meta = std::fs::metadata(base).map_err(|e| anyhow::anyhow!("media store {}: {}", base.display(), e))?;
    if !meta.is_dir() {
        anyhow::bail!("media store {} is not a directory", base.display());
    }
    if has_rows && !TOP_LEVEL.iter().any(|top| base.join(top).is_dir()) {
        anyhow::bail!(
            "{} does not look like a Synapse media store (none of {} inside); check BASE_PATH",
            base.display(),
            TOP_LEVEL.join(", ")
        );
    }
    Ok(())
}

fn parent_of(rel: &str) -> &str {
    rel.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// The first folder below the top-level one, on the way to `rel_dir`, that
/// is a symlink. Top-level folders may be symlinks (admins split disks that
/// way); below them Synapse only makes real folders, and following a link
/// there could upload and delete files outside the store.
pub fn symlinked_folder(base: &Path, rel_dir: &str) -> io::Result<Option<String>> {
    let mut end = rel_dir.find('/').unwrap_or(rel_dir.len());
    while end < rel_dir.len() {
        end = rel_dir[end + 1..].find('/').map_or(rel_dir.len(), |i| end + 1 + i);
        let prefix = &rel_dir[..end];
        match std::fs::symlink_metadata(base.join(prefix)) {
            Ok(meta) if meta.file_type().is_symlink() => return Ok(Some(prefix.to_owned())),
            Ok(_) => {}
            Err(e) if is_absent(&e) => return Ok(None),
            Err(e) => return Err(with_path(e, prefix)),
        }
    }
    Ok(None)
}

fn is_absent(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory)
}

fn with_path(e: io::Error, rel: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{rel}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_paths_parse_back() {
        let p = MediaPaths::new("matrix.org", "m", "XyZ12345", MediaKind::Remote).unwrap();
        let f = StoredFile::parse(&p.original).unwrap();
        assert_eq!(
            (f.kind, f.origin.as_str(), f.filesystem_id.as_str(), f.thumbnail),
            (MediaKind::Remote, "matrix.org", "XyZ12345", false)
        );
        let f = StoredFile::parse("local_thumbnails/ab/cd/efgh/32-32-image-png-crop").unwrap();
        assert_eq!((f.kind, f.filesystem_id.as_str(), f.thumbnail), (MediaKind::Local, "abcdefgh", true));
        for bad in [
            "local_content/ab/cd",
            "local_content/abc/d/efgh",
            "url_cache/2024-01-01/x",
            "local_content/ab/cd/ef/gh",
            "remote_content/../ab/cd/ef",
            "local_thumbnails/ab/cd/efgh",
            "",
        ] {
            assert_eq!(StoredFile::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn layout_matches_synapse() {
        let p = MediaPaths::new("", "abcdefgh", "abcdefgh", MediaKind::Local).unwrap();
        assert_eq!(p.original, "local_content/ab/cd/efgh");
        assert_eq!(p.thumbnail_dir, "local_thumbnails/ab/cd/efgh");
        let p = MediaPaths::new("matrix.org", "m", "XyZ12345", MediaKind::Remote).unwrap();
        assert_eq!(p.original, "remote_content/matrix.org/Xy/Z1/2345");
        assert_eq!(p.thumbnail_dir, "remote_thumbnail/matrix.org/Xy/Z1/2345");
    }

    #[test]
    fn rows_that_would_escape_are_refused() {
        for (origin, fs_id, kind) in [
            ("", "../../etc/passwd", MediaKind::Local),
            ("", "....x", MediaKind::Local),
            ("", "ab/cdefg", MediaKind::Local),
            ("", "abcd", MediaKind::Local),
            ("", "ab\\cdefg", MediaKind::Local),
            ("", "abc\0defg", MediaKind::Local),
            ("..", "abcdefgh", MediaKind::Remote),
            ("a/b", "abcdefgh", MediaKind::Remote),
            ("", "abcdefgh", MediaKind::Remote),
            ("x", "ab..", MediaKind::Remote),
        ] {
            assert!(MediaPaths::new(origin, "id", fs_id, kind).is_err(), "{origin:?} {fs_id:?}");
        }
    }

    #[test]
    fn non_ascii_ids_are_split_by_character() {
        let p = MediaPaths::new("", "x", "äöüßabc", MediaKind::Local).unwrap();
        assert_eq!(p.original, "local_content/äö/üß/abc");
    }

    #[test]
    fn pruning_stops_at_top_level_folders() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        std::fs::create_dir_all(base.join("local_content/ab/cd")).unwrap();
        std::fs::create_dir_all(base.join("local_content/ab/zz")).unwrap();
        prune_empty_dirs(base, "local_content/ab/cd/efgh");
        assert!(!base.join("local_content/ab/cd").exists());
        assert!(base.join("local_content/ab/zz").exists(), "non-empty sibling kept");
        prune_empty_dirs(base, "local_content/ab/zz/efgh");
        assert!(!base.join("local_content/ab").exists());
        assert!(base.join("local_content").is_dir(), "top-level folder kept");
    }

    #[test]
    fn symlinked_folders_below_the_top_level_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("efgh"), b"not ours").unwrap();
        std::fs::create_dir_all(base.join("local_content/ab")).unwrap();
        std::os::unix::fs::symlink(outside.path(), base.join("local_content/ab/cd")).unwrap();
        let p = MediaPaths::new("", "abcdefgh", "abcdefgh", MediaKind::Local).unwrap();
        assert_eq!(symlinked_folder(base, "local_content/ab/cd").unwrap().as_deref(), Some("local_content/ab/cd"));
        let (files, skipped) = local_files(base, &p).unwrap();
        assert!(files.is_empty());
        assert_eq!(skipped.len(), 1);
        assert!(any_local_file(base, &p).unwrap(), "kept open, not marked deleted");
        // A symlinked top-level folder is fine.
        let real = tempfile::tempdir().unwrap();
        std::fs::remove_dir_all(base.join("local_content")).unwrap();
        std::os::unix::fs::symlink(real.path(), base.join("local_content")).unwrap();
        assert_eq!(symlinked_folder(base, "local_content/ab/cd").unwrap(), None);
    }

    #[test]
    fn lists_original_and_thumbnails_skipping_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        let p = MediaPaths::new("", "abcdefgh", "abcdefgh", MediaKind::Local).unwrap();
        std::fs::create_dir_all(base.join("local_content/ab/cd")).unwrap();
        std::fs::write(base.join(&p.original), b"hello").unwrap();
        std::fs::create_dir_all(base.join(&p.thumbnail_dir)).unwrap();
        std::fs::write(base.join(&p.thumbnail_dir).join("32-32-image-png-crop"), b"t").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", base.join(&p.thumbnail_dir).join("evil")).unwrap();
        let (files, skipped) = local_files(base, &p).unwrap();
        let rels: Vec<_> = files.iter().map(|f| (f.rel.as_str(), f.size)).collect();
        assert_eq!(
            rels,
            vec![("local_content/ab/cd/efgh", 5), ("local_thumbnails/ab/cd/efgh/32-32-image-png-crop", 1)]
        );
        assert_eq!(skipped.len(), 1);
    }
}
