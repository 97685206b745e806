//! Object stores behind one small trait: S3-compatible services, OpenStack
//! Swift, and a local directory with the same layout.
//!
//! A store does five things (head, put, read, list, delete) and says what
//! its answers prove. Whether an object holds the same bytes as a local
//! file is decided behind the trait ([`ObjectStore::compare`],
//! [`ObjectStore::verify_stored`]), by default here, once, for every store
//! ([`compare_existing`], [`verify_read_back`]): by a checksum the store
//! itself computed (a plain MD5 ETag, a multipart ETag recomputed from the
//! part MD5s, the store's check of our Content-MD5 on receipt) or by
//! reading the object back. A store whose objects need another proof (a
//! Swift SLO: its manifest and segments) overrides them. Never by size
//! alone, and never by metadata nobody checked.
//!
//! The trait is synchronous; the S3 store owns the async runtime it needs,
//! the Swift store speaks blocking HTTP.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::bail;
use bytes::Bytes;
use md5::{Digest as _, Md5};
use sha2::Sha256;

use crate::config::Secret;
use local::LocalStore;
use s3::{S3Store, SseCustomerKey};
use swift::{SwiftSettings, SwiftStore};

pub mod live;
pub mod local;
pub mod s3;
pub mod swift;

mod classes;
pub use classes::{ARCHIVE_CLASSES, STORAGE_CLASSES};

/// What kind of failure a store call met. Callers act on the kind: the
/// systematic ones stop a run at once instead of failing every file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No such object (where one was expected).
    NotFound,
    /// The bucket or container does not exist.
    NoBucket,
    /// Credentials refused, access denied.
    Denied,
    /// No credentials were found at all.
    NoCredentials,
    /// The service cannot be reached (connection refused, name not
    /// resolved, connect timeout), after retries.
    Unreachable,
    /// Told to slow down, after retries.
    Throttled,
    /// A server error or a broken connection, after retries.
    Transient,
    /// The store refused our Content-MD5: the bytes it received are not the
    /// ones we hashed.
    BadDigest,
    /// The object's storage class makes it unreadable without a restore.
    Archived,
    /// An object is already there: a conditional PUT was refused.
    Exists,
    /// The store answered, but not in a way we can use.
    Invalid,
    /// Reading or writing a local file (a directory store, the source file).
    Local,
}

impl ErrorKind {
    /// Failures that every further call would meet too.
    pub fn is_systematic(self) -> bool {
        matches!(self, Self::NoBucket | Self::Denied | Self::NoCredentials | Self::Unreachable)
    }
}

/// A store failure, with enough text to act on (never a secret).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    pub kind: ErrorKind,
    pub message: String,
}

impl StoreError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }

    pub fn local(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Local, message)
    }
}

/// What the store computed of an object's content, as its ETag says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Etag {
    /// The MD5 of the content (a single-part upload, no SSE-C or KMS).
    Md5([u8; 16]),
    /// A multipart upload's ETag: the MD5 of the concatenated part MD5s,
    /// and the number of parts.
    Multipart { md5: [u8; 16], parts: u32 },
    /// Nothing we can check content against (SSE-C, KMS, other formats).
    Opaque,
}

/// What a store says about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    pub etag: Etag,
    /// The storage class, where the store reports one.
    pub storage_class: Option<String>,
    /// False when the object cannot be read without a restore first
    /// (GLACIER, DEEP_ARCHIVE, an archive tier of INTELLIGENT_TIERING).
    pub readable: bool,
}

/// How a stored object was proven to hold a local file's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proof {
    /// The object's ETag is the MD5 of its content and equals the file's.
    Etag,
    /// A multipart ETag recomputed from the file's part MD5s; or, for our
    /// own multipart upload, every part's ETag equal to its part's MD5.
    PartEtags,
    /// The store checked the Content-MD5 we sent and accepted the body
    /// (only counted where a deliberately wrong digest was seen refused).
    ContentMd5,
    /// The object was read back and its MD5 equals the file's.
    ReadBack,
}

