//! S3-compatible object storage through the official AWS SDK.
//!
//! The SDK is async; this store owns a small tokio runtime and exposes the
//! synchronous [`ObjectStore`] trait, so the rest of the program stays
//! plain threads. Worker threads call `block_on` concurrently, which the
//! multi-threaded runtime supports.
//!
//! What the answers prove: a single-part upload's ETag is the MD5 of the
//! bytes the server stored, and a multipart upload's parts' ETags are
//! their parts' MD5s, as long as neither SSE-C nor KMS is in play. Where
//! they are not, the store proves content only if it checks Content-MD5,
//! which it is asked once per run (a deliberately wrong digest must be
//! refused); otherwise the caller reads the object back.

use std::fs::File;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, SdkBody};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption, StorageClass};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use md5::{Digest as _, Md5};

use super::{
    ARCHIVE_CLASSES, Content, ErrorKind, Etag, FileDigest, Listed, LocalData, ObjectInfo, ObjectStore, Proof,
    PutIfAbsent, StoreError, StoreSettings, parse_etag, parse_md5,
};

/// Files larger than this go up in parts (boto3's default threshold).
pub const MULTIPART_THRESHOLD: u64 = 8 * 1024 * 1024;
/// S3 allows at most 10,000 parts.
const MAX_PARTS: u64 = 10_000;
/// Parts of one file in flight at once.
const PART_CONCURRENCY: usize = 4;
/// User metadata key holding the content MD5 (`x-amz-meta-md5`), written
/// for people and other tools; never taken as proof of anything.
pub const MD5_METADATA: &str = "md5";
/// Keys per DeleteObjects request (S3's maximum).
const DELETE_BATCH: usize = 1000;
/// Bytes read from a file per body chunk.
const CHUNK: usize = 256 * 1024;

/// A customer-provided encryption key (SSE-C). `Debug` never shows it.
#[derive(Clone)]
pub struct SseCustomerKey {
    pub algorithm: String,
    key_b64: String,
    key_md5_b64: String,
}

impl SseCustomerKey {
    /// The raw key as given to boto3 (which base64-encodes it itself).
    pub fn new(raw_key: &[u8], algorithm: &str) -> Self {
        Self {
            algorithm: algorithm.to_owned(),
            key_b64: B64.encode(raw_key),
            key_md5_b64: B64.encode(Md5::digest(raw_key)),
        }
    }
}

impl std::fmt::Debug for SseCustomerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SseCustomerKey({}, <redacted>)", self.algorithm)
    }
}

/// Sets the three SSE-C headers on any request builder that has them.
macro_rules! with_sse {
    ($builder:expr, $sse:expr) => {
        $builder
            .set_sse_customer_algorithm($sse.map(|s| s.algorithm.clone()))
            .set_sse_customer_key($sse.map(|s| s.key_b64.clone()))
            .set_sse_customer_key_md5($sse.map(|s| s.key_md5_b64.clone()))
    };
}

pub struct S3Store {
    runtime: tokio::runtime::Runtime,
    client: Client,
    settings: StoreSettings,
    sse: Option<SseCustomerKey>,
    /// Whether the endpoint refuses a body whose Content-MD5 is wrong:
    /// found out once, the first time an upload's answer proves nothing.
    checks_content_md5: OnceLock<bool>,
    /// Whether the endpoint refuses a PUT with `If-None-Match: *` over an
    /// existing object: found out once, at the first upload.
    refuses_overwrite: OnceLock<bool>,
}

