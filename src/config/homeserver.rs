//! Synapse's configuration, read the way Synapse reads it (several config
//! paths, folders of `*.yaml` files, merged in Synapse's order), and what
//! it says about media: where the media store is, the server's name, the
//! `media_retention` policy, and the settings of the
//! `s3_storage_provider.S3StorageProviderBackend` and
//! `swift_storage_provider.SwiftStorageProviderBackend` entries in
//! `media_storage_providers`, so `migrate`, `purge` and `check` need no
//! second copy of them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use serde_yaml_ng::Value;

use super::{as_mapping, kind_of, read_yaml, scalar};
use crate::duration::parse_synapse_duration;

/// Synapse's configuration files, shallowly merged as Synapse merges them
/// (`synapse/config/_base.py`: `find_config_files`, `read_config_files`):
/// each config path is a file, or a folder whose `*.yaml` files are read in
/// sorted order; a later file's top-level key replaces an earlier one's.
/// Every top-level key remembers the file it came from.
#[derive(Debug, Clone, Default)]
pub struct HomeserverConfig {
    /// The files read, in order.
    pub files: Vec<PathBuf>,
    /// The config paths as given, for messages ("a.yaml + conf.d/").
    pub description: String,
    merged: serde_yaml_ng::Mapping,
    sources: BTreeMap<String, PathBuf>,
}

impl HomeserverConfig {
    /// Read the config paths. A single file with a `conf.d/` folder beside
    /// it (Debian's matrix-synapse package starts Synapse with
    /// `--config-path=/etc/matrix-synapse/homeserver.yaml
    /// --config-path=/etc/matrix-synapse/conf.d/`) is read with that folder,
    /// as Synapse reads it there; give several paths to choose exactly.
    pub fn read(paths: &[PathBuf]) -> Result<Self> {
        let mut paths = paths.to_vec();
        if let [only] = paths.as_slice()
            && only.is_file()
            && let Some(conf_d) = only.parent().map(|p| p.join("conf.d")).filter(|d| d.is_dir())
        {
            log::info!(
                "reading {} too, as Debian's matrix-synapse package starts Synapse with it \
                 (give --homeserver-config-path once per path to choose the files exactly)",
                conf_d.display()
            );
            paths.push(conf_d);
        }
        let description = paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" + ");
        let mut config = Self { description, ..Default::default() };
        for file in find_config_files(&paths)? {
            let doc = read_yaml(&file)?;
            let Value::Mapping(map) = doc else {
                // As Synapse: "is empty or doesn't parse into a key-value map. IGNORING."
                log::warn!("{} is empty or not a mapping of settings; ignored, as Synapse ignores it", file.display());
                continue;
            };
            for (key, value) in map {
                if let Value::String(name) = &key {
                    config.sources.insert(name.clone(), file.clone());
                }
                config.merged.insert(key, value);
            }
            config.files.push(file);
        }
        Ok(config)
    }

    /// No config at all (the path does not exist): every lookup finds nothing.
    pub fn missing(description: &str) -> Self {
        Self { description: description.to_owned(), ..Default::default() }
    }

    /// The merged configuration, as one mapping.
    pub fn merged(&self) -> Value {
        Value::Mapping(self.merged.clone())
    }

    /// A top-level setting.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.merged.get(key)
    }

    /// The file a top-level key came from (for messages), else the paths.
    pub fn source(&self, key: &str) -> String {
        self.sources.get(key).map_or_else(|| self.description.clone(), |p| p.display().to_string())
    }

    /// The folder of the file that set `key`: Synapse takes relative paths
    /// from its working directory, which is usually that folder.
    pub fn folder_of(&self, key: &str) -> PathBuf {
        let file = self.sources.get(key).cloned().unwrap_or_default();
        file.parent().map(Path::to_owned).unwrap_or_default()
    }
}

