//! Dendrite's configuration (dendrite.yaml), read as Dendrite reads it
//! (`setup/config`): the server's names, the media folder and the three
//! databases media-offload needs.
//!
//! * `media_api.base_path`: the media store;
//! * `media_api.database.connection_string`, else
//!   `global.database.connection_string`: the media rows;
//! * `user_api.account_database` (profiles) and `sync_api.database` (room
//!   state), each falling back to the global database: the avatars;
//! * `global.server_name` and `global.virtual_hosts[].server_name`: what
//!   is local.
//!
//! `file:` is SQLite (`file:name.db` or `file:///path`), anything else a
//! PostgreSQL URI (`postgres://user:password@host:port/db?sslmode=...`) or
//! key=value string. Dendrite resolves relative paths against its working
//! directory, which is not this process's and not the config file's folder:
//! a relative path needs `--dendrite-working-dir`.

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, bail};
use serde_yaml_ng::Value;

use super::database::{apply_dsn, set_keyword};
use super::settings::LoadedFile;
use super::{DbConfig, PgSettings, read_yaml};

/// Where a Dendrite homeserver is, as a command line gives it.
#[derive(Debug, Clone, Default)]
pub struct DendriteOptions {
    pub config: Option<PathBuf>,
    pub working_dir: Option<PathBuf>,
}

