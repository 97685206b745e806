//! Where a Swift store's credentials come from, as the Python provider's
//! users have them:
//!
//! 1. a cloud of `clouds.yaml` (with `secure.yaml` merged in), named by
//!    `--swift-cloud`, `swift_cloud` in the config file, the Swift
//!    provider's `cloud` in homeserver.yaml or `OS_CLOUD`; searched where
//!    openstacksdk searches (`OS_CLIENT_CONFIG_FILE`, `./`,
//!    `~/.config/openstack/`, `/etc/openstack/`);
//! 2. python-swiftclient's `ST_AUTH`, `ST_USER`, `ST_KEY`;
//! 3. the config file's `swift_auth_url` and `swift_user`, with the key in
//!    `MEDIA_OFFLOAD_SWIFT_KEY` or the systemd credential `swift_key`;
//! 4. the `OS_*` variables of an openrc file: `OS_AUTH_URL` with
//!    `OS_USERNAME`/`OS_PASSWORD`/`OS_PROJECT_NAME` (and their domains), or
//!    `OS_APPLICATION_CREDENTIAL_ID`/`_SECRET`; `OS_AUTH_TYPE=v1password`
//!    for TempAuth; `OS_REGION_NAME`, `OS_INTERFACE`.
//!
//! `auth_type` (clouds.yaml) or `OS_AUTH_TYPE`: `v1password`
//! (python-swiftclient's TempAuth plugin), `password`/`v3password` (the
//! default) and `v3applicationcredential` (Keystone v3).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use serde_yaml_ng::Value;

use super::Secret;
use crate::store::StoreSettings;
use crate::store::swift::{Named, SwiftAuth, SwiftSettings, V3Method};

/// Environment variable holding the Swift key for the config file's user.
pub const SWIFT_KEY_ENV: &str = "MEDIA_OFFLOAD_SWIFT_KEY";

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The config file's own TempAuth settings, with the key found for them.
#[derive(Debug, Clone, Default)]
pub struct FileAuth {
    pub auth_url: Option<String>,
    pub user: Option<String>,
    pub key: Option<Secret>,
}

/// How to log in, and where that came from ("cloud x of /etc/openstack/clouds.yaml").
pub fn resolve_auth(cloud: Option<(String, String)>, file: &FileAuth) -> Result<(SwiftAuth, String)> {
    resolve_auth_in(cloud, file, None)
}

/// [`resolve_auth`], with a region for Keystone's catalog (the Swift
/// provider's `region_name`, `--region`), used where the cloud or
/// `OS_REGION_NAME` names none.
pub fn resolve_auth_in(
    cloud: Option<(String, String)>,
    file: &FileAuth,
    region: Option<String>,
) -> Result<(SwiftAuth, String)> {
    if let Some((name, from)) = cloud {
        return cloud_auth(&name, region).with_context(|| format!("Swift cloud {name:?} (from {from})"));
    }
    if let Some(auth_url) = env("ST_AUTH") {
        let user = env("ST_USER").ok_or_else(|| anyhow!("ST_AUTH is set but ST_USER is not"))?;
        let key = env("ST_KEY").ok_or_else(|| anyhow!("ST_AUTH is set but ST_KEY is not"))?;
        return Ok((SwiftAuth::V1 { auth_url, user, key: Secret(key) }, "ST_AUTH, ST_USER, ST_KEY".to_owned()));
    }
    if let (Some(auth_url), Some(user)) = (&file.auth_url, &file.user) {
        let key = file.key.clone().ok_or_else(|| {
            anyhow!("swift_auth_url and swift_user are set but no key: set {SWIFT_KEY_ENV} or the credential swift_key")
        })?;
        let auth = SwiftAuth::V1 { auth_url: auth_url.clone(), user: user.clone(), key };
        return Ok((auth, "config file swift_auth_url, swift_user".to_owned()));
    }
    if env("OS_AUTH_URL").is_some() {
        let source = "the OS_* environment variables".to_owned();
        let get = |key: &str| Ok(env(&format!("OS_{}", key.to_uppercase())));
        let region = env("OS_REGION_NAME").or(region);
        return Ok((auth_from(&get, env("OS_AUTH_TYPE"), region, env("OS_INTERFACE"), "OS_")?, source));
    }
    bail!(
        "no Swift credentials: set ST_AUTH, ST_USER and ST_KEY (as for python-swiftclient), name a cloud of \
         clouds.yaml (--swift-cloud, OS_CLOUD, or cloud: in the Swift provider's config), or set swift_auth_url \
         and swift_user in the config file with the key in {SWIFT_KEY_ENV}"
    )
}