/// Synapse's `find_config_files`: a file as it is; a folder's regular
/// `*.yaml` files (following symlinks, as `os.path.isfile` does), sorted.
fn find_config_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        let entries =
            std::fs::read_dir(path).map_err(|e| anyhow!("could not read the config folder {}: {e}", path.display()))?;
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| anyhow!("could not read the config folder {}: {e}", path.display()))?;
            let p = entry.path();
            if !p.is_file() {
                log::debug!("{}: not a file; ignored, as Synapse ignores it", p.display());
            } else if !entry.file_name().to_string_lossy().ends_with(".yaml") {
                log::debug!("{}: does not end in .yaml; ignored, as Synapse ignores it", p.display());
            } else {
                found.push(p);
            }
        }
        // Python sorts the joined paths as strings (by code point).
        found.sort_by(|a, b| a.to_string_lossy().cmp(&b.to_string_lossy()));
        files.extend(found);
    }
    Ok(files)
}

/// The module path Synapse loads the S3 provider by.
pub const S3_PROVIDER_MODULE: &str = "s3_storage_provider.S3StorageProviderBackend";

/// The module path Synapse loads the Swift provider by.
pub const SWIFT_PROVIDER_MODULE: &str = "swift_storage_provider.SwiftStorageProviderBackend";

/// Keys of the Swift provider's `config` section that media-offload uses.
pub const SWIFT_PROVIDER_KEYS: &[&str] = &["container", "cloud", "region_name"];

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
    /// Where the config was read from, for messages.
    pub origin: String,
    /// The file that set `media_store_path`, and `media_storage_providers`.
    pub media_store_source: String,
    pub providers_source: String,
    pub server_name: Option<String>,
    pub media_store_path: Option<PathBuf>,
    pub local_media_lifetime: Option<Duration>,
    pub remote_media_lifetime: Option<Duration>,
    /// The S3 provider's settings by key, and the YAML path of its entry
    /// (`media_storage_providers[1].config`).
    pub s3_provider: Option<(BTreeMap<String, String>, String)>,
    /// The same for the Swift provider.
    pub swift_provider: Option<(BTreeMap<String, String>, String)>,
}

impl HomeserverMedia {
    /// The media parts of a merged config; messages name the file each
    /// setting came from.
    pub fn from_config(config: &HomeserverConfig) -> Result<Self> {
        let mut out = Self::from_yaml_with(&config.merged(), &config.description, &|key| config.source(key))?;
        if let Some(relative) = out.media_store_path.as_ref().filter(|p| p.is_relative()) {
            // Synapse resolves a relative path against its working
            // directory, usually the folder of its config.
            out.media_store_path = Some(config.folder_of("media_store_path").join(relative));
        }
        Ok(out)
    }

    /// One config document (tests, and a single file).
    pub fn from_yaml(doc: &Value, origin: &str) -> Result<Self> {
        Self::from_yaml_with(doc, origin, &|_| origin.to_owned())
    }

    fn from_yaml_with(doc: &Value, origin: &str, source: &dyn Fn(&str) -> String) -> Result<Self> {
        let map = as_mapping(doc, origin)?;
        let text = |key: &str| -> Result<Option<String>> {
            match map.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => scalar(v, &format!("{}: {key}", source(key))).map(Some),
            }
        };
        let mut out = Self {
            origin: origin.to_owned(),
            media_store_source: source("media_store_path"),
            providers_source: source("media_storage_providers"),
            server_name: text("server_name")?,
            media_store_path: text("media_store_path")?.map(PathBuf::from),
            ..Default::default()
        };
        if let Some(retention) = map.get("media_retention").filter(|v| !v.is_null()) {
            let field = format!("{}: media_retention", source("media_retention"));
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
        let providers = map.get("media_storage_providers").copied();
        out.s3_provider = provider(providers, &out.providers_source, S3_PROVIDER_MODULE, PROVIDER_KEYS)?;
        out.swift_provider = provider(providers, &out.providers_source, SWIFT_PROVIDER_MODULE, SWIFT_PROVIDER_KEYS)?;
        Ok(out)
    }

    /// A provider setting by key, with the YAML path it came from.
    pub fn provider_setting(&self, key: &str) -> Option<(String, String)> {
        let (settings, path) = self.s3_provider.as_ref()?;
        settings.get(key).map(|v| (v.clone(), format!("{}: {path}.{key}", self.providers_source)))
    }

    /// A Swift provider setting by key, with the YAML path it came from.
    pub fn swift_setting(&self, key: &str) -> Option<(String, String)> {
        let (settings, path) = self.swift_provider.as_ref()?;
        settings.get(key).map(|v| (v.clone(), format!("{}: {path}.{key}", self.providers_source)))
    }
}