impl Proof {
    pub const ALL: [Proof; 4] = [Proof::Etag, Proof::PartEtags, Proof::ContentMd5, Proof::ReadBack];

    /// The name used in summaries and `--json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Proof::Etag => "etag",
            Proof::PartEtags => "part_etags",
            Proof::ContentMd5 => "content_md5",
            Proof::ReadBack => "read_back",
        }
    }

    /// For summary lines: "by ETag", ...
    pub fn describe(self) -> &'static str {
        match self {
            Proof::Etag => "the object's MD5 ETag",
            Proof::PartEtags => "its multipart ETag recomputed from the file's parts",
            Proof::ContentMd5 => "the store's check of the Content-MD5 sent",
            Proof::ReadBack => "reading the object back",
        }
    }
}

pub trait ObjectStore: Send + Sync {
    /// For logs: `s3://bucket (endpoint)` or the directory.
    fn describe(&self) -> String;
    /// The object at `key`, or `None` if there is none.
    fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError>;
    /// Store `data` at `key`. Returns how the store's answers prove it now
    /// holds exactly those bytes, or `None` if they prove nothing (the
    /// caller then reads the object back).
    fn put(&self, key: &str, data: &LocalData) -> Result<Option<Proof>, StoreError>;
    /// Store `data` at `key` only if no object is there (a conditional
    /// PUT), which spares the `head` before each upload. `Ok(None)`: this
    /// store cannot make that condition, or not for this file; the caller
    /// asks `head` first. Default: `Ok(None)`.
    fn put_if_absent(&self, _key: &str, _data: &LocalData) -> Result<Option<PutIfAbsent>, StoreError> {
        Ok(None)
    }
    /// Stream the object's content to `sink`; `Ok(false)` if there is none.
    fn read(&self, key: &str, sink: &mut dyn FnMut(&[u8]) -> Result<(), StoreError>) -> Result<bool, StoreError> {
        self.read_range(key, 0, u64::MAX, sink)
    }
    /// Stream `len` bytes of the object from `offset` to `sink` (fewer if
    /// the object is shorter; `u64::MAX`: to its end); `Ok(false)` if there
    /// is none.
    fn read_range(
        &self,
        key: &str,
        offset: u64,
        len: u64,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), StoreError>,
    ) -> Result<bool, StoreError>;
    /// Whether the object at `key` is the local file `file` itself (a
    /// directory store overlapping the media store). Deleting it then would
    /// delete the only copy.
    fn is_same_file(&self, _key: &str, _file: &File) -> bool {
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
    /// Delete every object of `keys` (absent ones are not an error), in as
    /// few requests as the store allows; returns the keys that failed.
    /// Default: one delete each.
    fn delete_many(&self, keys: &[&str]) -> Vec<(String, StoreError)> {
        delete_each(self, keys)
    }
    /// Does the existing object at `key` (as `head` described it in `info`)
    /// hold exactly `data`? Default: [`compare_existing`].
    fn compare(&self, key: &str, info: &ObjectInfo, data: &LocalData) -> Result<Comparison, StoreError> {
        compare_existing(self, key, info, data)
    }
    /// After a `put` whose answers proved nothing: does the object hold
    /// `data`? Default: read it back ([`verify_read_back`]).
    fn verify_stored(&self, key: &str, data: &LocalData) -> Result<Comparison, StoreError> {
        verify_read_back(self, key, data)
    }
}

/// [`ObjectStore::delete_many`] one key at a time. A systematic failure
/// (refused credentials, unreachable store) stops it: every further key
/// would fail the same way, and is reported with it.
pub fn delete_each(store: &(impl ObjectStore + ?Sized), keys: &[&str]) -> Vec<(String, StoreError)> {
    let mut failed = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        if let Err(e) = store.delete(key) {
            let stop = e.kind.is_systematic();
            failed.push(((*key).to_owned(), e.clone()));
            if stop {
                failed.extend(keys[i + 1..].iter().map(|k| ((*k).to_owned(), e.clone())));
                break;
            }
        }
    }
    failed
}

