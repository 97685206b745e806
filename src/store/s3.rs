//! S3-compatible object storage through the official AWS SDK.
//!
//! The SDK is async; this store owns a small tokio runtime and exposes the
//! synchronous [`ObjectStore`] trait, so the rest of the program stays
//! plain threads. Worker threads call `block_on` concurrently, which the
//! multi-threaded runtime supports.

use std::path::Path;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption, StorageClass};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use md5::{Digest as _, Md5};

use super::{FileDigest, Listed, ObjectInfo, ObjectStore, StoreError, StoreSettings, parse_md5};

/// Files larger than this go up in parts (boto3's default threshold).
pub const MULTIPART_THRESHOLD: u64 = 8 * 1024 * 1024;
/// S3 allows at most 10,000 parts.
const MAX_PARTS: u64 = 10_000;
/// Parts of one file in flight at once.
const PART_CONCURRENCY: usize = 4;
/// User metadata key holding the content MD5 (`x-amz-meta-md5`).
pub const MD5_METADATA: &str = "md5";

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

pub struct S3Store {
    runtime: tokio::runtime::Runtime,
    client: Client,
    settings: StoreSettings,
    sse: Option<SseCustomerKey>,
}

impl S3Store {
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
            config = config.endpoint_url(url).force_path_style(true);
        }
        let mut store = Self { runtime, client: Client::from_conf(config.build()), settings: settings.clone(), sse };
        store.preflight()?;
        Ok(store)
    }

    /// One `HeadBucket` before any file: follow a redirect to the bucket's
    /// region (as boto3 does), and stop with one clear error when the bucket
    /// or the service cannot be reached, rather than one error per file.
    fn preflight(&mut self) -> anyhow::Result<()> {
        let bucket = self.settings.bucket.clone();
        let result = self.runtime.block_on(self.client.head_bucket().bucket(&bucket).send());
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
                // the credentials are wrong: the object calls will say so).
                log::warn!("HeadBucket on {bucket} was refused (403); going on with the object calls");
                Ok(())
            }
            _ => anyhow::bail!("could not reach {}: {}", self.describe(), describe_sdk_error(&err)),
        }
    }

    fn storage_class(&self) -> StorageClass {
        StorageClass::from(self.settings.storage_class.as_str())
    }

    /// Whether an ETag from this store is the MD5 of the (part's) content:
    /// only without SSE-C, and with no server-side encryption or SSE-S3.
    fn etag_is_md5(&self, sse: Option<&ServerSideEncryption>) -> bool {
        self.sse.is_none() && matches!(sse, None | Some(ServerSideEncryption::Aes256))
    }

    /// Upload in one PUT; returns the content MD5 the server's ETag proves, if it can.
    async fn put_single(&self, key: &str, path: &Path, digest: &FileDigest) -> Result<Option<[u8; 16]>, StoreError> {
        let body = ByteStream::read_from()
            .path(path)
            .length(Length::Exact(digest.size))
            .build()
            .await
            .map_err(|e| StoreError(format!("reading {}: {e}", path.display())))?;
        let sse = self.sse.as_ref();
        let out = self
            .client
            .put_object()
            .bucket(&self.settings.bucket)
            .key(key)
            .body(body)
            .content_length(digest.size as i64)
            .content_md5(B64.encode(digest.md5))
            .metadata(MD5_METADATA, hex::encode(digest.md5))
            .storage_class(self.storage_class())
            .set_sse_customer_algorithm(sse.map(|s| s.algorithm.clone()))
            .set_sse_customer_key(sse.map(|s| s.key_b64.clone()))
            .set_sse_customer_key_md5(sse.map(|s| s.key_md5_b64.clone()))
            .send()
            .await
            .map_err(|e| sdk_error("PUT", key, e))?;
        // A plain single-part upload's ETag is the content MD5: the server
        // itself confirms which bytes it stored.
        Ok(if self.etag_is_md5(out.server_side_encryption()) { out.e_tag().and_then(parse_md5) } else { None })
    }

    /// Upload in parts; returns the content MD5 if every part's ETag proves
    /// its part's MD5.
    async fn put_multipart(&self, key: &str, path: &Path, digest: &FileDigest) -> Result<Option<[u8; 16]>, StoreError> {
        let sse = self.sse.as_ref();
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.settings.bucket)
            .key(key)
            .metadata(MD5_METADATA, hex::encode(digest.md5))
            .storage_class(self.storage_class())
            .set_sse_customer_algorithm(sse.map(|s| s.algorithm.clone()))
            .set_sse_customer_key(sse.map(|s| s.key_b64.clone()))
            .set_sse_customer_key_md5(sse.map(|s| s.key_md5_b64.clone()))
            .send()
            .await
            .map_err(|e| sdk_error("CreateMultipartUpload", key, e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| StoreError(format!("CreateMultipartUpload {key}: no upload id in the answer")))?
            .to_owned();
        let result = self.upload_parts(key, path, digest, &upload_id).await;
        let (parts, proven) = match result {
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
        self.client
            .complete_multipart_upload()
            .bucket(&self.settings.bucket)
            .key(key)
            .upload_id(&upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .set_sse_customer_algorithm(sse.map(|s| s.algorithm.clone()))
            .set_sse_customer_key(sse.map(|s| s.key_b64.clone()))
            .set_sse_customer_key_md5(sse.map(|s| s.key_md5_b64.clone()))
            .send()
            .await
            .map_err(|e| sdk_error("CompleteMultipartUpload", key, e))?;
        Ok(proven.then_some(digest.md5))
    }

    async fn upload_parts(
        &self,
        key: &str,
        path: &Path,
        digest: &FileDigest,
        upload_id: &str,
    ) -> Result<(Vec<CompletedPart>, bool), StoreError> {
        let mut tasks = tokio::task::JoinSet::new();
        let mut parts = Vec::with_capacity(digest.part_md5s.len());
        for (index, part_md5) in digest.part_md5s.iter().enumerate() {
            if tasks.len() >= PART_CONCURRENCY {
                parts.push(tasks.join_next().await.expect("a task is running")??);
            }
            let offset = index as u64 * digest.part_size;
            let length = digest.part_size.min(digest.size - offset);
            let request = self
                .client
                .upload_part()
                .bucket(&self.settings.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(index as i32 + 1)
                .content_length(length as i64)
                .content_md5(B64.encode(part_md5))
                .set_sse_customer_algorithm(self.sse.as_ref().map(|s| s.algorithm.clone()))
                .set_sse_customer_key(self.sse.as_ref().map(|s| s.key_b64.clone()))
                .set_sse_customer_key_md5(self.sse.as_ref().map(|s| s.key_md5_b64.clone()));
            let (path, key, part_md5) = (path.to_owned(), key.to_owned(), *part_md5);
            tasks.spawn(async move {
                let body = ByteStream::read_from()
                    .path(&path)
                    .offset(offset)
                    .length(Length::Exact(length))
                    .build()
                    .await
                    .map_err(|e| StoreError(format!("reading {}: {e}", path.display())))?;
                let out = request.body(body).send().await.map_err(|e| sdk_error("UploadPart", &key, e))?;
                let etag_md5 = out.e_tag().and_then(parse_md5);
                let sse = out.server_side_encryption().cloned();
                let part = CompletedPart::builder()
                    .part_number(index as i32 + 1)
                    .set_e_tag(out.e_tag().map(str::to_owned))
                    .build();
                Ok::<_, StoreError>((part, etag_md5, sse, part_md5))
            });
        }
        while let Some(done) = tasks.join_next().await {
            parts.push(done.map_err(|e| StoreError(format!("UploadPart {key}: {e}")))??);
        }
        parts.sort_by_key(|(p, ..)| p.part_number());
        let mut proven = true;
        for (part, etag_md5, sse, part_md5) in &parts {
            if !self.etag_is_md5(sse.as_ref()) {
                proven = false;
            } else if let Some(etag_md5) = etag_md5 {
                if etag_md5 != part_md5 {
                    return Err(StoreError(format!(
                        "UploadPart {key}: part {} was stored with MD5 {}, sent {}",
                        part.part_number().unwrap_or(0),
                        hex::encode(etag_md5),
                        hex::encode(part_md5)
                    )));
                }
            } else {
                proven = false;
            }
        }
        Ok((parts.into_iter().map(|(p, ..)| p).collect(), proven))
    }
}

impl From<tokio::task::JoinError> for StoreError {
    fn from(e: tokio::task::JoinError) -> Self {
        StoreError(format!("upload task failed: {e}"))
    }
}

fn sdk_error<E>(op: &str, key: &str, err: SdkError<E, HttpResponse>) -> StoreError
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    StoreError(format!("{op} {key}: {}", describe_sdk_error(&err)))
}

/// One readable line for a failed call. An error answer says its S3 code
/// and HTTP status; one without a body (any answer to HEAD) has only the
/// status, which the SDK's own text leaves out.
fn describe_sdk_error<E>(err: &SdkError<E, HttpResponse>) -> String
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    let SdkError::ServiceError(service) = err else { return DisplayErrorContext(err).to_string() };
    let status = service.raw().status().as_u16();
    match (service.err().code(), service.err().message()) {
        (Some(code), Some(message)) => format!("{code}: {message} (HTTP {status})"),
        (Some(code), None) => format!("{code} (HTTP {status})"),
        (None, _) => format!("the server answered HTTP {status}"),
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
        let result = self.runtime.block_on(
            self.client
                .head_object()
                .bucket(&self.settings.bucket)
                .key(key)
                .set_sse_customer_algorithm(sse.map(|s| s.algorithm.clone()))
                .set_sse_customer_key(sse.map(|s| s.key_b64.clone()))
                .set_sse_customer_key_md5(sse.map(|s| s.key_md5_b64.clone()))
                .send(),
        );
        let out = match result {
            Ok(out) => out,
            Err(SdkError::ServiceError(e)) if e.err().is_not_found() => return Ok(None),
            Err(e) => return Err(sdk_error("HEAD", key, e)),
        };
        let stored = out.metadata().and_then(|m| m.get(MD5_METADATA)).and_then(|v| parse_md5(v));
        // Without our checksum, trust the ETag only where it is the content
        // MD5: a single-part upload without SSE-C or KMS encryption.
        let etag = out
            .e_tag()
            .filter(|_| out.sse_customer_algorithm().is_none())
            .filter(|_| self.etag_is_md5(out.server_side_encryption()))
            .and_then(parse_md5);
        Ok(Some(ObjectInfo { size: out.content_length().unwrap_or(0).max(0) as u64, md5: stored.or(etag) }))
    }

    fn put(&self, key: &str, path: &Path, digest: &FileDigest) -> Result<ObjectInfo, StoreError> {
        let proven = if digest.part_md5s.is_empty() {
            self.runtime.block_on(self.put_single(key, path, digest))?
        } else {
            self.runtime.block_on(self.put_multipart(key, path, digest))?
        };
        if let Some(md5) = proven {
            return Ok(ObjectInfo { size: digest.size, md5: Some(md5) });
        }
        // The answers did not prove the content (SSE-C, KMS): ask the store
        // for the size. Its `md5` metadata is what we just sent, so it proves
        // nothing here; the server checked Content-MD5 on receipt.
        let info = self.head(key)?.ok_or_else(|| StoreError(format!("{key}: object missing right after upload")))?;
        Ok(ObjectInfo { size: info.size, md5: None })
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
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_owned()),
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

    fn part_size(&self, size: u64) -> Option<u64> {
        (size > MULTIPART_THRESHOLD).then(|| {
            let min_for_count = size.div_ceil(MAX_PARTS).next_multiple_of(1024 * 1024);
            MULTIPART_THRESHOLD.max(min_for_count)
        })
    }
}