type Provider = Option<(BTreeMap<String, String>, String)>;

fn provider(list: Option<&Value>, origin: &str, module_path: &str, keys: &[&str]) -> Result<Provider> {
    let Some(list) = list.filter(|v| !v.is_null()) else { return Ok(None) };
    let Value::Sequence(entries) = list else {
        bail!("{origin}: media_storage_providers: expected a list, found {}", kind_of(list));
    };
    let mut found = None;
    for (i, entry) in entries.iter().enumerate() {
        let field = format!("media_storage_providers[{i}]");
        let entry = as_mapping(entry, &format!("{origin}: {field}"))?;
        let module = entry.get("module").and_then(|m| m.as_str()).unwrap_or_default();
        if module != module_path {
            continue;
        }
        if found.is_some() {
            log::warn!("{origin}: more than one {module_path} entry; using the first");
            break;
        }
        let path = format!("{field}.config");
        let config = match entry.get("config") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(c) => as_mapping(c, &format!("{origin}: {path}"))?,
        };
        let mut settings = BTreeMap::new();
        for key in keys {
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
    fn reads_the_swift_provider() {
        let doc: Value = serde_yaml_ng::from_str(
            "media_storage_providers:\n- module: swift_storage_provider.SwiftStorageProviderBackend\n  store_local: true\n  config:\n    cloud: mycloud\n    container: media\n    region_name: RegionOne\n    threadpool_size: 20\n",
        )
        .unwrap();
        let hs = HomeserverMedia::from_yaml(&doc, "hs.yaml").unwrap();
        assert!(hs.s3_provider.is_none());
        assert_eq!(hs.swift_setting("container").unwrap().0, "media");
        assert_eq!(hs.swift_setting("cloud").unwrap().1, "hs.yaml: media_storage_providers[0].config.cloud");
        assert_eq!(hs.swift_setting("region_name").unwrap().0, "RegionOne");
    }

    #[test]
    fn no_provider_no_retention_is_fine() {
        let doc: Value = serde_yaml_ng::from_str("server_name: x\nmedia_storage_providers: []\n").unwrap();
        let hs = HomeserverMedia::from_yaml(&doc, "hs.yaml").unwrap();
        assert!(hs.s3_provider.is_none() && hs.local_media_lifetime.is_none());
    }

    #[test]
    fn config_paths_merge_as_synapse_merges_them() {
        let dir = tempfile::tempdir().unwrap();
        let hs = dir.path().join("homeserver.yaml");
        std::fs::write(
            &hs,
            "server_name: a\nmedia_store_path: media\ndatabase: {name: sqlite3, args: {database: x.db}}\n",
        )
        .unwrap();
        let conf_d = dir.path().join("conf.d");
        std::fs::create_dir(&conf_d).unwrap();
        std::fs::write(conf_d.join("20-db.yaml"), "database: {name: psycopg2, args: {dbname: synapse}}\n").unwrap();
        std::fs::write(conf_d.join("10-media.yaml"), "media_store_path: /srv/media\n").unwrap();
        std::fs::write(conf_d.join("30-empty.yaml"), "").unwrap();
        std::fs::write(conf_d.join("notes.txt"), "database: nonsense\n").unwrap();
        // Given alone, the file brings its conf.d (Debian's layout).
        for paths in [vec![hs.clone()], vec![hs.clone(), conf_d.clone()]] {
            let config = HomeserverConfig::read(&paths).unwrap();
            assert_eq!(config.files.len(), 3, "{:?}", config.files);
            assert_eq!(config.source("database"), conf_d.join("20-db.yaml").display().to_string());
            assert_eq!(config.source("server_name"), hs.display().to_string());
            let media = HomeserverMedia::from_config(&config).unwrap();
            assert_eq!(media.media_store_path, Some(PathBuf::from("/srv/media")));
            assert_eq!(media.media_store_source, conf_d.join("10-media.yaml").display().to_string());
        }
        // Without conf.d, a relative media_store_path is taken from the file's folder.
        std::fs::remove_dir_all(&conf_d).unwrap();
        let media = HomeserverMedia::from_config(&HomeserverConfig::read(&[hs]).unwrap()).unwrap();
        assert_eq!(media.media_store_path, Some(dir.path().join("media")));
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
