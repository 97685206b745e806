//! Configuration: where the homeserver database is (`database`), what the
//! homeserver config says about media (`homeserver`), media-offload's own
//! config file (`file`), and how they combine with flags, environment and
//! systemd credentials into the settings of one run (`settings`).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use serde_yaml_ng::Value;

pub mod copy;
pub mod database;
pub mod dendrite;
pub mod file;
pub mod homeserver;
pub mod settings;
pub mod swift;

pub use database::*;

/// A secret kept in a file (an SSE-C key file, a systemd credential): the
/// whole file but its trailing newline; empty is an error. `what` names the
/// kind of file in messages, never its content.
pub fn read_secret_file(path: &Path, what: &str) -> Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("could not read the {what} {}", path.display()))?;
    crate::store::warn_if_readable_by_others(path);
    let value = text.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        bail!("the {what} {} is empty", path.display());
    }
    Ok(value.to_owned())
}

/// Read and parse a YAML file, naming it in every error.
pub fn read_yaml(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| {
        if path.exists() {
            format!("could not read {}", path.display())
        } else {
            format!("could not find {} (and no ./database.yaml): pass --homeserver-config-path", path.display())
        }
    })?;
    serde_yaml_ng::from_str(&text).map_err(|e| anyhow!("{} is not valid YAML: {e}", path.display()))
}

pub(crate) fn as_mapping<'a>(value: &'a Value, what: &str) -> Result<BTreeMap<String, &'a Value>> {
    let Value::Mapping(map) = value else {
        bail!("{what}: expected a mapping of settings, found {}", kind_of(value));
    };
    map.iter()
        .map(|(k, v)| match k {
            Value::String(k) => Ok((k.clone(), v)),
            other => Err(anyhow!("{what}: keys must be strings, found {}", kind_of(other))),
        })
        .collect()
}

/// A scalar as text: libpq takes every value as a string (`port: 5432` and
/// `port: "5432"` are the same).
pub(crate) fn scalar(value: &Value, what: &str) -> Result<String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(if *b { "1" } else { "0" }.to_owned()),
        other => bail!("{what}: expected a string or number, found {}", kind_of(other)),
    }
}

pub(crate) fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}