impl S3Store {
    /// GET the object (or a `bytes=` range of it), streaming it to `sink`.
    fn get(
        &self,
        key: &str,
        range: Option<String>,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), StoreError>,
    ) -> Result<bool, StoreError> {
        let sse = self.sse.as_ref();
        self.runtime.block_on(async {
            let request =
                with_sse!(self.client.get_object().bucket(&self.settings.bucket).key(key).set_range(range), sse);

            let mut out = match request.send().await {
                Ok(out) => out,
                Err(SdkError::ServiceError(e)) if e.err().is_no_such_key() => return Ok(false),
                Err(e) => return Err(sdk_error("GET", key, e)),
            };
            while let Some(chunk) = out
                .body
                .try_next()
                .await
                .map_err(|e| StoreError::new(ErrorKind::Transient, format!("GET {key}: {e}")))?
            {
                sink(&chunk)?;
            }
            Ok(true)
        })
    }

    pub fn new(settings: &StoreSettings, sse: Option<SseCustomerKey>) -> anyhow::Result<Self> {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("s3-io").enable_all().build()?;
        let region = match &settings.region {
            Some(r) => RegionProviderChain::first_try(Region::new(r.clone())),
            None => RegionProviderChain::default_provider().or_else(Region::new("us-east-1")),
        };
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(c) = &settings.credentials {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                c.access_key_id.clone(),
                c.secret_access_key.0.clone(),
                c.session_token.as_ref().map(|t| t.0.clone()),
                None,
                "media-offload settings",
            ));
        }
        let shared = runtime.block_on(
            loader
                .region(region)
                .retry_config(
                    RetryConfig::standard().with_max_attempts(8).with_initial_backoff(Duration::from_millis(200)),
                )
                .timeout_config(
                    TimeoutConfig::builder()
                        .connect_timeout(Duration::from_secs(10))
                        .read_timeout(Duration::from_secs(120))
                        .build(),
                )
                .load(),
        );
        let mut config = aws_sdk_s3::config::Builder::from(&shared)
            // The SDK's newer default request checksums are rejected by
            // MinIO, Backblaze B2, Ceph and others: only send them where an
            // operation requires one. We send Content-MD5 ourselves.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(url) = &settings.endpoint_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                anyhow::bail!("endpoint URL {url:?} has no scheme: add http:// or https://");
            }
            config = config.endpoint_url(url).force_path_style(true);
        }
        config = config.interceptor(LogRetries);
        let mut store = Self {
            runtime,
            client: Client::from_conf(config.build()),
            settings: settings.clone(),
            sse,
            checks_content_md5: OnceLock::new(),
            refuses_overwrite: OnceLock::new(),
        };
        store.preflight()?;
        Ok(store)
    }

    /// One `HeadBucket` before any file: follow a redirect to the bucket's
    /// region (as boto3 does), and stop with one clear error when the bucket
    /// or the service cannot be reached, rather than one error per file.
    fn preflight(&mut self) -> anyhow::Result<()> {
        let bucket = self.settings.bucket.clone();
        // Few retries here: a closed or mistyped endpoint fails in seconds.
        let quick = aws_sdk_s3::config::Builder::default().retry_config(
            RetryConfig::standard().with_max_attempts(3).with_initial_backoff(Duration::from_millis(200)),
        );
        let result =
            self.runtime.block_on(self.client.head_bucket().bucket(&bucket).customize().config_override(quick).send());
        let Err(err) = result else { return Ok(()) };
        let status = err.raw_response().map(|r| r.status().as_u16());
        let region = err.raw_response().and_then(|r| r.headers().get("x-amz-bucket-region")).map(str::to_owned);
        let current = self.client.config().region().map(|r| r.to_string());
        match (status, region) {
            (Some(301 | 307 | 400), Some(region)) if Some(&region) != current.as_ref() => {
                log::info!("bucket {bucket} is in region {region}; using it");
                let config = self.client.config().to_builder().region(Region::new(region)).build();
                self.client = Client::from_conf(config);
                Ok(())
            }
            (Some(404), _) => anyhow::bail!("bucket {bucket:?} does not exist at {}", self.describe()),
            (Some(403), _) => {
                // Some policies allow object calls but not HeadBucket (or
                // the credentials are wrong: the first object call says so
                // and stops the run).
                log::warn!("HeadBucket on {bucket} was refused (403); going on with the object calls");
                Ok(())
            }
            _ => {
                let e = sdk_error("HeadBucket", &bucket, err);
                match e.kind {
                    ErrorKind::NoCredentials | ErrorKind::Denied => anyhow::bail!("{}: {e}", self.describe()),
                    _ => anyhow::bail!("could not reach {}: {e}", self.describe()),
                }
            }
        }
    }

    fn storage_class(&self) -> StorageClass {
        StorageClass::from(self.settings.storage_class.as_str())
    }

    /// Whether an ETag from this store is a checksum of the (part's)
    /// content: only without SSE-C, and with no server-side encryption or
    /// SSE-S3.
    fn etag_is_md5(&self, sse: Option<&ServerSideEncryption>, sse_c: bool) -> bool {
        self.sse.is_none() && !sse_c && matches!(sse, None | Some(ServerSideEncryption::Aes256))
    }

    /// Whether the endpoint checks Content-MD5: PUT a small object with a
    /// deliberately wrong digest. Refused with BadDigest: it checks.
    /// Stored: it does not (the probe is deleted again).
    fn content_md5_checked(&self) -> bool {
        *self.checks_content_md5.get_or_init(|| {
            let key = format!(
                "{}media-offload-content-md5-probe-{}-{}",
                self.settings.prefix,
                std::process::id(),
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
            );
            let sse = self.sse.as_ref();
            let request = with_sse!(
                self.client
                    .put_object()
                    .bucket(&self.settings.bucket)
                    .key(&key)
                    .body(ByteStream::from_static(b"media-offload probe"))
                    .content_md5(B64.encode(Md5::digest(b"something else"))),
                sse
            );
            let checks = match self.runtime.block_on(request.send()) {
                Err(e) if classify(&e) == ErrorKind::BadDigest => true,
                Ok(_) => {
                    if let Err(e) = self.delete(&key) {
                        log::warn!("could not delete the probe object {key}: {e}");
                    }
                    false
                }
                Err(e) => {
                    log::debug!("Content-MD5 probe failed ({}); assuming it is not checked", describe_sdk_error(&e));
                    false
                }
            };
            log::info!(
                "{} {} Content-MD5 on upload{}",
                self.describe(),
                if checks { "checks" } else { "does not check" },
                if checks { "" } else { ": uploads whose ETag proves nothing are read back" }
            );
            checks
        })
    }

    /// Whether the endpoint honours `If-None-Match: *` on PUT, if known:
    /// found out by [`Self::probe_conditional_put`] after the run's first
    /// upload; until then, uploads ask HEAD first.
    fn conditional_put_honoured(&self) -> bool {
        self.refuses_overwrite.get().copied().unwrap_or(false)
    }

    /// After the run's first single-part upload: PUT the same bytes to the
    /// same key again, with `If-None-Match: *`. Refused (412): the store
    /// honours the condition. Stored: it ignores it (and holds the same
    /// bytes as before); either way no other object is touched and no
    /// probe object is left behind.
    fn probe_conditional_put(&self, key: &str, data: &LocalData) {
        self.refuses_overwrite.get_or_init(|| {
            let outcome = self.runtime.block_on(self.put_single(key, data, true)).map(|_| ());
            super::conditional_put_probed(&self.describe(), outcome)
        });
    }

    /// `put`, with `if_absent` a conditional one (single part only).
    fn put_proven(&self, key: &str, data: &LocalData, if_absent: bool) -> Result<Option<Proof>, StoreError> {
        if data.digest.part_md5s.is_empty() {
            let (etag_md5, etag_proves) = self.runtime.block_on(self.put_single(key, data, if_absent))?;
            match etag_md5 {
                Some(md5) if md5 == data.digest.md5 => return Ok(Some(Proof::Etag)),
                Some(md5) => {
                    return Err(StoreError::new(
                        ErrorKind::BadDigest,
                        format!(
                            "PUT {key}: the store's ETag {} is not the MD5 {} of the bytes sent (did the file change?)",
                            hex::encode(md5),
                            hex::encode(data.digest.md5)
                        ),
                    ));
                }
                None if etag_proves => log::debug!("PUT {key}: no usable ETag in the answer"),
                None => {}
            }
        } else if self.runtime.block_on(self.put_multipart(key, data))? {
            return Ok(Some(Proof::PartEtags));
        }
        // The answers prove nothing (SSE-C, KMS): the store's own check of
        // our Content-MD5 does, where it makes one.
        Ok(self.content_md5_checked().then_some(Proof::ContentMd5))
    }

    /// Upload in one PUT (with `if_absent`: only if no object is there).
    async fn put_single(
        &self,
        key: &str,
        data: &LocalData,
        if_absent: bool,
    ) -> Result<(Option<[u8; 16]>, bool), StoreError> {
        let d = &data.digest;
        let sse = self.sse.as_ref();
        let body = body_for(&data.content, 0, d.size).await?;
        let out = with_sse!(
            self.client
                .put_object()
                .bucket(&self.settings.bucket)
                .key(key)
                .body(body)
                .content_length(d.size as i64)
                .content_md5(B64.encode(d.md5))
                .metadata(MD5_METADATA, hex::encode(d.md5))
                .storage_class(self.storage_class())
                .set_if_none_match(if_absent.then(|| "*".to_owned())),
            sse
        )
        .send()
        .await
        .map_err(|e| sdk_error("PUT", key, e))?;
        let proves = self.etag_is_md5(out.server_side_encryption(), out.sse_customer_algorithm().is_some());
        Ok((out.e_tag().and_then(parse_md5).filter(|_| proves), proves))
    }

    /// Upload in parts; true if every part's ETag proved its part's MD5
    /// and the whole upload's ETag is the one those parts make.
    async fn put_multipart(&self, key: &str, data: &LocalData) -> Result<bool, StoreError> {
        let sse = self.sse.as_ref();
        let created = with_sse!(
            self.client
                .create_multipart_upload()
                .bucket(&self.settings.bucket)
                .key(key)
                .metadata(MD5_METADATA, hex::encode(data.digest.md5))
                .storage_class(self.storage_class()),
            sse
        )
        .send()
        .await
        .map_err(|e| sdk_error("CreateMultipartUpload", key, e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| StoreError::new(ErrorKind::Invalid, format!("CreateMultipartUpload {key}: no upload id")))?
            .to_owned();
        let parts = match self.upload_parts(key, data, &upload_id).await {
            Ok(parts) => parts,
            Err(e) => {
                // Best effort: leave no billable parts behind.
                let _ = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.settings.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .send()
                    .await;
                return Err(e);
            }
        };
        let proven = parts.iter().all(|(_, proven)| *proven);
        let completed: Vec<CompletedPart> = parts.into_iter().map(|(p, _)| p).collect();
        let out = with_sse!(
            self.client
                .complete_multipart_upload()
                .bucket(&self.settings.bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(completed)).build()),
            sse
        )
        .send()
        .await
        .map_err(|e| sdk_error("CompleteMultipartUpload", key, e))?;
        if !proven {
            return Ok(false);
        }
        let want = FileDigest::multipart_etag(&data.digest.part_md5s);
        match out.e_tag().map(parse_etag) {
            Some(Etag::Multipart { md5, parts }) if md5 == want && parts as usize == data.digest.part_md5s.len() => {
                Ok(true)
            }
            Some(Etag::Multipart { .. } | Etag::Md5(_)) => Err(StoreError::new(
                ErrorKind::BadDigest,
                format!("CompleteMultipartUpload {key}: the store's ETag is not the one the parts sent make"),
            )),
            _ => Ok(false),
        }
    }

    /// Every part, `PART_CONCURRENCY` at a time; each with whether its
    /// ETag proved its MD5.
    async fn upload_parts(
        &self,
        key: &str,
        data: &LocalData,
        upload_id: &str,
    ) -> Result<Vec<(CompletedPart, bool)>, StoreError> {
        let d = &data.digest;
        let mut tasks = tokio::task::JoinSet::new();
        let mut parts = Vec::with_capacity(d.part_md5s.len());
        for (index, part_md5) in d.part_md5s.iter().enumerate() {
            if tasks.len() >= PART_CONCURRENCY {
                parts.push(tasks.join_next().await.expect("a task is running")??);
            }
            let offset = index as u64 * d.part_size;
            let length = d.part_size.min(d.size - offset);
            let body = body_for(&data.content, offset, length).await?;
            let request = with_sse!(
                self.client
                    .upload_part()
                    .bucket(&self.settings.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(index as i32 + 1)
                    .content_length(length as i64)
                    .content_md5(B64.encode(part_md5))
                    .body(body),
                self.sse.as_ref()
            );
            let (key, part_md5, sse_c) = (key.to_owned(), *part_md5, self.sse.is_some());
            tasks.spawn(async move {
                let out = request.send().await.map_err(|e| sdk_error("UploadPart", &key, e))?;
                let etag_proves = !sse_c
                    && out.sse_customer_algorithm().is_none()
                    && matches!(out.server_side_encryption(), None | Some(ServerSideEncryption::Aes256));
                let etag_md5 = out.e_tag().and_then(parse_md5);
                if let Some(stored) = etag_md5.filter(|_| etag_proves)
                    && stored != part_md5
                {
                    return Err(StoreError::new(
                        ErrorKind::BadDigest,
                        format!(
                            "UploadPart {key}: part {} was stored with MD5 {}, sent {}",
                            index + 1,
                            hex::encode(stored),
                            hex::encode(part_md5)
                        ),
                    ));
                }
                let part = CompletedPart::builder()
                    .part_number(index as i32 + 1)
                    .set_e_tag(out.e_tag().map(str::to_owned))
                    .build();
                Ok::<_, StoreError>((part, etag_proves && etag_md5.is_some()))
            });
        }
        while let Some(done) = tasks.join_next().await {
            parts.push(done??);
        }
        parts.sort_by_key(|(p, _)| p.part_number());
        Ok(parts)
    }
}