/// What the probe of a conditional PUT found: the second PUT of the same
/// bytes to the same key with `If-None-Match: *` was refused
/// ([`ErrorKind::Exists`]): the store honours the condition. Stored, or
/// failed otherwise: it is not used. Says so in the log.
pub(crate) fn conditional_put_probed(store: &str, second_put: Result<(), StoreError>) -> bool {
    let honoured = match second_put {
        Err(e) if e.kind == ErrorKind::Exists => true,
        Ok(()) => false,
        Err(e) => {
            log::debug!("conditional PUT probe: {e}; not using conditional PUTs");
            false
        }
    };
    log::info!(
        "{store} {} a PUT over an existing object with If-None-Match{}",
        if honoured { "refuses" } else { "does not refuse" },
        if honoured { ": new objects go up without a HEAD first" } else { ": each upload asks HEAD first" }
    );
    honoured
}

/// The HTTP `Range` header for `len` bytes from `offset`: none for the
/// whole object, open-ended for "to its end". (`len` 0 is the caller's.)
pub(crate) fn http_range(offset: u64, len: u64) -> Option<String> {
    match (offset, len) {
        (0, u64::MAX) => None,
        (_, u64::MAX) => Some(format!("bytes={offset}-")),
        _ => Some(format!("bytes={offset}-{}", offset.saturating_add(len) - 1)),
    }
}

/// What a conditional PUT did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutIfAbsent {
    /// Stored, proven as [`ObjectStore::put`] says.
    Stored(Option<Proof>),
    /// An object was there already, and is untouched.
    Exists,
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    /// None when the store did not say: such an object is never taken as old.
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
    /// Set: `bucket` is a Swift container, reached with these settings.
    pub swift: Option<SwiftSettings>,
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
    if let Some(swift) = &settings.swift {
        if settings.endpoint_url.is_some() || settings.sse_key.is_some() {
            bail!("an endpoint URL and an SSE-C key are for S3; {:?} is a Swift container", settings.bucket);
        }
        return Ok(Box::new(SwiftStore::new(swift, &settings.bucket)?));
    }
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

/// Files up to this size are read into memory once: hashed and uploaded
/// from the same buffer.
pub const IN_MEMORY_LIMIT: u64 = 1024 * 1024;

/// Objects up to this size are copied between stores through memory (one
/// read of the source); larger ones are read twice by range (to hash, then
/// to send), never held whole. S3's single-PUT limit here.
pub const COPY_IN_MEMORY_LIMIT: u64 = 8 * 1024 * 1024;

/// A local file's bytes, as a store reads them: a buffer (small files) or
/// the open file itself, read by offset (so parts can go up concurrently
/// and a retry can start again), never by path.
#[derive(Debug, Clone)]
pub enum Content {
    Bytes(Bytes),
    File(Arc<File>),
    /// An object of another store, read by range as it is sent (a copy
    /// between stores: no temporary file, no whole object in memory).
    Source(Arc<SourceObject>),
}

/// An object of another store as the content of a put: read by range,
/// through a small window for the readers that go a few KiB at a time.
pub struct SourceObject {
    pub store: Arc<dyn ObjectStore>,
    pub key: String,
    pub size: u64,
    window: std::sync::Mutex<(u64, Bytes)>,
}

/// How much of a source object one ranged read fetches for `read_at`.
const SOURCE_WINDOW: u64 = 1024 * 1024;

impl fmt::Debug for SourceObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in {} ({} bytes)", self.key, self.store.describe(), self.size)
    }
}