/// The store settings of `upload BASE_PATH CONTAINER --swift`: the
/// credentials from `--swift-cloud`, `OS_CLOUD` or the environment.
pub fn upload_settings(args: &crate::commands::upload::Options) -> Result<StoreSettings> {
    if args.endpoint_url.is_some() {
        bail!(
            "--endpoint-url is for S3; with --swift the endpoint comes from the Swift login (ST_AUTH or clouds.yaml)"
        );
    }
    if args.sse_customer_key.is_some() || args.sse_customer_key_file.is_some() {
        bail!("SSE-C keys are for S3; Swift stores do not take them");
    }
    if args.storage_class != "STANDARD" {
        bail!("--storage-class is for S3; Swift has storage policies, chosen per container");
    }
    let cloud = match &args.swift_cloud {
        Some(c) => Some((c.clone(), "--swift-cloud".to_owned())),
        None => env("OS_CLOUD").map(|c| (c, "environment OS_CLOUD".to_owned())),
    };
    let file = FileAuth { key: env(SWIFT_KEY_ENV).map(Secret), ..Default::default() };
    let (auth, source) = resolve_auth(cloud, &file)?;
    log::info!("Swift credentials: from {source}");
    Ok(StoreSettings {
        bucket: args.bucket.clone(),
        endpoint_url: None,
        region: None,
        storage_class: "STANDARD".to_owned(),
        prefix: args.prefix.clone(),
        sse_key: None,
        sse_algorithm: "AES256".to_owned(),
        credentials: None,
        swift: Some(SwiftSettings { auth, segment_size: args.swift_segment_size, source }),
    })
}

/// Auth settings by openstacksdk's key (`auth_url`, `username`,
/// `project_domain_name`, ...), from clouds.yaml's `auth:` or OS_*.
/// `prefix` names the keys in messages (`OS_`, `clouds.x.auth.`).
fn auth_from(
    get: &dyn Fn(&str) -> Result<Option<String>>,
    auth_type: Option<String>,
    region: Option<String>,
    interface: Option<String>,
    prefix: &str,
) -> Result<SwiftAuth> {
    let upper = prefix.ends_with('_');
    let name = |key: &str| if upper { format!("{prefix}{}", key.to_uppercase()) } else { format!("{prefix}{key}") };
    let need = |key: &str| get(key)?.ok_or_else(|| anyhow!("{} is not set", name(key)));
    let auth_url = need("auth_url")?;
    let auth_type = auth_type.unwrap_or_else(|| {
        if get("application_credential_secret").ok().flatten().is_some() {
            "v3applicationcredential"
        } else {
            "password"
        }
        .to_owned()
    });
    let named = |id: &str, nm: &str, domain: &str| -> Result<Named> {
        Ok(Named {
            id: get(id)?,
            name: get(nm)?,
            domain_id: get(&format!("{domain}_id"))?.or(get("domain_id")?),
            domain_name: get(&format!("{domain}_name"))?.or(get("domain_name")?),
        })
    };
    let method = match auth_type.as_str() {
        "v1password" => {
            return Ok(SwiftAuth::V1 { auth_url, user: need("username")?, key: Secret(need("password")?) });
        }
        "password" | "v3password" => {
            let user = named("user_id", "username", "user_domain")?;
            let project = named("project_id", "project_name", "project_domain")?;
            let project = match project.id.is_none() && project.name.is_none() {
                // Keystone v2's word for a project, which openrc files still use.
                true => named("tenant_id", "tenant_name", "project_domain")?,
                false => project,
            };
            if user.id.is_none() && user.name.is_none() {
                bail!("{} is not set", name("username"));
            }
            if project.id.is_none() && project.name.is_none() {
                bail!("{} is not set (a token for Swift needs a project)", name("project_name"));
            }
            V3Method::Password { user, password: Secret(need("password")?), project }
        }
        "v3applicationcredential" => {
            let id = get("application_credential_id")?;
            let cred_name = get("application_credential_name")?;
            if id.is_none() && cred_name.is_none() {
                bail!("{} is not set", name("application_credential_id"));
            }
            let user = named("user_id", "username", "user_domain")?;
            let user = (user.id.is_some() || user.name.is_some()).then_some(user);
            V3Method::ApplicationCredential {
                id,
                name: cred_name,
                user,
                secret: Secret(need("application_credential_secret")?),
            }
        }
        other => bail!(
            "auth type {other:?} is not supported: use v1password (TempAuth), password or v3applicationcredential"
        ),
    };
    let interface = interface.unwrap_or_else(|| "public".to_owned());
    Ok(SwiftAuth::V3 { auth_url, method: Box::new(method), region, interface })
}

