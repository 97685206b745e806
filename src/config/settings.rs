//! The settings of one `migrate`, `purge` or `check` run, each taken from
//! the first source that has it:
//!
//! 1. a command-line flag,
//! 2. an environment variable (`MEDIA_OFFLOAD_<KEY>`; secrets: `AWS_*` and
//!    `MEDIA_OFFLOAD_SSE_CUSTOMER_KEY`),
//! 3. a systemd credential (`$CREDENTIALS_DIRECTORY/<key>`, secrets only),
//! 4. media-offload's config file (`--config`, never secrets),
//! 5. homeserver.yaml (`media_store_path`, the S3 provider's `config`),
//! 6. a default.
//!
//! With `-v` every setting is logged with its source (secrets as "set").

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, bail};

use super::file::FileConfig;
use super::homeserver::{HomeserverConfig, HomeserverMedia};
use super::{DbConfig, Secret, locate_database, read_secret_file};
use crate::store::STORAGE_CLASSES;
use crate::store::{Credentials, StoreSettings};

/// Environment variable holding the SSE-C key.
pub const SSE_KEY_ENV: &str = "MEDIA_OFFLOAD_SSE_CUSTOMER_KEY";

/// The config file as loaded, with its path for messages.
#[derive(Debug, Clone, Default)]
pub struct LoadedFile {
    pub path: Option<PathBuf>,
    pub config: FileConfig,
}

impl LoadedFile {
    pub fn load(path: Option<&Path>) -> Result<Self> {
        match path {
            None => Ok(Self::default()),
            Some(p) => Ok(Self { path: Some(p.to_owned()), config: FileConfig::load(p)? }),
        }
    }

    /// A setting that Synapse does not hold, with its source: the flag,
    /// else `MEDIA_OFFLOAD_<KEY>`, else `file_value` (this file's `key`).
    pub fn setting(&self, key: &str, flag: Option<String>, file_value: Option<String>) -> Option<(String, String)> {
        let env_name = format!("MEDIA_OFFLOAD_{}", key.to_uppercase());
        flag.map(|v| (v, format!("--{}", key.replace('_', "-"))))
            .or_else(|| env(&env_name).map(|v| (v, format!("environment {env_name}"))))
            .or_else(|| file_value.map(|v| (v, self.source(key))))
    }

    /// "config.yaml: key", for messages.
    pub fn source(&self, key: &str) -> String {
        let name = self.path.as_ref().map_or_else(|| "config file".to_owned(), |p| p.display().to_string());
        format!("{name}: {key}")
    }
}

/// Where the homeserver, its media and the store are, as a command line
/// gives them (every value optional: the rest comes from the environment,
/// the config file and homeserver.yaml).
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    pub homeserver_config_path: Option<Vec<PathBuf>>,
    pub media_store_path: Option<PathBuf>,
    pub bucket: Option<String>,
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    pub prefix: Option<String>,
    pub storage_class: Option<String>,
    pub sse_customer_key_file: Option<PathBuf>,
    pub sse_customer_algo: Option<String>,
    pub concurrency: Option<u16>,
    /// The bucket is a Swift container.
    pub swift: bool,
    pub swift_cloud: Option<String>,
    pub swift_segment_size: Option<u64>,
}

/// Everything a run needs to find the homeserver, its media and the store.
#[derive(Debug)]
pub struct Settings {
    /// The homeserver config files read, in order.
    pub homeserver_config_paths: Vec<PathBuf>,
    pub homeserver: HomeserverMedia,
    pub database: DbConfig,
    pub media_store_path: PathBuf,
    /// None when no bucket is configured anywhere.
    pub store: Option<StoreSettings>,
    pub concurrency: usize,
}

struct Resolver<'a> {
    file: &'a LoadedFile,
    hs: &'a HomeserverMedia,
    credentials_dir: Option<PathBuf>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Resolver<'_> {
    /// A plain setting: flag, `MEDIA_OFFLOAD_<KEY>`, config file, homeserver.yaml.
    fn pick(
        &self,
        key: &str,
        flag: Option<String>,
        file: Option<String>,
        hs_key: Option<&str>,
    ) -> Option<(String, String)> {
        let found = self.file.setting(key, flag, file).or_else(|| hs_key.and_then(|k| self.hs.provider_setting(k)));
        if let Some((value, source)) = &found {
            log::debug!("{key} = {value:?} (from {source})");
        }
        found
    }

    /// A secret: environment, systemd credential, homeserver.yaml.
    fn secret(&self, key: &str, env_name: &str) -> Result<Option<(Secret, String)>> {
        let found = if let Some(v) = env(env_name) {
            Some((v, format!("environment {env_name}")))
        } else if let Some(path) = self.credentials_dir.as_ref().map(|d| d.join(key)).filter(|p| p.exists()) {
            Some((read_secret_file(&path, "credential")?, format!("credential {}", path.display())))
        } else {
            self.hs.provider_setting(key)
        };
        Ok(found.map(|(value, source)| {
            log::info!("{key} is set (from {source})");
            (Secret(value), source)
        }))
    }
}

