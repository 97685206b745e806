//! Object stores behind one small trait: S3-compatible services and a
//! local directory with the same layout.
//!
//! The trait is synchronous; the S3 store owns the async runtime it needs.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::SystemTime;

use anyhow::bail;
use md5::{Digest as _, Md5};

use crate::config::Secret;
use local::LocalStore;
use s3::{S3Store, SseCustomerKey};

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
    /// Call `each` for every object whose key starts with `prefix`, page by
    /// page (memory stays flat however many objects there are).
    fn list(&self, prefix: &str, each: &mut dyn FnMut(Listed) -> Result<(), StoreError>) -> Result<(), StoreError>;
    /// Delete the object at `key`; an absent object is not an error.
    fn delete(&self, key: &str) -> Result<(), StoreError>;
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    pub modified: Option<SystemTime>,
}

/// S3 access keys given explicitly (otherwise the AWS SDK's default
/// credential chain applies: environment, profile, instance role).
#[derive(Debug, Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

/// What it takes to open a store.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// A bucket name, or a directory (`/...`, `./...`, `file:///...`).
    pub bucket: String,
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    pub storage_class: String,
    pub prefix: String,
    /// The raw SSE-C key, as s3_media_upload takes it.
    pub sse_key: Option<Secret>,
    pub sse_algorithm: String,
    pub credentials: Option<Credentials>,
}

/// Where a BUCKET setting points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target<'a> {
    Directory(&'a Path),
    Bucket(&'a str),
}

/// A directory is spelled unmistakably (`/...`, `./...`, `../...`,
/// `file:///...`); anything else with a `/` or a scheme is a mistake that
/// must not silently become a folder on the local disk.
pub fn parse_target(bucket: &str) -> anyhow::Result<Target<'_>> {
    const HINT: &str = "a local directory store starts with /, ./, ../ or file://";
    if let Some(path) = bucket.strip_prefix("file://") {
        if !path.starts_with('/') {
            bail!("BUCKET {bucket:?}: a file:// store needs an absolute path, e.g. file:///srv/media-archive");
        }
        return Ok(Target::Directory(Path::new(path)));
    }
    if bucket.starts_with('/') || bucket.starts_with("./") || bucket.starts_with("../") {
        return Ok(Target::Directory(Path::new(bucket)));
    }
    if bucket.contains("://") {
        bail!("BUCKET {bucket:?}: give the bucket name alone, and the service with --endpoint-url ({HINT})");
    }
    if bucket.contains('/') {
        bail!("BUCKET {bucket:?} contains '/': give the bucket name alone and the rest with --prefix ({HINT})");
    }
    if bucket.is_empty() {
        bail!("BUCKET is empty");
    }
    Ok(Target::Bucket(bucket))
}

/// Open the store the settings name; `media_store` is the local media
/// store, which a directory store must not be.
pub fn open(settings: &StoreSettings, media_store: &Path) -> anyhow::Result<Box<dyn ObjectStore>> {
    if let Target::Directory(dir) = parse_target(&settings.bucket)? {
        if settings.endpoint_url.is_some() {
            bail!("an endpoint URL is for S3; {:?} is a local directory store", settings.bucket);
        }
        let same = |a: &Path, b: &Path| matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b);
        if same(dir, media_store) {
            bail!("the store directory {} is the media store itself", dir.display());
        }
        return Ok(Box::new(LocalStore::open(dir)?));
    }
    let algorithm = if settings.sse_algorithm.is_empty() { "AES256" } else { &settings.sse_algorithm };
    let sse = match &settings.sse_key {
        Some(raw) => {
            if algorithm == "AES256" && raw.0.len() != 32 {
                bail!(
                    "the SSE-C key must be 32 bytes for AES256, this one has {} (the key itself is not shown)",
                    raw.0.len()
                );
            }
            Some(SseCustomerKey::new(raw.0.as_bytes(), algorithm))
        }
        None => None,
    };
    Ok(Box::new(S3Store::new(settings, sse)?))
}

/// Warn when a file holding a secret can be read by others.
pub fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if std::fs::metadata(path).is_ok_and(|meta| meta.permissions().mode() & 0o077 != 0) {
        log::warn!("{} holds a secret but is readable by others; chmod 600 it", path.display());
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
        Some(md5) => {
            Verdict::Different(format!("object MD5 {} differs from local {}", hex::encode(md5), hex::encode(local.md5)))
        }
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
    fn bucket_arguments() {
        assert_eq!(parse_target("my-bucket").unwrap(), Target::Bucket("my-bucket"));
        assert_eq!(parse_target("/srv/a").unwrap(), Target::Directory(Path::new("/srv/a")));
        assert_eq!(parse_target("./a").unwrap(), Target::Directory(Path::new("./a")));
        assert_eq!(parse_target("file:///srv/a").unwrap(), Target::Directory(Path::new("/srv/a")));
        for bad in ["s3://my-bucket", "my-bucket/media", "file://relative", "https://x/y", ""] {
            assert!(parse_target(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn verdicts() {
        let d = FileDigest { size: 3, modified: None, md5: [1; 16], part_md5s: vec![], part_size: 0 };
        assert_eq!(compare(&d, &ObjectInfo { size: 3, md5: Some([1; 16]) }), Verdict::SameContent);
        assert_eq!(compare(&d, &ObjectInfo { size: 3, md5: None }), Verdict::SameSize);
        assert!(!compare(&d, &ObjectInfo { size: 4, md5: Some([1; 16]) }).is_match());
        assert!(!compare(&d, &ObjectInfo { size: 3, md5: Some([2; 16]) }).is_match());
        assert_eq!(
            parse_md5("\"d41d8cd98f00b204e9800998ecf8427e\"").map(hex::encode).as_deref(),
            Some("d41d8cd98f00b204e9800998ecf8427e")
        );
        assert_eq!(parse_md5("abc-2"), None);
    }
}