/// A request body of `len` bytes of `content` from `offset`. An object of
/// another store is read into memory first (one part at most), on a
/// blocking thread: its store has its own runtime.
async fn body_for(content: &Content, offset: u64, len: u64) -> Result<ByteStream, StoreError> {
    let Content::Source(source) = content else { return Ok(body_of(content, offset, len)) };
    let source = source.clone();
    let data = tokio::task::spawn_blocking(move || source.read_vec(offset, len))
        .await
        .map_err(|e| StoreError::local(format!("reading the source object: {e}")))??;
    Ok(ByteStream::from(Bytes::from(data)))
}

/// A request body reading `len` bytes of `content` from `offset`: the
/// buffer itself, or the open file by offset. Either can be replayed when
/// the SDK retries.
fn body_of(content: &Content, offset: u64, len: u64) -> ByteStream {
    match content {
        Content::Source(_) => unreachable!("body_for reads a source object first"),
        Content::Bytes(b) => {
            let start = offset as usize;
            ByteStream::from(b.slice(start..start + len as usize))
        }
        Content::File(file) => {
            let file = file.clone();
            ByteStream::new(SdkBody::retryable(move || {
                SdkBody::from_body_1_x(FileRange { file: file.clone(), offset, left: len })
            }))
        }
    }
}

