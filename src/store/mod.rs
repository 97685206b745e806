//! Object stores behind one small trait: S3-compatible services and a
//! local directory with the same layout.
//!
//! The trait is synchronous; the S3 store owns the async runtime it needs.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::SystemTime;

use md5::{Digest as _, Md5};

pub mod local;
pub mod s3;

/// What a store says about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    /// MD5 of the content, where the store can tell: a checksum we stored
    /// with the object, or the ETag of a plain single-part upload.
    pub md5: Option<[u8; 16]>,
}

/// A store failure, with enough text to act on (never a secret).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

pub trait ObjectStore: Send + Sync {
    /// For logs: `s3://bucket (endpoint)` or the directory.
    fn describe(&self) -> String;
    /// The object at `key`, or `None` if there is none.
    fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError>;
    /// Store the file at `key` and return what the store now holds there.
    fn put(&self, key: &str, path: &Path, digest: &FileDigest) -> Result<ObjectInfo, StoreError>;
    /// Whether the object at `key` is the local file at `path` itself (a
    /// directory store overlapping the media store). Deleting it then would
    /// delete the only copy.
    fn is_same_file(&self, _key: &str, _path: &Path) -> bool {
        false
    }
    /// Part size if a file of `size` bytes goes up in parts.
    fn part_size(&self, _size: u64) -> Option<u64> {
        None
    }
}

/// Size, modification time and checksums of a local file, read in one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    pub size: u64,
    pub modified: Option<SystemTime>,
    pub md5: [u8; 16],
    /// MD5 of each part, when the file is uploaded in parts.
    pub part_md5s: Vec<[u8; 16]>,
    pub part_size: u64,
}

impl FileDigest {
    /// Read the file once, streaming, computing the whole-file MD5 and
    /// (with `part_size`) each part's MD5.
    pub fn of_file(path: &Path, part_size: Option<u64>) -> std::io::Result<Self> {
        let mut file = File::open(path)?;
        let meta = file.metadata()?;
        let part_size = part_size.unwrap_or(0);
        let mut whole = Md5::new();
        let mut part = Md5::new();
        let mut in_part = 0u64;
        let mut part_md5s = Vec::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            let mut chunk = &buf[..n];
            whole.update(chunk);
            size += n as u64;
            while part_size > 0 && !chunk.is_empty() {
                let take = chunk.len().min((part_size - in_part) as usize);
                part.update(&chunk[..take]);
                in_part += take as u64;
                chunk = &chunk[take..];
                if in_part == part_size {
                    part_md5s.push(std::mem::take(&mut part).finalize().into());
                    in_part = 0;
                }
            }
        }
        if part_size > 0 && in_part > 0 {
            part_md5s.push(part.finalize().into());
        }
        Ok(Self { size, modified: meta.modified().ok(), md5: whole.finalize().into(), part_md5s, part_size })
    }

    /// Whether the file on disk still looks like the one that was read.
    pub fn unchanged(&self, path: &Path) -> bool {
        std::fs::symlink_metadata(path)
            .is_ok_and(|m| m.is_file() && m.len() == self.size && m.modified().ok() == self.modified)
    }
}

/// How a stored object compares with a local file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Same size and the same checksum.
    SameContent,
    /// Same size; the store cannot tell the content's checksum.
    SameSize,
    Different(String),
}

impl Verdict {
    pub fn is_match(&self) -> bool {
        !matches!(self, Verdict::Different(_))
    }
}

pub fn compare(local: &FileDigest, remote: &ObjectInfo) -> Verdict {
    if remote.size != local.size {
        return Verdict::Different(format!("object has {} bytes, local file {}", remote.size, local.size));
    }
    match remote.md5 {
        Some(md5) if md5 == local.md5 => Verdict::SameContent,
        Some(md5) => Verdict::Different(format!(
            "object MD5 {} differs from local {}",
            hex::encode(md5),
            hex::encode(local.md5)
        )),
        None => Verdict::SameSize,
    }
}

/// Parse 32 hex digits (an ETag or our stored checksum) into an MD5.
pub fn parse_md5(text: &str) -> Option<[u8; 16]> {
    let text = text.trim_matches('"');
    let mut out = [0u8; 16];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_parts_match_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let d = FileDigest::of_file(&path, Some(300_000)).unwrap();
        assert_eq!(d.size, 1_000_000);
        assert_eq!(d.md5, <[u8; 16]>::from(Md5::digest(&data)));
        assert_eq!(d.part_md5s.len(), 4);
        assert_eq!(d.part_md5s[3], <[u8; 16]>::from(Md5::digest(&data[900_000..])));
        assert!(d.unchanged(&path));
        std::fs::write(&path, b"x").unwrap();
        assert!(!d.unchanged(&path));
    }

    #[test]
    fn verdicts() {
        let d = FileDigest { size: 3, modified: None, md5: [1; 16], part_md5s: vec![], part_size: 0 };
        assert_eq!(compare(&d, &ObjectInfo { size: 3, md5: Some([1; 16]) }), Verdict::SameContent);
        assert_eq!(compare(&d, &ObjectInfo { size: 3, md5: None }), Verdict::SameSize);
        assert!(!compare(&d, &ObjectInfo { size: 4, md5: Some([1; 16]) }).is_match());
        assert!(!compare(&d, &ObjectInfo { size: 3, md5: Some([2; 16]) }).is_match());
        assert_eq!(parse_md5("\"d41d8cd98f00b204e9800998ecf8427e\"").map(hex::encode).as_deref(),
                   Some("d41d8cd98f00b204e9800998ecf8427e"));
        assert_eq!(parse_md5("abc-2"), None);
    }
}
