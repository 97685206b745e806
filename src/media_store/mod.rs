//! Synapse's media store: its layout (where a media's original and
//! thumbnails live, checked so that no database value can reach outside
//! the store) here, and file access beneath the store's directory
//! descriptors, never following a symlink, in [`fs`].

pub mod fs;

pub use fs::{KnownFolders, Listing, LocalFile, MediaStore, Skipped, Unlinked};

/// Top-level folders of a Synapse media store. Never pruned.
pub const TOP_LEVEL: &[&str] = &["local_content", "local_thumbnails", "remote_content", "remote_thumbnail"];

/// Top-level folders of a Dendrite media store: a hash's first character
/// (unpadded URL-safe base64). Its `tmp/` folder is not among them.
pub const DENDRITE_TOP_LEVEL: &[&str] = &[
    "A", "B", "C", "D", "E", "F", "G", "H", "I", "J", "K", "L", "M", "N", "O", "P", "Q", "R", "S", "T", "U", "V", "W",
    "X", "Y", "Z", "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r", "s", "t",
    "u", "v", "w", "x", "y", "z", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "-", "_",
];

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
        let (a, b, rest) = Self::split(origin, media_id, filesystem_id, kind)?;
        Ok(match kind {
            MediaKind::Local => Self {
                original: format!("local_content/{a}/{b}/{rest}"),
                thumbnail_dir: format!("local_thumbnails/{a}/{b}/{rest}"),
            },
            MediaKind::Remote => Self {
                original: format!("remote_content/{origin}/{a}/{b}/{rest}"),
                thumbnail_dir: format!("remote_thumbnail/{origin}/{a}/{b}/{rest}"),
            },
        })
    }

    /// Whether [`MediaPaths::new`] accepts the row, without building the
    /// paths (update-db checks every row it copies into cache.db).
    pub fn validate(origin: &str, media_id: &str, filesystem_id: &str, kind: MediaKind) -> Result<(), InvalidRow> {
        Self::split(origin, media_id, filesystem_id, kind).map(drop)
    }

    /// The filesystem id's three path components (`ab`, `cd`, the rest),
    /// each checked, and the origin checked for remote media. Python
    /// slices by code point, so do we.
    fn split<'a>(
        origin: &str,
        media_id: &str,
        filesystem_id: &'a str,
        kind: MediaKind,
    ) -> Result<(&'a str, &'a str, &'a str), InvalidRow> {
        let invalid = |reason: String| InvalidRow { origin: origin.to_owned(), media_id: media_id.to_owned(), reason };
        let mut bounds = filesystem_id.char_indices().map(|(i, _)| i);
        let (Some(_), Some(_), Some(two), Some(_), Some(four)) =
            (bounds.next(), bounds.next(), bounds.next(), bounds.next(), bounds.next())
        else {
            return Err(invalid(format!("filesystem id {filesystem_id:?} is shorter than 5 characters")));
        };
        let (a, b, rest) = (&filesystem_id[..two], &filesystem_id[two..four], &filesystem_id[four..]);
        for piece in [a, b, rest] {
            check_component(piece).map_err(|why| invalid(format!("filesystem id {filesystem_id:?}: {why}")))?;
        }
        if kind == MediaKind::Remote {
            check_component(origin).map_err(|why| invalid(format!("origin {origin:?}: {why}")))?;
        }
        Ok((a, b, rest))
    }
}

impl MediaPaths {
    /// Where Dendrite keeps the media of hash `hash`
    /// (`mediaapi/fileutils`: `h[0]/h[1]/h[2:]/file`, thumbnails beside it
    /// as `thumbnail-<w>x<h>-<method>`): one folder per hash, shared by
    /// every row with that hash. Only unpadded URL-safe base64, as Dendrite
    /// writes it, of 3 to 255 characters is accepted.
    pub fn dendrite(origin: &str, media_id: &str, hash: &str) -> Result<Self, InvalidRow> {
        let invalid = |reason: String| InvalidRow { origin: origin.to_owned(), media_id: media_id.to_owned(), reason };
        if !(3..=255).contains(&hash.len()) {
            return Err(invalid(format!("base64hash {hash:?} is not 3 to 255 characters long")));
        }
        if !is_base64url(hash) {
            return Err(invalid(format!("base64hash {hash:?} is not unpadded URL-safe base64")));
        }
        let folder = format!("{}/{}/{}", &hash[..1], &hash[1..2], &hash[2..]);
        Ok(Self { original: format!("{folder}/file"), thumbnail_dir: folder })
    }
}

fn is_base64url(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A path in a Dendrite media store read back: the hash whose folder it is
/// in and the file's name (`file`, or a thumbnail's), or `None` for
/// anything that is not Dendrite's layout.
pub fn dendrite_file(rel: &str) -> Option<(String, &str)> {
    let parts: Vec<&str> = rel.split('/').collect();
    let [a, b, rest, name] = parts[..] else { return None };
    if a.len() != 1 || b.len() != 1 || rest.is_empty() || !is_base64url(&format!("{a}{b}{rest}")) {
        return None;
    }
    (name == "file" || name.starts_with("thumbnail-")).then(|| (format!("{a}{b}{rest}"), name))
}

/// The file name Dendrite gives a thumbnail (`mediaapi/thumbnailer`).
pub fn dendrite_thumbnail_name(width: i64, height: i64, method: &str) -> String {
    format!("thumbnail-{width}x{height}-{method}")
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

/// The file name Synapse gives a thumbnail (`{width}-{height}-{top}-{sub}-{method}`,
/// from `synapse/media/filepath.py`), for matching files with thumbnail rows.
pub fn thumbnail_name(width: i64, height: i64, content_type: &str, method: &str) -> Option<String> {
    let (top, sub) = content_type.split_once('/')?;
    Some(format!("{width}-{height}-{top}-{sub}-{method}"))
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
    fn dendrite_layout_round_trips_and_refuses_what_it_never_writes() {
        let p = MediaPaths::dendrite("o", "m", "qwerty").unwrap();
        assert_eq!((p.original.as_str(), p.thumbnail_dir.as_str()), ("q/w/erty/file", "q/w/erty"));
        assert_eq!(dendrite_file("q/w/erty/file"), Some(("qwerty".to_owned(), "file")));
        assert_eq!(dendrite_file("q/w/erty/thumbnail-32x32-crop"), Some(("qwerty".to_owned(), "thumbnail-32x32-crop")));
        for bad in ["tmp/x/y/file", "q/w/erty/other", "q/w/file", "qq/w/erty/file", "q/w/er.y/file"] {
            assert_eq!(dendrite_file(bad), None, "{bad}");
        }
        for bad in ["ab", "../x", "a/bcdef", "abc=", "ab.cd", &"a".repeat(256)] {
            assert!(MediaPaths::dendrite("o", "m", bad).is_err(), "{bad}");
        }
        assert_eq!(dendrite_thumbnail_name(640, 480, "scale"), "thumbnail-640x480-scale");
    }

    #[test]
    fn non_ascii_ids_are_split_by_character() {
        let p = MediaPaths::new("", "x", "äöüßabc", MediaKind::Local).unwrap();
        assert_eq!(p.original, "local_content/äö/üß/abc");
    }
}