/// An http-body reading a range of an open file with `pread`. The file was
/// just hashed, so its pages are in the page cache and a read is a copy.
struct FileRange {
    file: Arc<File>,
    offset: u64,
    left: u64,
}

impl http_body::Body for FileRange {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        use std::os::unix::fs::FileExt;
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let mut buf = vec![0u8; (self.left as usize).min(CHUNK)];
        let result = match self.file.read_at(&mut buf, self.offset) {
            Ok(0) => {
                Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file got shorter while uploading"))
            }
            Ok(n) => {
                buf.truncate(n);
                self.offset += n as u64;
                self.left -= n as u64;
                Ok(http_body::Frame::data(Bytes::from(buf)))
            }
            Err(e) => Err(e),
        };
        Poll::Ready(Some(result))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
    }
}

impl From<tokio::task::JoinError> for StoreError {
    fn from(e: tokio::task::JoinError) -> Self {
        StoreError::new(ErrorKind::Invalid, format!("upload task failed: {e}"))
    }
}

fn sdk_error<E>(op: &str, key: &str, err: SdkError<E, HttpResponse>) -> StoreError
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    let kind = classify(&err);
    let text = match kind {
        ErrorKind::NoCredentials => "no S3 credentials found (looked in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, \
             AWS_PROFILE and the AWS config files, the instance metadata service, and for migrate, purge and check \
             also in $CREDENTIALS_DIRECTORY and homeserver.yaml)"
            .to_owned(),
        ErrorKind::Denied => {
            format!("{}: the credentials, the bucket policy or the SSE-C key are refused", describe_sdk_error(&err))
        }
        _ => describe_sdk_error(&err),
    };
    StoreError::new(kind, format!("{op} {key}: {text}"))
}