impl SourceObject {
    pub fn new(store: Arc<dyn ObjectStore>, key: String, size: u64) -> Self {
        Self { store, key, size, window: std::sync::Mutex::new((0, Bytes::new())) }
    }

    /// Feed exactly `len` bytes from `offset` to `each`: an object that is
    /// shorter now, or gone, is an error (it changed while being copied).
    pub fn for_each_chunk(
        &self,
        offset: u64,
        len: u64,
        each: &mut dyn FnMut(&[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if len == 0 {
            return Ok(());
        }
        let mut got = 0u64;
        let found = self.store.read_range(&self.key, offset, len, &mut |chunk| {
            got += chunk.len() as u64;
            each(chunk)
        })?;
        if !found {
            return Err(StoreError::new(
                ErrorKind::NotFound,
                format!("{}: the source object vanished while being copied", self.key),
            ));
        }
        if got != len {
            return Err(StoreError::new(
                ErrorKind::Invalid,
                format!(
                    "{}: the source object changed while being copied ({got} bytes where {len} were expected)",
                    self.key
                ),
            ));
        }
        Ok(())
    }

    /// `len` bytes from `offset`, in memory (one part of an upload).
    pub fn read_vec(&self, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::with_capacity(len as usize);
        self.for_each_chunk(offset, len, &mut |chunk| {
            out.extend_from_slice(chunk);
            Ok(())
        })?;
        Ok(out)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        if offset >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let (start, bytes) = &*window;
        if offset < *start || offset >= start + bytes.len() as u64 {
            let len = SOURCE_WINDOW.min(self.size - offset);
            let data = self.read_vec(offset, len).map_err(std::io::Error::other)?;
            *window = (offset, Bytes::from(data));
        }
        let (start, bytes) = &*window;
        let from = (offset - start) as usize;
        let n = buf.len().min(bytes.len() - from);
        buf[..n].copy_from_slice(&bytes[from..from + n]);
        Ok(n)
    }
}

impl Content {
    /// Read up to `buf.len()` bytes at `offset`.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        match self {
            Content::Bytes(b) => {
                let start = (offset as usize).min(b.len());
                let n = buf.len().min(b.len() - start);
                buf[..n].copy_from_slice(&b[start..start + n]);
                Ok(n)
            }
            Content::File(f) => f.read_at(buf, offset),
            Content::Source(s) => s.read_at(buf, offset),
        }
    }

