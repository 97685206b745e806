//! What homeserver.yaml says about media: where the media store is, the
//! server's name, the `media_retention` policy, and the settings of the
//! `s3_storage_provider.S3StorageProviderBackend` entry in
//! `media_storage_providers`, so `migrate`, `purge` and `check` need no
//! second copy of them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use serde_yaml_ng::Value;

use super::{as_mapping, kind_of, scalar};
use crate::duration::parse_synapse_duration;

/// The module path Synapse loads the S3 provider by.
pub const S3_PROVIDER_MODULE: &str = "s3_storage_provider.S3StorageProviderBackend";

/// Keys of the provider's `config` section that media-offload uses.
pub const PROVIDER_KEYS: &[&str] = &[
    "bucket",
    "region_name",
    "endpoint_url",
    "access_key_id",
    "secret_access_key",
    "session_token",
    "storage_class",
    "sse_customer_key",
    "sse_customer_algo",
    "prefix",
];

/// The media-related parts of a homeserver config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HomeserverMedia {
    /// Where the file was read from, for messages.
    pub origin: String,
    pub server_name: Option<String>,
    pub media_store_path: Option<PathBuf>,
    pub local_media_lifetime: Option<Duration>,
    pub remote_media_lifetime: Option<Duration>,
    /// The S3 provider's settings by key, and the YAML path of its entry
    /// (`media_storage_providers[1].config`).
    pub s3_provider: Option<(BTreeMap<String, String>, String)>,
}

impl HomeserverMedia {
    pub fn from_yaml(doc: &Value, origin: &str) -> Result<Self> {
        let map = as_mapping(doc, origin)?;
        let text = |key: &str| -> Result<Option<String>> {
            match map.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => scalar(v, &format!("{origin}: {key}")).map(Some),
            }
        };
        let mut out = Self {
            origin: origin.to_owned(),
            server_name: text("server_name")?,
            media_store_path: text("media_store_path")?.map(PathBuf::from),
            ..Default::default()
        };
        if let Some(retention) = map.get("media_retention").filter(|v| !v.is_null()) {
            let field = format!("{origin}: media_retention");
            let retention = as_mapping(retention, &field)?;
            let lifetime = |key: &str| -> Result<Option<Duration>> {
                match retention.get(key) {
                    None | Some(Value::Null) => Ok(None),
                    Some(v) => parse_synapse_duration(v).map(Some).map_err(|e| anyhow!("{field}.{key}: {e}")),
                }
            };
            out.local_media_lifetime = lifetime("local_media_lifetime")?;
            out.remote_media_lifetime = lifetime("remote_media_lifetime")?;
        }
        out.s3_provider = s3_provider(map.get("media_storage_providers").copied(), origin)?;
        Ok(out)
    }

    /// A provider setting by key, with the YAML path it came from.
    pub fn provider_setting(&self, key: &str) -> Option<(String, String)> {
        let (settings, path) = self.s3_provider.as_ref()?;
        settings.get(key).map(|v| (v.clone(), format!("{}: {path}.{key}", self.origin)))
    }
}

fn s3_provider(list: Option<&Value>, origin: &str) -> Result<Option<(BTreeMap<String, String>, String)>> {
    let Some(list) = list.filter(|v| !v.is_null()) else { return Ok(None) };
    let Value::Sequence(entries) = list else {
        bail!("{origin}: media_storage_providers: expected a list, found {}", kind_of(list));
    };
    let mut found = None;
    for (i, entry) in entries.iter().enumerate() {
        let field = format!("media_storage_providers[{i}]");
        let entry = as_mapping(entry, &format!("{origin}: {field}"))?;
        let module = entry.get("module").and_then(|m| m.as_str()).unwrap_or_default();
        if module != S3_PROVIDER_MODULE {
            continue;
        }
        if found.is_some() {
            log::warn!("{origin}: more than one {S3_PROVIDER_MODULE} entry; using the first");
            break;
        }
        let path = format!("{field}.config");
        let config = match entry.get("config") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(c) => as_mapping(c, &format!("{origin}: {path}"))?,
        };
        let mut settings = BTreeMap::new();
        for key in PROVIDER_KEYS {
            match config.get(*key) {
                None | Some(Value::Null) => {}
                Some(v) => {
                    settings.insert((*key).to_owned(), scalar(v, &format!("{origin}: {path}.{key}"))?);
                }
            }
        }
        found = Some((settings, path));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HS: &str = r#"
server_name: example.org
media_store_path: /var/lib/synapse/media
media_retention:
  local_media_lifetime: 90d
  remote_media_lifetime: 14d
media_storage_providers:
- module: file_system
  config: {directory: /mnt/backup}
- module: s3_storage_provider.S3StorageProviderBackend
  store_local: true
  config:
    bucket: media
    region_name: eu-central-1
    endpoint_url: https://s3.example.org
    access_key_id: AKIA
    secret_access_key: "s/e:c@r%et"
    prefix: synapse/
    threadpool_size: 40
"#;

    #[test]
    fn reads_the_media_parts() {
        let doc: Value = serde_yaml_ng::from_str(HS).unwrap();
        let hs = HomeserverMedia::from_yaml(&doc, "hs.yaml").unwrap();
        assert_eq!(hs.server_name.as_deref(), Some("example.org"));
        assert_eq!(hs.media_store_path, Some(PathBuf::from("/var/lib/synapse/media")));
        assert_eq!(hs.local_media_lifetime, Some(Duration::from_secs(90 * 86_400)));
        assert_eq!(hs.remote_media_lifetime, Some(Duration::from_secs(14 * 86_400)));
        let (bucket, from) = hs.provider_setting("bucket").unwrap();
        assert_eq!(bucket, "media");
        assert_eq!(from, "hs.yaml: media_storage_providers[1].config.bucket");
        assert_eq!(hs.provider_setting("secret_access_key").unwrap().0, "s/e:c@r%et");
        assert_eq!(hs.provider_setting("session_token"), None);
    }

    #[test]
    fn no_provider_no_retention_is_fine() {
        let doc: Value = serde_yaml_ng::from_str("server_name: x\nmedia_storage_providers: []\n").unwrap();
        let hs = HomeserverMedia::from_yaml(&doc, "hs.yaml").unwrap();
        assert!(hs.s3_provider.is_none() && hs.local_media_lifetime.is_none());
    }

    #[test]
    fn errors_name_the_field() {
        for (text, want) in [
            ("media_retention:\n  local_media_lifetime: soon\n", "media_retention.local_media_lifetime"),
            ("media_storage_providers: {a: 1}\n", "expected a list"),
            (
                "media_storage_providers:\n- module: s3_storage_provider.S3StorageProviderBackend\n  config:\n    bucket: [a]\n",
                "media_storage_providers[0].config.bucket",
            ),
        ] {
            let doc: Value = serde_yaml_ng::from_str(text).unwrap();
            let err = HomeserverMedia::from_yaml(&doc, "hs.yaml").unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