/// What kind of failure an SDK error is.
fn classify<E>(err: &SdkError<E, HttpResponse>) -> ErrorKind
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    match err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            match (service.err().code(), status) {
                (Some("BadDigest" | "InvalidDigest"), _) => ErrorKind::BadDigest,
                (Some("NoSuchBucket"), _) => ErrorKind::NoBucket,
                (Some("InvalidObjectState"), _) => ErrorKind::Archived,
                (Some("PreconditionFailed"), _) | (_, 412) => ErrorKind::Exists,
                (Some("SlowDown" | "Throttling" | "ThrottlingException" | "RequestLimitExceeded"), _) => {
                    ErrorKind::Throttled
                }
                (Some("NoSuchKey" | "NotFound"), _) | (_, 404) => ErrorKind::NotFound,
                (_, 401 | 403) => ErrorKind::Denied,
                (_, 429 | 503) => ErrorKind::Throttled,
                (_, 500..) => ErrorKind::Transient,
                _ => ErrorKind::Invalid,
            }
        }
        SdkError::TimeoutError(_) => ErrorKind::Transient,
        SdkError::ResponseError(_) => ErrorKind::Transient,
        SdkError::ConstructionFailure(_) => {
            if chain_text(err).contains("credentials") {
                ErrorKind::NoCredentials
            } else {
                ErrorKind::Invalid
            }
        }
        SdkError::DispatchFailure(failure) => {
            let text = chain_text(err);
            if text.contains("no credentials") || text.contains("CredentialsNotLoaded") {
                ErrorKind::NoCredentials
            } else if failure.is_user() {
                ErrorKind::Invalid
            } else if unreachable(err) {
                ErrorKind::Unreachable
            } else {
                ErrorKind::Transient
            }
        }
        _ => ErrorKind::Invalid,
    }
}