/// The homeserver config paths for a run: `--homeserver-config-path`
/// (repeatable), else `MEDIA_OFFLOAD_HOMESERVER_CONFIG_PATH`, else the
/// config file's `homeserver_config_path` (a path or a list), else
/// `homeserver.yaml`. Returns them with where they came from.
pub fn homeserver_config_paths(flag: Option<&[PathBuf]>, file: &LoadedFile) -> (Vec<PathBuf>, String) {
    if let Some(paths) = flag.filter(|p| !p.is_empty()) {
        return (paths.to_vec(), "--homeserver-config-path".to_owned());
    }
    if let Some(v) = env("MEDIA_OFFLOAD_HOMESERVER_CONFIG_PATH") {
        return (vec![PathBuf::from(v)], "environment MEDIA_OFFLOAD_HOMESERVER_CONFIG_PATH".to_owned());
    }
    if let Some(paths) = file.config.homeserver_config_path.clone().filter(|p| !p.is_empty()) {
        return (paths, file.source("homeserver_config_path"));
    }
    (vec![PathBuf::from("homeserver.yaml")], "default".to_owned())
}

/// Read the homeserver config at `paths`; none of them existing is not an
/// error here (flags may give everything), only where a setting is needed.
pub fn read_homeserver_config(paths: &[PathBuf], source: &str) -> Result<HomeserverConfig> {
    if paths.iter().any(|p| p.exists()) {
        HomeserverConfig::read(paths)
    } else {
        let description = paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" + ");
        log::debug!("{description} ({source}) does not exist");
        Ok(HomeserverConfig::missing(&description))
    }
}

impl Settings {
    pub fn resolve(flags: &StoreOptions, file: &LoadedFile) -> Result<Self> {
        let cfg = &file.config;
        let (paths, paths_source) = homeserver_config_paths(flags.homeserver_config_path.as_deref(), file);
        let config = read_homeserver_config(&paths, &paths_source)?;
        let homeserver = HomeserverMedia::from_config(&config)?;
        let (database, db_source) = locate_database(&config)?;
        log::info!("homeserver database: {} (from {db_source})", database.describe());

        let r = Resolver {
            file,
            hs: &homeserver,
            credentials_dir: std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from),
        };
        let media_store_path = r
            .pick(
                "media_store_path",
                flags.media_store_path.as_ref().map(|p| p.display().to_string()),
                cfg.media_store_path.as_ref().map(|p| p.display().to_string()),
                None,
            )
            .or_else(|| {
                let path = homeserver.media_store_path.as_ref()?.display().to_string();
                Some((path, format!("{}: media_store_path", homeserver.media_store_source)))
            })
            .map(|(p, source)| {
                log::info!("media store: {p} (from {source})");
                PathBuf::from(p)
            })
            .ok_or_else(|| {
                anyhow!(
                    "no media store path: {} has no media_store_path; pass --media-store-path or set media_store_path in the config file",
                    homeserver.origin
                )
            })?;

        let concurrency = match r.pick(
            "concurrency",
            flags.concurrency.map(|c| c.to_string()),
            cfg.concurrency.map(|c| c.to_string()),
            None,
        ) {
            None => 16,
            Some((text, source)) => match text.parse::<usize>() {
                Ok(n) if (1..=512).contains(&n) => n,
                _ => bail!("concurrency from {source}: expected a number from 1 to 512, found {text:?}"),
            },
        };