    /// Feed `len` bytes from `offset` to `each`, in chunks.
    pub fn for_each_chunk(
        &self,
        offset: u64,
        len: u64,
        mut each: impl FnMut(&[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if let Content::Bytes(b) = self {
            let end = offset.saturating_add(len);
            if end > b.len() as u64 {
                return Err(StoreError::local("the file got shorter while being read"));
            }
            return each(&b[offset as usize..end as usize]);
        }
        if let Content::Source(s) = self {
            return s.for_each_chunk(offset, len, &mut each);
        }
        let mut buf = vec![0u8; 256 * 1024];
        let (mut at, end) = (offset, offset + len);
        while at < end {
            let want = ((end - at) as usize).min(buf.len());
            let n = self.read_at(&mut buf[..want], at).map_err(|e| StoreError::local(format!("reading: {e}")))?;
            if n == 0 {
                return Err(StoreError::local("the file got shorter while being read"));
            }
            each(&buf[..n])?;
            at += n as u64;
        }
        Ok(())
    }
}

/// A local file ready to go to a store: its content and checksums.
#[derive(Debug, Clone)]
pub struct LocalData {
    pub content: Content,
    pub digest: FileDigest,
}

impl LocalData {
    /// Read an open file: into memory if small (one read serves hash and
    /// upload), else hashed by offset, whole and per part of `part_size`.
    pub fn of_file(file: File, size: u64, part_size: Option<u64>) -> Result<Self, StoreError> {
        let content = if size <= IN_MEMORY_LIMIT {
            let mut buf = Vec::with_capacity(size as usize);
            (&file).take(IN_MEMORY_LIMIT + 1).read_to_end(&mut buf).map_err(|e| StoreError::local(e.to_string()))?;
            Content::Bytes(Bytes::from(buf))
        } else {
            Content::File(Arc::new(file))
        };
        let digest = FileDigest::of(&content, size, part_size)?;
        Ok(Self { content, digest })
    }

    /// Bytes in memory (the integration tests' direct store calls).
    pub fn from_bytes(data: Vec<u8>, part_size: Option<u64>) -> Self {
        let size = data.len() as u64;
        let content = Content::Bytes(Bytes::from(data));
        let digest = FileDigest::of(&content, size, part_size).expect("memory reads do not fail");
        Self { content, digest }
    }

    /// An object of another store: in memory if small (one GET serves hash
    /// and upload), else hashed in one ranged read and read again, part by
    /// part, as it is sent.
    pub fn of_object(source: SourceObject, part_size: Option<u64>) -> Result<Self, StoreError> {
        let size = source.size;
        let content = if size <= COPY_IN_MEMORY_LIMIT {
            Content::Bytes(Bytes::from(source.read_vec(0, size)?))
        } else {
            Content::Source(Arc::new(source))
        };
        let digest = FileDigest::of(&content, size, part_size)?;
        Ok(Self { content, digest })
    }

    /// The SHA-256 of the content (what Synapse records as `sha256`).
    pub fn sha256(&self) -> Result<[u8; 32], StoreError> {
        let mut hash = Sha256::new();
        self.content.for_each_chunk(0, self.digest.size, |chunk| {
            hash.update(chunk);
            Ok(())
        })?;
        Ok(hash.finalize().into())
    }
}

/// Size and checksums of a local file, read in one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    pub size: u64,
    pub md5: [u8; 16],
    /// MD5 of each part, when the file is uploaded in parts.
    pub part_md5s: Vec<[u8; 16]>,
    pub part_size: u64,
}

impl FileDigest {
    /// One streaming pass over `size` bytes of `content`: the whole-file
    /// MD5 and (with `part_size`) each part's MD5. A file that is shorter
    /// or longer than `size` (being written) is an error.
    pub fn of(content: &Content, size: u64, part_size: Option<u64>) -> Result<Self, StoreError> {
        let part_size = part_size.unwrap_or(0);
        let mut whole = Md5::new();
        let mut part = Md5::new();
        let mut in_part = 0u64;
        let mut part_md5s = Vec::new();
        content.for_each_chunk(0, size, |mut chunk| {
            whole.update(chunk);
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
            Ok(())
        })?;
        if part_size > 0 && in_part > 0 {
            part_md5s.push(part.finalize().into());
        }
        let mut probe = [0u8; 1];
        if content.read_at(&mut probe, size).map_err(|e| StoreError::local(e.to_string()))? != 0 {
            return Err(StoreError::local("the file grew while being read"));
        }
        Ok(Self { size, md5: whole.finalize().into(), part_md5s, part_size })
    }

    /// The ETag S3 gives a multipart upload of these parts.
    pub fn multipart_etag(part_md5s: &[[u8; 16]]) -> [u8; 16] {
        let mut all = Md5::new();
        for p in part_md5s {
            all.update(p);
        }
        all.finalize().into()
    }
}

/// Part sizes an uploader may have used to make `parts` parts of `size`
/// bytes: boto3's and the AWS CLI's 8 MiB first (what s3_media_upload and
/// most tools use), then whole MiB sizes that give that many parts.
fn candidate_part_sizes(size: u64, parts: u32) -> Vec<u64> {
    const MIB: u64 = 1024 * 1024;
    let parts = u64::from(parts.max(1));
    let fits = |p: u64| p > 0 && size.div_ceil(p) == parts;
    let mut out: Vec<u64> =
        [8 * MIB, 5 * MIB, 16 * MIB, 15 * MIB, 64 * MIB, 100 * MIB].into_iter().filter(|p| fits(*p)).collect();
    if parts > 1 {
        // ceil(size/p) == parts  <=>  size/parts <= p < size/(parts-1)
        let low = size.div_ceil(parts).next_multiple_of(MIB);
        let high = size.div_ceil(parts - 1);
        out.extend((0..3).map(|i| low + i * MIB).filter(|p| *p < high && fits(*p)));
    }
    let mut seen = Vec::with_capacity(out.len());
    out.retain(|p| {
        !seen.contains(p) && {
            seen.push(*p);
            true
        }
    });
    out.truncate(8);
    out
}

/// How an object compares with a local file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Comparison {
    /// The same bytes, and how that was proven.
    Same(Proof),
    /// Different bytes: sizes, and MD5s where known.
    Different(Difference),
}