/// Whether a failure to send says the service cannot be reached at all:
/// the connection was refused or could not be made, or the name does not
/// resolve.
fn unreachable(err: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind as Io;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                Io::ConnectionRefused | Io::AddrNotAvailable | Io::HostUnreachable | Io::NetworkUnreachable
            )
        {
            return true;
        }
        let text = c.to_string();
        if text.contains("dns error") || text.contains("failed to lookup address") || text.contains("tcp connect error")
        {
            return true;
        }
        cause = c.source();
    }
    false
}

fn chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    let mut cause = Some(err);
    while let Some(c) = cause {
        text.push_str(&c.to_string());
        text.push_str(": ");
        cause = c.source();
    }
    text
}

/// One readable line for a failed call, never a debug dump. An error
/// answer says its S3 code and HTTP status; one without a body (any answer
/// to HEAD) has only the status, which the SDK's own text leaves out. A
/// call that got no answer says why in a few words.
fn describe_sdk_error<E>(err: &SdkError<E, HttpResponse>) -> String
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    let service = match err {
        SdkError::ServiceError(service) => service,
        SdkError::TimeoutError(_) => return "no answer in time".to_owned(),
        other => return cause_of(other),
    };
    let status = service.raw().status().as_u16();
    match (service.err().code(), service.err().message()) {
        (Some(code), Some(message)) => format!("{code}: {message} (HTTP {status})"),
        (Some(code), None) => format!("{code} (HTTP {status})"),
        (None, _) if status == 403 => "access denied (HTTP 403)".to_owned(),
        (None, _) if status == 404 => "not found (HTTP 404)".to_owned(),
        (None, _) => format!("the server answered HTTP {status}"),
    }
}

/// Why a request got no answer: the connection was refused, the name did
/// not resolve, TLS failed, ...; else the innermost cause's own words.
fn cause_of(err: &(dyn std::error::Error + 'static)) -> String {
    use std::io::ErrorKind as Io;
    let mut texts = Vec::new();
    let mut io = None;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(c) = cause {
        if let Some(e) = c.downcast_ref::<std::io::Error>() {
            io = io.or(Some(e.kind()));
        }
        texts.push(c.to_string());
        cause = c.source();
    }
    let all = texts.join(": ").to_lowercase();
    match io {
        Some(Io::ConnectionRefused) => return "connection refused (is the endpoint's host and port right?)".into(),
        Some(Io::HostUnreachable | Io::NetworkUnreachable) => return "the endpoint's host cannot be reached".into(),
        Some(Io::ConnectionReset) => return "the connection was reset".into(),
        Some(Io::TimedOut) => return "the connection timed out".into(),
        _ => {}
    }
    if all.contains("dns error")
        || all.contains("failed to lookup address")
        || all.contains("name or service not known")
    {
        return "the endpoint's host name could not be resolved".into();
    }
    if all.contains("connection refused") {
        return "connection refused (is the endpoint's host and port right?)".into();
    }
    if all.contains("certificate") || all.contains("tls") || all.contains("handshake") {
        let inner = texts.iter().rev().find(|t| !t.is_empty()).cloned().unwrap_or_default();
        return format!("TLS failed: {inner}");
    }
    if all.contains("timeout") || all.contains("timed out") {
        return "no answer in time".into();
    }
    // The innermost cause that says something (the outer ones are the
    // SDK's "dispatch failure" wrappers).
    texts
        .iter()
        .rev()
        .find(|t| !t.is_empty() && !t.contains("dispatch failure") && !t.starts_with("other"))
        .or_else(|| texts.last())
        .cloned()
        .unwrap_or_else(|| "unknown failure".into())
}

/// Logs each failed attempt the SDK retries, as it happens, instead of a
/// silent wait: a closed endpoint or a flaky store shows up in the journal.
#[derive(Debug)]
struct LogRetries;

impl aws_sdk_s3::config::Intercept for LogRetries {
    fn name(&self) -> &'static str {
        "LogRetries"
    }

    fn read_after_attempt(
        &self,
        context: &aws_sdk_s3::config::interceptors::FinalizerInterceptorContextRef<'_>,
        _runtime_components: &aws_sdk_s3::config::RuntimeComponents,
        cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        let Some(Err(e)) = context.output_or_error() else { return Ok(()) };
        let status = context.response().map(|r| r.status().as_u16());
        let retried = e.is_timeout_error()
            || e.is_response_error()
            || e.is_connector_error()
            || status.is_some_and(|s| s >= 500 || s == 429);
        if !retried {
            return Ok(());
        }
        let operation = cfg
            .load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
            .map_or("request", |m| m.name())
            .to_owned();
        let attempt =
            cfg.load::<aws_smithy_runtime_api::client::retries::RequestAttempts>().map_or(1, |a| a.attempts());
        let max = cfg.load::<RetryConfig>().map_or(1, |c| c.max_attempts());
        let why = match status {
            Some(s) if e.is_operation_error() => format!("HTTP {s}"),
            _ => cause_of(e),
        };
        if attempt < max {
            log::warn!("S3 {operation}: {why} (attempt {attempt} of {max}); retrying");
        } else {
            log::debug!("S3 {operation}: {why} (attempt {attempt} of {max}); giving up");
        }
        Ok(())
    }
}

