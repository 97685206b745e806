//! The two sides of `copy`: which store each names, with its own endpoint,
//! prefix, credentials and SSE-C key (never from the command line itself:
//! from a credentials file or the environment).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::{Secret, read_yaml};
use crate::store::swift::SwiftSettings;
use crate::store::{Credentials, STORAGE_CLASSES, StoreSettings, Target, parse_target};

/// One side as the command line gives it.
#[derive(Debug, Clone, Default)]
pub struct SideOptions {
    /// `media-store`, `store`, a directory, `s3:BUCKET` or `swift:CONTAINER`.
    pub spec: String,
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    pub prefix: Option<String>,
    pub sse_customer_key_file: Option<PathBuf>,
    pub credentials_file: Option<PathBuf>,
    pub swift_cloud: Option<String>,
    pub storage_class: Option<String>,
}

/// What a side is.
#[derive(Debug, Clone)]
pub enum Side {
    /// The live media store.
    MediaStore,
    /// The store the homeserver is configured with.
    Homeserver,
    /// A directory, an S3 bucket or a Swift container.
    Store(Box<StoreSettings>),
}

impl Side {
    /// `name`: `from` or `to`, for flags and environment names.
    pub fn resolve(name: &str, o: &SideOptions) -> Result<Self> {
        let spec = o.spec.trim();
        let s3_only = [
            ("endpoint-url", o.endpoint_url.is_some()),
            ("region", o.region.is_some()),
            ("sse-customer-key-file", o.sse_customer_key_file.is_some()),
            ("credentials-file", o.credentials_file.is_some()),
            ("storage-class", o.storage_class.is_some()),
        ];
        let refuse = |flags: &[(&str, bool)], what: &str| -> Result<()> {
            if let Some((flag, _)) = flags.iter().find(|(_, set)| *set) {
                bail!("--{name}-{flag} does not apply to --{name} {spec:?} ({what})");
            }
            Ok(())
        };
        let swift_flag = [("swift-cloud", o.swift_cloud.is_some())];
        let prefix_flag = [("prefix", o.prefix.is_some())];
        match spec {
            "media-store" | "store" => {
                refuse(&s3_only, "its settings come from homeserver.yaml and the config file")?;
                refuse(&swift_flag, "its settings come from homeserver.yaml and the config file")?;
                refuse(&prefix_flag, "its settings come from homeserver.yaml and the config file")?;
                return Ok(if spec == "store" { Side::Homeserver } else { Side::MediaStore });
            }
            _ => {}
        }
        if let Some(container) = spec.strip_prefix("swift:") {
            refuse(&s3_only, "a Swift container")?;
            if container.is_empty() || container.contains('/') {
                bail!("--{name} {spec:?}: expected swift:CONTAINER (the prefix goes in --{name}-prefix)");
            }
            return Ok(Side::Store(Box::new(swift_side(
                container,
                o.prefix.clone().unwrap_or_default(),
                o.swift_cloud.clone(),
            )?)));
        }
        if let Some(bucket) = spec.strip_prefix("s3:") {
            refuse(&swift_flag, "an S3 bucket")?;
            if !matches!(parse_target(bucket), Ok(Target::Bucket(_))) {
                bail!("--{name} {spec:?}: expected s3:BUCKET (the prefix goes in --{name}-prefix)");
            }
            return Ok(Side::Store(Box::new(s3_side(name, bucket, o)?)));
        }
        match parse_target(spec) {
            Ok(Target::Directory(_)) => {
                refuse(&s3_only, "a directory")?;
                refuse(&swift_flag, "a directory")?;
                refuse(&prefix_flag, "a directory")?;
                Ok(Side::Store(Box::new(StoreSettings {
                    bucket: spec.to_owned(),
                    endpoint_url: None,
                    region: None,
                    storage_class: "STANDARD".to_owned(),
                    prefix: String::new(),
                    sse_key: None,
                    sse_algorithm: "AES256".to_owned(),
                    credentials: None,
                    swift: None,
                })))
            }
            _ => bail!(
                "--{name} {spec:?}: expected media-store, store, a directory (/path, ./path, file:///path), \
                 s3:BUCKET or swift:CONTAINER"
            ),
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn s3_side(name: &str, bucket: &str, o: &SideOptions) -> Result<StoreSettings> {
    let storage_class = o.storage_class.clone().unwrap_or_else(|| "STANDARD".to_owned());
    if !STORAGE_CLASSES.contains(&storage_class.as_str()) {
        bail!("--{name}-storage-class {storage_class:?} is not one of {}", STORAGE_CLASSES.join(", "));
    }
    let sse_key = match &o.sse_customer_key_file {
        Some(path) => Some(Secret(super::read_secret_file(path, "SSE-C key file")?)),
        None => None,
    };
    let upper = name.to_uppercase();
    let (id_env, secret_env) =
        (format!("MEDIA_OFFLOAD_{upper}_ACCESS_KEY_ID"), format!("MEDIA_OFFLOAD_{upper}_SECRET_ACCESS_KEY"));
    let credentials = match &o.credentials_file {
        Some(path) => Some(credentials_file(path)?),
        None => match (env(&id_env), env(&secret_env)) {
            (Some(id), Some(secret)) => {
                log::info!("--{name} S3 credentials: from environment {id_env}");
                Some(Credentials { access_key_id: id, secret_access_key: Secret(secret), session_token: None })
            }
            (None, None) => {
                log::info!("--{name} S3 credentials: the AWS SDK's default chain (AWS_ACCESS_KEY_ID, profiles, roles)");
                None
            }
            (Some(_), None) => bail!("{id_env} is set but not {secret_env}"),
            (None, Some(_)) => bail!("{secret_env} is set but not {id_env}"),
        },
    };
    Ok(StoreSettings {
        bucket: bucket.to_owned(),
        endpoint_url: o.endpoint_url.clone(),
        region: o.region.clone(),
        storage_class,
        prefix: o.prefix.clone().unwrap_or_default(),
        sse_key,
        sse_algorithm: "AES256".to_owned(),
        credentials,
        swift: None,
    })
}

/// S3 keys from a YAML file: `access_key_id`, `secret_access_key` and
/// optionally `session_token`. Only the file is named in errors.
pub fn credentials_file(path: &Path) -> Result<Credentials> {
    crate::store::warn_if_readable_by_others(path);
    let doc = read_yaml(path)?;
    let get = |key: &str| -> Result<Option<String>> {
        match doc.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(|s| Some(s.to_owned()))
                .with_context(|| format!("{}: {key} must be a string", path.display())),
        }
    };
    let (Some(id), Some(secret)) = (get("access_key_id")?, get("secret_access_key")?) else {
        bail!("{}: expected access_key_id and secret_access_key", path.display());
    };
    log::info!("S3 credentials: from {}", path.display());
    Ok(Credentials {
        access_key_id: id,
        secret_access_key: Secret(secret),
        session_token: get("session_token")?.map(Secret),
    })
}

/// A Swift container: credentials from a clouds.yaml cloud, else as
/// python-swiftclient takes them (ST_AUTH, ST_USER, ST_KEY) or OS_*.
pub fn swift_side(container: &str, prefix: String, cloud: Option<String>) -> Result<StoreSettings> {
    let cloud = match cloud {
        Some(c) => Some((c, "the --swift-cloud flag of this side".to_owned())),
        None => env("OS_CLOUD").map(|c| (c, "environment OS_CLOUD".to_owned())),
    };
    let file = super::swift::FileAuth { key: env(super::swift::SWIFT_KEY_ENV).map(Secret), ..Default::default() };
    let (auth, source) = super::swift::resolve_auth(cloud, &file)?;
    log::info!("Swift credentials for {container}: from {source}");
    Ok(StoreSettings {
        bucket: container.to_owned(),
        endpoint_url: None,
        region: None,
        storage_class: "STANDARD".to_owned(),
        prefix,
        sse_key: None,
        sse_algorithm: "AES256".to_owned(),
        credentials: None,
        swift: Some(SwiftSettings { auth, segment_size: None, source }),
    })
}