/// Where openstacksdk looks for `name` (`clouds` or `secure`), first
/// found wins; `OS_CLIENT_CONFIG_FILE` / `OS_CLIENT_SECURE_FILE` first.
fn search_path(name: &str, env_name: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = env(env_name).map(PathBuf::from).into_iter().collect();
    let config_home =
        env("XDG_CONFIG_HOME").map(PathBuf::from).or_else(|| env("HOME").map(|h| Path::new(&h).join(".config")));
    let mut dirs = vec![PathBuf::from(".")];
    dirs.extend(config_home.map(|c| c.join("openstack")));
    dirs.push(PathBuf::from("/etc/openstack"));
    for dir in dirs {
        for ext in ["yaml", "yml"] {
            out.push(dir.join(format!("{name}.{ext}")));
        }
    }
    out
}

fn first_file(name: &str, env_name: &str) -> Option<PathBuf> {
    search_path(name, env_name).into_iter().find(|p| p.is_file())
}

/// Merge `extra` into `base`, mappings key by key (secure.yaml into clouds.yaml).
fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Mapping(b), Value::Mapping(e)) => {
            for (k, v) in e {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, e) => *b = e,
    }
}

fn cloud_auth(name: &str, region: Option<String>) -> Result<(SwiftAuth, String)> {
    let path = first_file("clouds", "OS_CLIENT_CONFIG_FILE").ok_or_else(|| {
        anyhow!("no clouds.yaml found (looked in OS_CLIENT_CONFIG_FILE, ./, ~/.config/openstack/, /etc/openstack/)")
    })?;
    let mut doc = super::read_yaml(&path)?;
    if let Some(secure) = first_file("secure", "OS_CLIENT_SECURE_FILE") {
        crate::store::warn_if_readable_by_others(&secure);
        merge(&mut doc, super::read_yaml(&secure)?);
    }
    crate::store::warn_if_readable_by_others(&path);
    let cloud = doc
        .get("clouds")
        .and_then(|c| c.get(name))
        .ok_or_else(|| anyhow!("{} has no cloud {name:?} under clouds:", path.display()))?;
    let text = |v: Option<&Value>, key: &str| -> Result<Option<String>> {
        v.filter(|v| !v.is_null())
            .map(|v| super::scalar(v, &format!("{}: clouds.{name}.{key}", path.display())))
            .transpose()
    };
    let auth = cloud.get("auth");
    let field = |key: &str| text(auth.and_then(|a| a.get(key)), &format!("auth.{key}"));
    let auth_type = text(cloud.get("auth_type"), "auth_type")?;
    // The cloud's own region first, as openstacksdk takes it.
    let region = text(cloud.get("region_name"), "region_name")?.or(region);
    let interface = text(cloud.get("interface"), "interface")?;
    let source = format!("cloud {name} of {}", path.display());
    let prefix = format!("{}: clouds.{name}.auth.", path.display());
    Ok((auth_from(&field, auth_type, region, interface, &prefix)?, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_yaml_merges_into_the_cloud() {
        let mut doc: Value =
            serde_yaml_ng::from_str("clouds:\n  a:\n    auth_type: v1password\n    auth:\n      username: u\n")
                .unwrap();
        merge(&mut doc, serde_yaml_ng::from_str("clouds:\n  a:\n    auth:\n      password: p\n").unwrap());
        let auth = doc.get("clouds").unwrap().get("a").unwrap().get("auth").unwrap();
        assert_eq!(auth.get("username").unwrap().as_str(), Some("u"));
        assert_eq!(auth.get("password").unwrap().as_str(), Some("p"));
    }
}