impl ObjectStore for S3Store {
    fn describe(&self) -> String {
        match &self.settings.endpoint_url {
            Some(url) => format!("s3://{} at {url}", self.settings.bucket),
            None => format!("s3://{}", self.settings.bucket),
        }
    }

    fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        let sse = self.sse.as_ref();
        let result = self
            .runtime
            .block_on(with_sse!(self.client.head_object().bucket(&self.settings.bucket).key(key), sse).send());
        let out = match result {
            Ok(out) => out,
            Err(SdkError::ServiceError(e)) if e.err().is_not_found() => return Ok(None),
            Err(e) => return Err(sdk_error("HEAD", key, e)),
        };
        // The ETag is a checksum of the content only without SSE-C or KMS.
        let etag = if self.etag_is_md5(out.server_side_encryption(), out.sse_customer_algorithm().is_some()) {
            out.e_tag().map_or(Etag::Opaque, parse_etag)
        } else {
            Etag::Opaque
        };
        let storage_class = out.storage_class().map(|c| c.as_str().to_owned());
        let archived_tier = out.archive_status().is_some();
        let readable = !archived_tier && storage_class.as_deref().is_none_or(|c| !ARCHIVE_CLASSES.contains(&c));
        Ok(Some(ObjectInfo { size: out.content_length().unwrap_or(0).max(0) as u64, etag, storage_class, readable }))
    }

    fn put(&self, key: &str, data: &LocalData) -> Result<Option<Proof>, StoreError> {
        let proof = self.put_proven(key, data, false)?;
        // In-memory content only: the second PUT then sends the very bytes
        // the first one proved, whatever happens to the file meanwhile.
        if matches!(data.content, Content::Bytes(_)) && proof.is_some() && self.refuses_overwrite.get().is_none() {
            self.probe_conditional_put(key, data);
        }
        Ok(proof)
    }

    fn put_if_absent(&self, key: &str, data: &LocalData) -> Result<Option<PutIfAbsent>, StoreError> {
        // Small files only: they are where the HEAD costs as much as the PUT.
        if !data.digest.part_md5s.is_empty() || !self.conditional_put_honoured() {
            return Ok(None);
        }
        match self.put_proven(key, data, true) {
            Ok(proof) => Ok(Some(PutIfAbsent::Stored(proof))),
            Err(e) if e.kind == ErrorKind::Exists => Ok(Some(PutIfAbsent::Exists)),
            Err(e) => Err(e),
        }
    }
    fn read_range(
        &self,
        key: &str,
        offset: u64,
        len: u64,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), StoreError>,
    ) -> Result<bool, StoreError> {
        if len == 0 {
            return Ok(self.head(key)?.is_some());
        }
        self.get(key, super::http_range(offset, len), sink)
    }

    fn list(&self, prefix: &str, each: &mut dyn FnMut(Listed) -> Result<(), StoreError>) -> Result<(), StoreError> {
        let mut token: Option<String> = None;
        loop {
            let page = self
                .runtime
                .block_on(
                    self.client
                        .list_objects_v2()
                        .bucket(&self.settings.bucket)
                        .prefix(prefix)
                        .set_continuation_token(token.take())
                        .send(),
                )
                .map_err(|e| sdk_error("LIST", prefix, e))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                let modified = object.last_modified().and_then(|t| std::time::SystemTime::try_from(*t).ok());
                each(Listed { key: key.to_owned(), size: object.size().unwrap_or(0).max(0) as u64, modified })?;
            }
            match (page.is_truncated(), page.next_continuation_token()) {
                (Some(true), Some(next)) if !next.is_empty() => token = Some(next.to_owned()),
                (Some(true), _) => {
                    return Err(StoreError::new(
                        ErrorKind::Invalid,
                        format!(
                            "LIST {prefix:?}: the store says the listing goes on but gives no continuation token; \
                             stopping rather than taking a partial listing as whole"
                        ),
                    ));
                }
                _ => return Ok(()),
            }
        }
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.runtime
            .block_on(self.client.delete_object().bucket(&self.settings.bucket).key(key).send())
            .map(|_| ())
            .or_else(|e| match e {
                SdkError::ServiceError(ref se) if se.raw().status().as_u16() == 404 => Ok(()),
                e => Err(sdk_error("DELETE", key, e)),
            })
    }

    /// DeleteObjects, 1,000 keys a request (S3's limit), with the
    /// Content-MD5 that call requires (the SDK sends only its own
    /// checksums, which not every S3-compatible server accepts).
    fn delete_many(&self, keys: &[&str]) -> Vec<(String, StoreError)> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        let mut failed = Vec::new();
        for (n, chunk) in keys.chunks(DELETE_BATCH).enumerate() {
            let objects: Result<Vec<_>, _> =
                chunk.iter().map(|k| ObjectIdentifier::builder().key(*k).build()).collect();
            let delete = objects.and_then(|o| Delete::builder().set_objects(Some(o)).quiet(true).build());
            let delete = match delete {
                Ok(d) => d,
                Err(e) => {
                    let e = StoreError::new(ErrorKind::Invalid, format!("DeleteObjects: {e}"));
                    failed.extend(chunk.iter().map(|k| ((*k).to_owned(), e.clone())));
                    continue;
                }
            };
            let request = self.client.delete_objects().bucket(&self.settings.bucket).delete(delete);
            let result = self.runtime.block_on(
                request
                    .customize()
                    .mutate_request(|req| {
                        if let Some(body) = req.body().bytes() {
                            let md5 = B64.encode(Md5::digest(body));
                            req.headers_mut().insert("Content-MD5", md5);
                        }
                    })
                    .send(),
            );
            match result {
                Ok(out) => {
                    for e in out.errors() {
                        let kind = match e.code() {
                            Some("AccessDenied") => ErrorKind::Denied,
                            Some("SlowDown") => ErrorKind::Throttled,
                            Some("InternalError") => ErrorKind::Transient,
                            _ => ErrorKind::Invalid,
                        };
                        let key = e.key().unwrap_or_default().to_owned();
                        let text = format!("DELETE {key}: {}", e.message().or(e.code()).unwrap_or("refused"));
                        failed.push((key, StoreError::new(kind, text)));
                    }
                }
                Err(e) => {
                    let e = sdk_error("DeleteObjects", &format!("({} keys)", chunk.len()), e);
                    let stop = e.kind.is_systematic();
                    failed.extend(chunk.iter().map(|k| ((*k).to_owned(), e.clone())));
                    if stop {
                        let rest = keys.get((n + 1) * DELETE_BATCH..).unwrap_or_default();
                        failed.extend(rest.iter().map(|k| ((*k).to_owned(), e.clone())));
                        break;
                    }
                }
            }
        }
        failed
    }

    fn part_size(&self, size: u64) -> Option<u64> {
        (size > MULTIPART_THRESHOLD).then(|| {
            let min_for_count = size.div_ceil(MAX_PARTS).next_multiple_of(1024 * 1024);
            MULTIPART_THRESHOLD.max(min_for_count)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_connections_and_unknown_names_are_unreachable() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(unreachable(&refused));
        assert!(!unreachable(&std::io::Error::from(std::io::ErrorKind::ConnectionReset)));
    }

    #[test]
    fn sse_key_is_never_shown() {
        let key = SseCustomerKey::new(b"0123456789abcdef0123456789abcdef", "AES256");
        assert!(!format!("{key:?}").contains("0123"));
    }
}
