//! An S3 helper on moto_server: a unique bucket per test, and the few calls
//! the tests need, with a small tokio runtime of its own.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use base64::Engine as _;

use super::env::test_env;
use super::unique_suffix;

pub struct S3 {
    rt: tokio::runtime::Runtime,
    pub client: Client,
    pub bucket: String,
    pub endpoint: String,
}

#[derive(Debug, Clone)]
pub struct Head {
    pub size: i64,
    pub metadata: HashMap<String, String>,
    pub etag: String,
    pub storage_class: Option<String>,
}

/// The three SSE-C headers' values for a raw key string (as boto3 takes it).
pub fn ssec_headers(raw_key: &str) -> (String, String) {
    use md5::Digest;
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.encode(raw_key.as_bytes());
    let md5 = b64.encode(md5::Md5::digest(raw_key.as_bytes()));
    (key, md5)
}

fn client_for(endpoint: &str) -> Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "media-offload-tests"))
        .force_path_style(true)
        .build();
    Client::from_conf(conf)
}

impl S3 {
    /// A new empty bucket on moto.
    pub fn new() -> S3 {
        let bucket = format!("mo-test-{}", unique_suffix());
        let s3 = S3::existing(&test_env().s3_endpoint, &bucket);
        s3.create_bucket(&bucket);
        s3
    }

    /// A new empty bucket on s3s-fs, which checks Content-MD5 (moto does not).
    pub fn new_s3s() -> S3 {
        let bucket = format!("mo-test-{}", unique_suffix());
        let s3 = S3::existing(&test_env().s3s_endpoint, &bucket);
        s3.create_bucket(&bucket);
        s3
    }

    /// A helper for an existing bucket reached through `endpoint`.
    pub fn existing(endpoint: &str, bucket: &str) -> S3 {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        S3 { rt, client: client_for(endpoint), bucket: bucket.to_string(), endpoint: endpoint.to_string() }
    }

    pub fn create_bucket(&self, bucket: &str) {
        self.rt
            .block_on(self.client.create_bucket().bucket(bucket).send())
            .unwrap_or_else(|e| panic!("create bucket {bucket}: {}", DisplayErrorContext(&e)));
    }

    /// All keys, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.rt.block_on(async {
            let mut keys = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let out = self
                    .client
                    .list_objects_v2()
                    .bucket(&self.bucket)
                    .set_continuation_token(token.clone())
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("list {}: {}", self.bucket, DisplayErrorContext(&e)));
                for o in out.contents() {
                    keys.push(o.key().unwrap_or_default().to_string());
                }
                match out.next_continuation_token() {
                    Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_string()),
                    _ => break,
                }
            }
            keys.sort();
            keys
        })
    }

    /// The object's bytes, or an error text.
    pub fn try_get(&self, key: &str, ssec_key: Option<&str>) -> Result<Vec<u8>, String> {
        self.rt.block_on(async {
            let mut req = self.client.get_object().bucket(&self.bucket).key(key);
            if let Some(k) = ssec_key {
                let (kb64, md5b64) = ssec_headers(k);
                req = req.sse_customer_algorithm("AES256").sse_customer_key(kb64).sse_customer_key_md5(md5b64);
            }
            let out = req.send().await.map_err(|e| format!("{}", DisplayErrorContext(&e)))?;
            let data = out.body.collect().await.map_err(|e| e.to_string())?;
            Ok(data.into_bytes().to_vec())
        })
    }

    /// The object's bytes (plain GET), or None when it does not exist.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        match self.try_get(key, None) {
            Ok(b) => Some(b),
            Err(e) if e.contains("NoSuchKey") || e.contains("404") => None,
            Err(e) => panic!("GET {key}: {e}"),
        }
    }

    pub fn try_head(&self, key: &str, ssec_key: Option<&str>) -> Result<Head, String> {
        self.rt.block_on(async {
            let mut req = self.client.head_object().bucket(&self.bucket).key(key);
            if let Some(k) = ssec_key {
                let (kb64, md5b64) = ssec_headers(k);
                req = req.sse_customer_algorithm("AES256").sse_customer_key(kb64).sse_customer_key_md5(md5b64);
            }
            let out = req.send().await.map_err(|e| format!("{}", DisplayErrorContext(&e)))?;
            Ok(Head {
                size: out.content_length().unwrap_or(-1),
                metadata: out.metadata().cloned().unwrap_or_default(),
                etag: out.e_tag().unwrap_or_default().trim_matches('"').to_string(),
                storage_class: out.storage_class().map(|s| s.as_str().to_string()),
            })
        })
    }

    /// HEAD, or None when the object does not exist.
    pub fn head(&self, key: &str) -> Option<Head> {
        match self.try_head(key, None) {
            Ok(h) => Some(h),
            Err(e) if e.contains("NotFound") || e.contains("404") => None,
            Err(e) => panic!("HEAD {key}: {e}"),
        }
    }

    pub fn put(&self, key: &str, body: &[u8], metadata: &[(&str, &str)]) {
        self.rt.block_on(async {
            let mut req = self.client.put_object().bucket(&self.bucket).key(key).body(ByteStream::from(body.to_vec()));
            for (k, v) in metadata {
                req = req.metadata(*k, *v);
            }
            req.send().await.unwrap_or_else(|e| panic!("PUT {key}: {}", DisplayErrorContext(&e)));
        })
    }

    /// PutObject with an SSE-C key (raw 32-character string).
    pub fn put_ssec(&self, key: &str, body: &[u8], raw_key: &str) {
        let (kb64, md5b64) = ssec_headers(raw_key);
        self.rt.block_on(async {
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .body(ByteStream::from(body.to_vec()))
                .sse_customer_algorithm("AES256")
                .sse_customer_key(kb64)
                .sse_customer_key_md5(md5b64)
                .send()
                .await
                .unwrap_or_else(|e| panic!("PUT {key}: {}", DisplayErrorContext(&e)));
        })
    }

    /// Every object's bytes, by key.
    pub fn objects(&self) -> BTreeMap<String, Vec<u8>> {
        self.keys()
            .into_iter()
            .map(|k| {
                let b = self.get(&k).unwrap_or_else(|| panic!("{k} vanished"));
                (k, b)
            })
            .collect()
    }
}