/// What media-offload needs of a Dendrite homeserver.
#[derive(Debug, Clone, PartialEq)]
pub struct DendriteSettings {
    pub config: PathBuf,
    /// `global.server_name` and every virtual host's: the local origins.
    pub server_names: Vec<String>,
    pub base_path: PathBuf,
    pub media_db: DbConfig,
    pub accounts_db: DbConfig,
    pub sync_db: DbConfig,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl DendriteSettings {
    /// The Dendrite homeserver of this run, if one is given: the flag,
    /// else `MEDIA_OFFLOAD_DENDRITE_CONFIG`, else `dendrite_config` in the
    /// config file (the working directory likewise).
    pub fn resolve(opts: &DendriteOptions, file: &LoadedFile) -> Result<Option<Self>> {
        let Some(config) = configured(opts, file) else { return Ok(None) };
        let working_dir = opts
            .working_dir
            .clone()
            .or_else(|| env("MEDIA_OFFLOAD_DENDRITE_WORKING_DIR").map(PathBuf::from))
            .or_else(|| file.config.dendrite_working_dir.clone());
        let settings = Self::read(&config, working_dir.as_deref())?;
        log::info!(
            "Dendrite homeserver {} from {}: media in {}, {}",
            settings.server_names.join(", "),
            config.display(),
            settings.base_path.display(),
            settings.media_db.describe()
        );
        Ok(Some(settings))
    }

    /// Read dendrite.yaml at `path`; relative paths resolve against `working_dir`.
    pub fn read(path: &Path, working_dir: Option<&Path>) -> Result<Self> {
        let doc = read_yaml(path)?;
        Self::from_yaml(&doc, &path.display().to_string(), working_dir).map(|mut s| {
            s.config = path.to_owned();
            s
        })
    }

    pub fn from_yaml(doc: &Value, origin: &str, working_dir: Option<&Path>) -> Result<Self> {
        let text = |keys: &[&str]| -> Result<Option<String>> {
            let mut at = doc;
            for key in keys {
                match at.get(*key) {
                    Some(v) => at = v,
                    None => return Ok(None),
                }
            }
            match at {
                Value::Null => Ok(None),
                Value::String(s) if s.is_empty() => Ok(None),
                Value::String(s) => Ok(Some(s.clone())),
                other => bail!("{origin}: {}: expected a string, found {}", keys.join("."), super::kind_of(other)),
            }
        };
        let server_name = text(&["global", "server_name"])?
            .ok_or_else(|| anyhow!("{origin}: global.server_name is missing (is this a Dendrite config?)"))?;
        let mut server_names = vec![server_name];
        if let Some(Value::Sequence(hosts)) = doc.get("global").and_then(|g| g.get("virtual_hosts")) {
            for host in hosts {
                if let Some(name) = host.get("server_name").and_then(Value::as_str) {
                    server_names.push(name.to_owned());
                }
            }
        }
        let resolve = |key: &str, p: &str| -> Result<PathBuf> {
            let p = Path::new(p);
            if p.is_absolute() {
                return Ok(p.to_owned());
            }
            let Some(dir) = working_dir else {
                bail!(
                    "{origin}: {key} is the relative path {:?}, which Dendrite resolves against its working \
                     directory: give that directory with --dendrite-working-dir (dendrite_working_dir in the config file)",
                    p.display()
                );
            };
            if !dir.is_dir() {
                bail!("the Dendrite working directory {} (for {key} in {origin}) is not a directory", dir.display());
            }
            Ok(dir.join(p))
        };
        let base_path =
            text(&["media_api", "base_path"])?.ok_or_else(|| anyhow!("{origin}: media_api.base_path is missing"))?;
        let base_path = resolve("media_api.base_path", &base_path)?;
        let global = text(&["global", "database", "connection_string"])?;
        let database = |section: &[&str]| -> Result<DbConfig> {
            let mut keys = section.to_vec();
            keys.push("connection_string");
            let (value, key) = match text(&keys)? {
                Some(v) => (v, keys.join(".")),
                None => match &global {
                    Some(g) => (g.clone(), "global.database.connection_string".to_owned()),
                    None => bail!("{origin}: neither {} nor global.database.connection_string is set", keys.join(".")),
                },
            };
            connection(&value, &format!("{origin}: {key}"), &|p| resolve(&key, p))
        };
        Ok(Self {
            config: PathBuf::from(origin),
            server_names,
            base_path,
            media_db: database(&["media_api", "database"])?,
            accounts_db: database(&["user_api", "account_database"])?,
            sync_db: database(&["sync_api", "database"])?,
        })
    }

    /// Which homeserver, for messages.
    pub fn describe(&self) -> String {
        format!("Dendrite {} ({})", self.server_names[0], self.media_db.describe())
    }
}

/// The Dendrite config a run was given, if any (flag, environment, config file).
pub fn configured(opts: &DendriteOptions, file: &LoadedFile) -> Option<PathBuf> {
    opts.config
        .clone()
        .or_else(|| env("MEDIA_OFFLOAD_DENDRITE_CONFIG").map(PathBuf::from))
        .or_else(|| file.config.dendrite_config.clone())
}

/// Refuse a Dendrite homeserver for a command that offloads media to a
/// store: Dendrite cannot read media from one.
pub fn refuse_for_offload(file: &LoadedFile, command: &str) -> Result<()> {
    if let Some(path) = configured(&DendriteOptions::default(), file) {
        bail!(
            "{command} is refused for the Dendrite homeserver of {}: Dendrite cannot read media from an object store, \
             so offloading would lose them; purge and check work with Dendrite",
            path.display()
        );
    }
    Ok(())
}

/// Whether a homeserver config is Dendrite's (it has `global` and
/// `media_api` sections, which Synapse's never has).
pub fn looks_like_dendrite(config: &super::homeserver::HomeserverConfig) -> bool {
    config.get("global").is_some() && config.get("media_api").is_some()
}

/// A Dendrite connection string as Dendrite reads it.
fn connection(value: &str, field: &str, resolve: &dyn Fn(&str) -> Result<PathBuf>) -> Result<DbConfig> {
    if let Some(rest) = value.strip_prefix("file:") {
        // Go's url.Parse: `file:name.db` is opaque, `file:///path` a path.
        let rest = rest.split(['?', '#']).next().unwrap_or_default();
        let path = match rest.strip_prefix("//") {
            Some(after_host) => {
                let slash = after_host.find('/').ok_or_else(|| anyhow!("{field}: no path in {value:?}"))?;
                percent_decode(&after_host[slash..], field)?
            }
            None => rest.to_owned(),
        };
        if path.is_empty() {
            bail!("{field}: no path in {value:?}");
        }
        return Ok(DbConfig::Sqlite { path: resolve(&path)? });
    }
    let mut s = PgSettings::default();
    match value.split_once("://") {
        Some(("postgres" | "postgresql", rest)) => apply_uri(&mut s, rest, field)?,
        Some((scheme, _)) => bail!("{field}: expected file: (SQLite) or postgres:// (PostgreSQL), found {scheme}://"),
        None => apply_dsn(&mut s, value, field)?,
    }
    Ok(DbConfig::Postgres(s))
}

/// `user:password@host:port/dbname?key=value&...` (what lib/pq reads).
fn apply_uri(s: &mut PgSettings, rest: &str, field: &str) -> Result<()> {
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    if let Some(userinfo) = userinfo {
        let (user, password) = userinfo.split_once(':').map_or((userinfo, None), |(u, p)| (u, Some(p)));
        if !user.is_empty() {
            set_keyword(s, "user", &percent_decode(user, field)?, &format!("{field} (user)"))?;
        }
        if let Some(p) = password {
            set_keyword(s, "password", &percent_decode(p, field)?, &format!("{field} (password)"))?;
        }
    }
    if !hostport.is_empty() {
        let (host, port) = match hostport.strip_prefix('[') {
            Some(v6) => {
                let (h, after) = v6.split_once(']').ok_or_else(|| anyhow!("{field}: unclosed [ in the host"))?;
                (h.to_owned(), after.strip_prefix(':'))
            }
            None => match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (hostport.to_owned(), None),
            },
        };
        if !host.is_empty() {
            set_keyword(s, "host", &percent_decode(&host, field)?, &format!("{field} (host)"))?;
        }
        if let Some(port) = port.filter(|p| !p.is_empty()) {
            set_keyword(s, "port", port, &format!("{field} (port)"))?;
        }
    }
    if !path.is_empty() {
        set_keyword(s, "dbname", &percent_decode(path, field)?, &format!("{field} (database)"))?;
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (key, value) = (percent_decode(key, field)?, percent_decode(&value.replace('+', " "), field)?);
        set_keyword(s, &key, &value, &format!("{field} ({key})"))?;
    }
    Ok(())
}

