//! media-offload's own config file (`--config PATH`): the settings Synapse
//! does not hold (duration, concurrency, cache path, retention for `purge`,
//! the grace period of `check`) and, optionally, overrides of what
//! homeserver.yaml says. Secrets never go here: they come from the
//! environment, systemd credentials or homeserver.yaml.
//!
//! ```yaml
//! homeserver_config_path:            # one path, or a list; folders of *.yaml too
//!   - /etc/matrix-synapse/homeserver.yaml
//!   - /etc/matrix-synapse/conf.d
//! cache_db: /var/lib/media-offload/cache.db
//! duration: 30d
//! concurrency: 8
//! settle_time: 10min              # files modified more recently are left alone
//! bucket: synapse-media           # overrides homeserver.yaml
//! # swift: true                   # the bucket is a Swift container
//! # swift_cloud: mycloud          # of clouds.yaml (else ST_AUTH / OS_CLOUD)
//! # swift_segment_size: 1GiB      # larger files go up as SLOs
//! purge:
//!   remote_older_than: 30d
//!   local_older_than: 2y
//!   size_gt: 1048576
//! check:
//!   grace_period: 1h
//! ```
//!
//! For a Dendrite homeserver (purge and check only), instead of
//! `homeserver_config_path`:
//!
//! ```yaml
//! dendrite_config: /etc/dendrite/dendrite.yaml
//! dendrite_working_dir: /var/lib/dendrite   # what its relative paths are relative to
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// Keys that hold secrets: refused in this file, with a pointer to where
/// they belong.
const SECRET_KEYS: &[&str] =
    &["access_key_id", "secret_access_key", "session_token", "sse_customer_key", "swift_key", "password"];

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default, deserialize_with = "one_or_many")]
    pub homeserver_config_path: Option<Vec<PathBuf>>,
    pub media_store_path: Option<PathBuf>,
    /// A Dendrite homeserver's dendrite.yaml (`purge` and `check`).
    pub dendrite_config: Option<PathBuf>,
    /// The folder Dendrite runs in: its relative paths start there.
    pub dendrite_working_dir: Option<PathBuf>,
    pub cache_db: Option<PathBuf>,
    /// `migrate`: offload media not accessed for this long (s3_media_upload units).
    pub duration: Option<String>,
    pub concurrency: Option<u16>,
    pub bucket: Option<String>,
    pub region_name: Option<String>,
    pub endpoint_url: Option<String>,
    pub prefix: Option<String>,
    pub storage_class: Option<String>,
    pub sse_customer_algo: Option<String>,
    /// The bucket is a Swift container (implied by the other swift_ keys,
    /// and by a Swift provider in homeserver.yaml without an S3 one).
    pub swift: Option<bool>,
    /// A cloud of clouds.yaml to log in to Swift with.
    pub swift_cloud: Option<String>,
    /// TempAuth without clouds.yaml (the key: MEDIA_OFFLOAD_SWIFT_KEY or
    /// the systemd credential swift_key).
    pub swift_auth_url: Option<String>,
    pub swift_user: Option<String>,
    /// Files larger than this go up as Swift SLOs (bytes, or 1GiB, 500M).
    pub swift_segment_size: Option<String>,
    /// `migrate`: leave files modified less than this long ago.
    pub settle_time: Option<String>,
    /// `migrate`: allow GLACIER / DEEP_ARCHIVE although Synapse cannot read
    /// objects of those classes back without a restore.
    pub allow_archive_storage_class: Option<bool>,
    #[serde(default)]
    pub purge: PurgeConfig,
    #[serde(default)]
    pub check: CheckConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeConfig {
    pub remote_older_than: Option<String>,
    pub local_older_than: Option<String>,
    pub size_gt: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    pub grace_period: Option<String>,
}

/// A path or a list of paths.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<PathBuf>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(PathBuf),
        Many(Vec<PathBuf>),
    }
    Ok(Option::<OneOrMany>::deserialize(d)?.map(|v| match v {
        OneOrMany::One(p) => vec![p],
        OneOrMany::Many(v) => v,
    }))
}

impl FileConfig {
    /// Read and validate the file; every error names it (and serde's the
    /// line and key).
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("could not read config file {}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        if let Ok(serde_yaml_ng::Value::Mapping(map)) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text) {
            for key in SECRET_KEYS {
                if map.contains_key(*key) {
                    bail!(
                        "{origin}: `{key}` is a secret and does not belong in this file; give it as a systemd \
                         credential named {key}, in the environment, or in homeserver.yaml"
                    );
                }
            }
        }
        serde_yaml_ng::from_str(text).map_err(|e| anyhow::anyhow!("{origin}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let text = "homeserver_config_path: /etc/hs.yaml\ncache_db: /var/lib/mo/cache.db\nduration: 30d\n\
                    concurrency: 8\nbucket: b\npurge:\n  remote_older_than: 30d\n  size_gt: 10\ncheck:\n  grace_period: 2h\n";
        let c = FileConfig::parse(text, "c.yaml").unwrap();
        assert_eq!(c.concurrency, Some(8));
        assert_eq!(c.purge.remote_older_than.as_deref(), Some("30d"));
        assert_eq!(c.purge.size_gt, Some(10));
        assert_eq!(c.check.grace_period.as_deref(), Some("2h"));
        assert_eq!(c.homeserver_config_path, Some(vec![PathBuf::from("/etc/hs.yaml")]));
        let c = FileConfig::parse("homeserver_config_path: [/etc/a.yaml, /etc/conf.d]\n", "c.yaml").unwrap();
        assert_eq!(c.homeserver_config_path.map(|v| v.len()), Some(2));
        assert_eq!(FileConfig::parse("", "c.yaml").unwrap(), FileConfig::default());
    }

    #[test]
    fn refuses_unknown_keys_and_secrets_naming_them() {
        let err = FileConfig::parse("bukket: x\n", "c.yaml").unwrap_err().to_string();
        assert!(err.contains("c.yaml") && err.contains("bukket"), "{err}");
        let err = FileConfig::parse("secret_access_key: x\n", "c.yaml").unwrap_err().to_string();
        assert!(err.contains("secret_access_key") && err.contains("credential"), "{err}");
        let err = FileConfig::parse("concurrency: many\n", "c.yaml").unwrap_err().to_string();
        assert!(err.contains("concurrency"), "{err}");
    }
}