        if let Some(swift) = Self::swift(&r, flags, cfg)? {
            return Ok(Self {
                homeserver_config_paths: config.files.clone(),
                homeserver,
                database,
                media_store_path,
                store: swift,
                concurrency,
            });
        }
        let store = match r.pick("bucket", flags.bucket.clone(), cfg.bucket.clone(), Some("bucket")) {
            None => {
                log::debug!("no bucket configured: no object store");
                None
            }
            Some((bucket, source)) => {
                log::info!("object store: {bucket} (from {source})");
                Some(Self::store(&r, flags, cfg, bucket)?)
            }
        };
        Ok(Self {
            homeserver_config_paths: config.files.clone(),
            homeserver,
            database,
            media_store_path,
            store,
            concurrency,
        })
    }

    fn store(r: &Resolver<'_>, flags: &StoreOptions, cfg: &FileConfig, bucket: String) -> Result<StoreSettings> {
        let region = r.pick("region_name", flags.region.clone(), cfg.region_name.clone(), Some("region_name"));
        let endpoint_url =
            r.pick("endpoint_url", flags.endpoint_url.clone(), cfg.endpoint_url.clone(), Some("endpoint_url"));
        let prefix = r.pick("prefix", flags.prefix.clone(), cfg.prefix.clone(), Some("prefix"));
        let class =
            r.pick("storage_class", flags.storage_class.clone(), cfg.storage_class.clone(), Some("storage_class"));
        // Where each store setting came from, at INFO: a wrong bucket or
        // prefix is the first thing to rule out.
        for (key, found) in
            [("endpoint_url", &endpoint_url), ("region", &region), ("prefix", &prefix), ("storage_class", &class)]
        {
            if let Some((value, source)) = found {
                log::info!("object store {key}: {value} (from {source})");
            }
        }
        let (region, endpoint_url) = (region.map(|(v, _)| v), endpoint_url.map(|(v, _)| v));
        let prefix = prefix.map(|(v, _)| v).unwrap_or_default();
        let storage_class = match class {
            None => "STANDARD".to_owned(),
            Some((class, _)) if STORAGE_CLASSES.contains(&class.as_str()) => class,
            Some((class, source)) => {
                bail!("storage_class from {source}: {class:?} is not one of {}", STORAGE_CLASSES.join(", "))
            }
        };
        let algorithm = r
            .pick(
                "sse_customer_algo",
                flags.sse_customer_algo.clone(),
                cfg.sse_customer_algo.clone(),
                Some("sse_customer_algo"),
            )
            .map_or_else(|| "AES256".to_owned(), |(v, _)| v);
        let sse_key = match &flags.sse_customer_key_file {
            Some(path) => Some(Secret(read_secret_file(path, "SSE-C key file")?)),
            None => r.secret("sse_customer_key", SSE_KEY_ENV)?.map(|(s, _)| s),
        };
        let key_id = r.secret("access_key_id", "AWS_ACCESS_KEY_ID")?;
        let secret_key = r.secret("secret_access_key", "AWS_SECRET_ACCESS_KEY")?;
        let token = r.secret("session_token", "AWS_SESSION_TOKEN")?;
        let credentials = match (key_id, secret_key) {
            (Some((id, _)), Some((secret, _))) => Some(Credentials {
                access_key_id: id.0,
                secret_access_key: secret,
                session_token: token.map(|(t, _)| t),
            }),
            (None, None) => {
                log::debug!("no S3 access key configured: using the AWS SDK's default credential chain");
                None
            }
            (Some((_, from)), None) => bail!("an S3 access key id is set (from {from}) but no secret_access_key"),
            (None, Some((_, from))) => bail!("an S3 secret_access_key is set (from {from}) but no access_key_id"),
        };
        Ok(StoreSettings {
            bucket,
            endpoint_url,
            region,
            storage_class,
            prefix,
            sse_key,
            sse_algorithm: algorithm,
            credentials,
            swift: None,
        })
    }

    /// A Swift container, if the settings ask for Swift: a flag, the config
    /// file's swift keys, or a Swift provider in homeserver.yaml (and no S3
    /// one). `Ok(None)`: not Swift.
    fn swift(r: &Resolver<'_>, flags: &StoreOptions, cfg: &FileConfig) -> Result<Option<Option<StoreSettings>>> {
        let hs_swift = r.hs.swift_provider.is_some() && r.hs.s3_provider.is_none();
        let asked = flags.swift
            || flags.swift_cloud.is_some()
            || cfg.swift == Some(true)
            || cfg.swift_cloud.is_some()
            || env("MEDIA_OFFLOAD_SWIFT").is_some_and(|v| v == "1" || v == "true");
        if cfg.swift == Some(false) || !(asked || hs_swift) {
            return Ok(None);
        }
        let container = r
            .file
            .setting("bucket", flags.bucket.clone(), cfg.bucket.clone())
            .or_else(|| r.hs.swift_setting("container"));
        let Some((container, source)) = container else {
            log::debug!("Swift, but no container configured: no object store");
            return Ok(Some(None));
        };
        log::info!("object store: Swift container {container} (from {source})");
        let prefix = r.pick("prefix", flags.prefix.clone(), cfg.prefix.clone(), None);
        if let Some((value, source)) = &prefix {
            log::info!("object store prefix: {value} (from {source})");
        }
        let cloud = r
            .file
            .setting("swift_cloud", flags.swift_cloud.clone(), cfg.swift_cloud.clone())
            .or_else(|| r.hs.swift_setting("cloud"))
            .or_else(|| env("OS_CLOUD").map(|c| (c, "environment OS_CLOUD".to_owned())));
        let segment_size = match (flags.swift_segment_size, &cfg.swift_segment_size) {
            (Some(n), _) => Some(n),
            (None, Some(text)) => Some(
                crate::size::parse_size(text).map_err(|e| anyhow!("{}: {e}", r.file.source("swift_segment_size")))?,
            ),
            (None, None) => None,
        };
        let file_auth = super::swift::FileAuth {
            auth_url: cfg.swift_auth_url.clone(),
            user: cfg.swift_user.clone(),
            key: r.secret("swift_key", super::swift::SWIFT_KEY_ENV)?.map(|(s, _)| s),
        };
        let region = r
            .file
            .setting("region_name", flags.region.clone(), cfg.region_name.clone())
            .or_else(|| r.hs.swift_setting("region_name"))
            .map(|(v, _)| v);
        let (auth, auth_source) = super::swift::resolve_auth_in(cloud, &file_auth, region)?;
        log::info!("Swift credentials: from {auth_source}");
        Ok(Some(Some(StoreSettings {
            bucket: container,
            endpoint_url: None,
            region: None,
            storage_class: "STANDARD".to_owned(),
            prefix: prefix.map(|(v, _)| v).unwrap_or_default(),
            sse_key: None,
            sse_algorithm: "AES256".to_owned(),
            credentials: None,
            swift: Some(crate::store::swift::SwiftSettings { auth, segment_size, source: auth_source }),
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs() -> HomeserverMedia {
        let doc = serde_yaml_ng::from_str(
            "media_storage_providers:\n- module: s3_storage_provider.S3StorageProviderBackend\n  config:\n    bucket: from-hs\n    prefix: hs/\n",
        )
        .unwrap();
        HomeserverMedia::from_yaml(&doc, "hs.yaml").unwrap()
    }

    #[test]
    fn flag_beats_config_file_beats_homeserver_yaml() {
        let hs = hs();
        let file = LoadedFile {
            path: Some("mo.yaml".into()),
            config: FileConfig { bucket: Some("from-file".into()), ..Default::default() },
        };
        let r = Resolver { file: &file, hs: &hs, credentials_dir: None };
        assert_eq!(
            r.pick("bucket", Some("from-flag".into()), Some("from-file".into()), Some("bucket")).unwrap(),
            ("from-flag".into(), "--bucket".into())
        );
        assert_eq!(
            r.pick("bucket", None, Some("from-file".into()), Some("bucket")).unwrap(),
            ("from-file".into(), "mo.yaml: bucket".into())
        );
        let (value, source) = r.pick("prefix", None, None, Some("prefix")).unwrap();
        assert_eq!((value.as_str(), source.as_str()), ("hs/", "hs.yaml: media_storage_providers[0].config.prefix"));
        assert_eq!(r.pick("region_name", None, None, Some("region_name")), None);
    }

    #[test]
    fn secrets_come_from_credential_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret_access_key"), "s3cr3t\n").unwrap();
        let (hs, file) = (hs(), LoadedFile::default());
        let r = Resolver { file: &file, hs: &hs, credentials_dir: Some(dir.path().to_owned()) };
        let (secret, source) = r.secret("secret_access_key", "MEDIA_OFFLOAD_TEST_UNSET_VARIABLE").unwrap().unwrap();
        assert_eq!(secret, Secret("s3cr3t".into()));
        assert!(source.starts_with("credential "), "{source}");
        assert!(r.secret("session_token", "MEDIA_OFFLOAD_TEST_UNSET_VARIABLE").unwrap().is_none());
    }
}