/// Two copies that are not the same, as a message can show them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub object_size: u64,
    pub object_md5: Option<[u8; 16]>,
    pub local_size: u64,
    pub local_md5: [u8; 16],
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let object_md5 = self.object_md5.map_or_else(|| "unknown".to_owned(), hex::encode);
        write!(
            f,
            "object {} bytes, MD5 {object_md5}; local file {} bytes, MD5 {}",
            self.object_size,
            self.local_size,
            hex::encode(self.local_md5)
        )
    }
}

/// What a read-back of an object found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBack {
    pub size: u64,
    pub md5: [u8; 16],
    /// Only when asked for (what Synapse records as `sha256`).
    pub sha256: Option<[u8; 32]>,
}

/// Read the object back, hashing it (MD5, and SHA-256 if asked). `None` if it is gone.
pub fn read_back(
    store: &(impl ObjectStore + ?Sized),
    key: &str,
    with_sha256: bool,
) -> Result<Option<ReadBack>, StoreError> {
    let (mut md5, mut sha, mut size) = (Md5::new(), with_sha256.then(Sha256::new), 0u64);
    let found = store.read(key, &mut |chunk| {
        md5.update(chunk);
        if let Some(sha) = sha.as_mut() {
            sha.update(chunk);
        }
        size += chunk.len() as u64;
        Ok(())
    })?;
    Ok(found.then(|| ReadBack { size, md5: md5.finalize().into(), sha256: sha.map(|s| s.finalize().into()) }))
}

/// Does the existing object (as `info` describes it) hold exactly `data`?
/// Decided by its ETag where that is a checksum of the content, else by
/// recomputing a multipart ETag from the file, else by reading it back.
pub fn compare_existing(
    store: &(impl ObjectStore + ?Sized),
    key: &str,
    info: &ObjectInfo,
    data: &LocalData,
) -> Result<Comparison, StoreError> {
    let d = &data.digest;
    let different = |object_md5| {
        Comparison::Different(Difference { object_size: info.size, object_md5, local_size: d.size, local_md5: d.md5 })
    };
    if info.size != d.size {
        return Ok(different(match info.etag {
            Etag::Md5(m) => Some(m),
            _ => None,
        }));
    }
    match info.etag {
        Etag::Md5(m) if m == d.md5 => return Ok(Comparison::Same(Proof::Etag)),
        Etag::Md5(m) => return Ok(different(Some(m))),
        Etag::Multipart { md5, parts } => {
            for part_size in candidate_part_sizes(d.size, parts) {
                let part_md5s = if part_size == d.part_size {
                    d.part_md5s.clone()
                } else {
                    FileDigest::of(&data.content, d.size, Some(part_size))?.part_md5s
                };
                if part_md5s.len() == parts as usize && FileDigest::multipart_etag(&part_md5s) == md5 {
                    return Ok(Comparison::Same(Proof::PartEtags));
                }
            }
            log::debug!("{key}: no part size recomputes its multipart ETag; reading it back");
        }
        Etag::Opaque => {}
    }
    if !info.readable {
        return Err(StoreError::new(ErrorKind::Archived, format!("{key}: cannot be read back without a restore")));
    }
    verify_read_back(store, key, data)
}