fn percent_decode(text: &str, field: &str) -> Result<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
            out.push(hex.ok_or_else(|| anyhow!("{field}: a bad %-escape"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| anyhow!("{field}: %-escapes that are not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn parse(yaml: &str, wd: Option<&Path>) -> Result<DendriteSettings> {
        DendriteSettings::from_yaml(&serde_yaml_ng::from_str(yaml).unwrap(), "dendrite.yaml", wd)
    }

    #[test]
    fn the_media_database_falls_back_to_the_global_one_and_uris_parse() {
        let s = parse(
            "global:\n  server_name: example.org\n  virtual_hosts:\n  - server_name: other.example\n  database:\n    \
             connection_string: postgresql://dendrite:p%40ss@db.example:5433/dendrite?sslmode=require\n\
             media_api:\n  base_path: /var/lib/dendrite/media\n",
            None,
        )
        .unwrap();
        assert_eq!(s.server_names, ["example.org", "other.example"]);
        assert_eq!(s.base_path, Path::new("/var/lib/dendrite/media"));
        let DbConfig::Postgres(pg) = &s.media_db else { panic!("{s:?}") };
        assert_eq!(pg.hosts, ["db.example"]);
        assert_eq!(pg.ports, [5433]);
        assert_eq!(pg.dbname.as_deref(), Some("dendrite"));
        assert_eq!(pg.user.as_deref(), Some("dendrite"));
        assert_eq!(pg.password, Some(Secret("p@ss".into())));
        assert_eq!(pg.sslmode, crate::config::SslMode::Require);
        assert_eq!(s.accounts_db, s.media_db);
        assert_eq!(s.sync_db, s.media_db);
    }

    #[test]
    fn sqlite_files_are_per_component_and_relative_ones_need_the_working_dir() {
        let yaml = "global:\n  server_name: example.org\nmedia_api:\n  base_path: ./media_store\n  database:\n    \
                    connection_string: file:mediaapi.db\nuser_api:\n  account_database:\n    \
                    connection_string: file:///abs/userapi.db\nsync_api:\n  database:\n    \
                    connection_string: file:syncapi.db\n";
        let err = parse(yaml, None).unwrap_err().to_string();
        assert!(err.contains("media_api.base_path") && err.contains("--dendrite-working-dir"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let s = parse(yaml, Some(dir.path())).unwrap();
        assert_eq!(s.base_path, dir.path().join("./media_store"));
        assert_eq!(s.media_db, DbConfig::Sqlite { path: dir.path().join("mediaapi.db") });
        assert_eq!(s.accounts_db, DbConfig::Sqlite { path: "/abs/userapi.db".into() });
        assert_eq!(s.sync_db, DbConfig::Sqlite { path: dir.path().join("syncapi.db") });
        let err = parse(yaml, Some(Path::new("/nonexistent/wd"))).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/wd") && err.contains("not a directory"), "{err}");
    }

    #[test]
    fn missing_settings_are_named() {
        let err = parse("global:\n  server_name: x\nmedia_api:\n  base_path: /m\n", None).unwrap_err().to_string();
        assert!(err.contains("media_api.database.connection_string"), "{err}");
        let err = parse("media_api:\n  base_path: /m\n", None).unwrap_err().to_string();
        assert!(err.contains("global.server_name"), "{err}");
        let err = parse(
            "global:\n  server_name: x\n  database:\n    connection_string: mysql://x\nmedia_api:\n  base_path: /m\n",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("file:") && err.contains("mysql://"), "{err}");
    }
}