/// Read the object back and compare it with `data`.
pub fn verify_read_back(
    store: &(impl ObjectStore + ?Sized),
    key: &str,
    data: &LocalData,
) -> Result<Comparison, StoreError> {
    let d = &data.digest;
    match read_back(store, key, false)? {
        None => Err(StoreError::new(ErrorKind::NotFound, format!("{key}: the object vanished while being checked"))),
        Some(r) if r.size == d.size && r.md5 == d.md5 => Ok(Comparison::Same(Proof::ReadBack)),
        Some(r) => Ok(Comparison::Different(Difference {
            object_size: r.size,
            object_md5: Some(r.md5),
            local_size: d.size,
            local_md5: d.md5,
        })),
    }
}

/// Parse 32 hex digits (an ETag or a stored checksum) into an MD5.
pub fn parse_md5(text: &str) -> Option<[u8; 16]> {
    let text = text.trim_matches('"');
    let mut out = [0u8; 16];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// Parse an ETag: `"<32 hex>"` or `"<32 hex>-<parts>"`; anything else is
/// opaque.
pub fn parse_etag(text: &str) -> Etag {
    let text = text.trim_matches('"');
    match text.split_once('-') {
        None => parse_md5(text).map_or(Etag::Opaque, Etag::Md5),
        Some((hex, parts)) => match (parse_md5(hex), parts.parse::<u32>()) {
            (Some(md5), Ok(parts)) if parts > 0 => Etag::Multipart { md5, parts },
            _ => Etag::Opaque,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(bytes: &[u8], part_size: Option<u64>) -> LocalData {
        LocalData::from_bytes(bytes.to_vec(), part_size)
    }

    #[test]
    fn digest_parts_match_whole_for_memory_and_file_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let from_file = LocalData::of_file(File::open(&path).unwrap(), bytes.len() as u64, Some(1_000_000)).unwrap();
        assert!(matches!(from_file.content, Content::File(_)), "over the in-memory limit");
        let d = &from_file.digest;
        assert_eq!(d.size, 3_000_000);
        assert_eq!(d.md5, <[u8; 16]>::from(Md5::digest(&bytes)));
        assert_eq!(d.part_md5s.len(), 3);
        assert_eq!(d.part_md5s[2], <[u8; 16]>::from(Md5::digest(&bytes[2_000_000..])));
        assert_eq!(data(&bytes, Some(1_000_000)).digest, *d);
        let small = LocalData::of_file(File::open(&path).unwrap(), 3_000_001, None);
        assert!(small.is_err(), "a file shorter than its size is refused");
    }

    #[test]
    fn etags_parse_into_what_they_prove() {
        let md5 = "d41d8cd98f00b204e9800998ecf8427e";
        assert!(matches!(parse_etag(&format!("\"{md5}\"")), Etag::Md5(_)));
        assert!(matches!(parse_etag(&format!("\"{md5}-3\"")), Etag::Multipart { parts: 3, .. }));
        for opaque in ["", "\"abc\"", &format!("{md5}-x"), &format!("{md5}-0"), "W/\"zz\""] {
            assert_eq!(parse_etag(opaque), Etag::Opaque, "{opaque}");
        }
    }

    #[test]
    fn part_size_candidates_give_the_part_count() {
        const MIB: u64 = 1024 * 1024;
        let size = 50 * MIB + 17;
        for parts in [1, 3, 7, 11] {
            let cands = candidate_part_sizes(size, parts);
            assert!(cands.iter().all(|p| size.div_ceil(*p) == u64::from(parts)), "{parts}: {cands:?}");
        }
        assert_eq!(candidate_part_sizes(size, 7)[0], 8 * MIB, "boto3's size first");
        assert!(!candidate_part_sizes(size, 11).is_empty());
        // 15 MiB is both a fixed candidate and a whole-MiB one here: tried once.
        let cands = candidate_part_sizes(48 * MIB + 1, 4);
        let mut unique = cands.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), cands.len(), "{cands:?}");
    }

    #[test]
    fn content_shorter_than_asked_is_an_error_not_a_short_read() {
        let content = Content::Bytes(Bytes::from_static(b"0123456789"));
        let mut seen = Vec::new();
        content
            .for_each_chunk(2, 5, |c| {
                seen.extend_from_slice(c);
                Ok(())
            })
            .unwrap();
        assert_eq!(seen, b"23456");
        assert!(content.for_each_chunk(8, 5, |_| Ok(())).is_err());
        assert!(FileDigest::of(&content, 11, None).is_err());
    }

    struct Fixed(Vec<u8>);

    impl ObjectStore for Fixed {
        fn describe(&self) -> String {
            "fixed".into()
        }
        fn head(&self, _: &str) -> Result<Option<ObjectInfo>, StoreError> {
            unimplemented!()
        }
        fn put(&self, _: &str, _: &LocalData) -> Result<Option<Proof>, StoreError> {
            unimplemented!()
        }
        fn read_range(
            &self,
            _: &str,
            _: u64,
            _: u64,
            sink: &mut dyn FnMut(&[u8]) -> Result<(), StoreError>,
        ) -> Result<bool, StoreError> {
            sink(&self.0).map(|()| true)
        }
        fn list(&self, _: &str, _: &mut dyn FnMut(Listed) -> Result<(), StoreError>) -> Result<(), StoreError> {
            Ok(())
        }
        fn delete(&self, _: &str) -> Result<(), StoreError> {
            Ok(())
        }
    }

    #[test]
    fn comparison_uses_etag_then_parts_then_read_back() {
        const MIB: usize = 1024 * 1024;
        let bytes: Vec<u8> = (0..20 * MIB).map(|i| (i % 253) as u8).collect();
        let local = data(&bytes, Some(16 * MIB as u64));
        let store = Fixed(bytes.clone());
        let info = |etag| ObjectInfo { size: bytes.len() as u64, etag, storage_class: None, readable: true };
        let same = compare_existing(&store, "k", &info(Etag::Md5(local.digest.md5)), &local).unwrap();
        assert_eq!(same, Comparison::Same(Proof::Etag));
        // Uploaded by boto3 in 8 MiB parts: recomputed although we use 16 MiB parts.
        let boto = FileDigest::of(&local.content, local.digest.size, Some(8 * MIB as u64)).unwrap();
        let etag = Etag::Multipart { md5: FileDigest::multipart_etag(&boto.part_md5s), parts: 3 };
        assert_eq!(compare_existing(&store, "k", &info(etag), &local).unwrap(), Comparison::Same(Proof::PartEtags));
        // Same size, different content under an opaque ETag: read back, different.
        let mut other = bytes.clone();
        other[5] ^= 1;
        let other_store = Fixed(other);
        assert!(matches!(
            compare_existing(&other_store, "k", &info(Etag::Opaque), &local).unwrap(),
            Comparison::Different(Difference { object_md5: Some(_), .. })
        ));
        assert_eq!(
            compare_existing(&store, "k", &info(Etag::Opaque), &local).unwrap(),
            Comparison::Same(Proof::ReadBack)
        );
        // An unknown multipart ETag falls back to reading back.
        let etag = Etag::Multipart { md5: [7; 16], parts: 3 };
        assert_eq!(compare_existing(&store, "k", &info(etag), &local).unwrap(), Comparison::Same(Proof::ReadBack));
        // A different size is different at once.
        let short = ObjectInfo { size: 5, etag: Etag::Opaque, storage_class: None, readable: true };
        assert!(matches!(compare_existing(&store, "k", &short, &local).unwrap(), Comparison::Different(_)));
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
}
