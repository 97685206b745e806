//! A fake Dendrite homeserver: its media, user and sync tables exactly as
//! Dendrite's source creates them (`mediaapi/storage/{postgres,sqlite3}`,
//! `userapi/storage/*/profile_table.go`,
//! `syncapi/storage/*/current_room_state_table.go`), on one PostgreSQL
//! database or in three SQLite files, a dendrite.yaml pointing at them
//! with relative paths (resolved against the working directory), and a
//! media folder in Dendrite's layout: one folder per content hash, shared
//! by every row with that hash.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use sha2::Digest as _;

use super::pg::PgDb;
use super::run::{Out, run};
use super::{DAY_MS, content_for, now_ms, set_mtime};

pub const DENDRITE_SERVER: &str = "dendrite.test";

const MEDIA_POSTGRES: &str = "
CREATE TABLE IF NOT EXISTS mediaapi_media_repository (
    media_id TEXT NOT NULL,
    media_origin TEXT NOT NULL,
    content_type TEXT NOT NULL,
    file_size_bytes BIGINT NOT NULL,
    creation_ts BIGINT NOT NULL,
    upload_name TEXT NOT NULL,
    base64hash TEXT NOT NULL,
    user_id TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS mediaapi_media_repository_index ON mediaapi_media_repository (media_id, media_origin);
CREATE TABLE IF NOT EXISTS mediaapi_thumbnail (
    media_id TEXT NOT NULL,
    media_origin TEXT NOT NULL,
    content_type TEXT NOT NULL,
    file_size_bytes BIGINT NOT NULL,
    creation_ts BIGINT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    resize_method TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS mediaapi_thumbnail_index ON mediaapi_thumbnail (media_id, media_origin, width, height, resize_method);
";

const MEDIA_SQLITE: &str = "
CREATE TABLE IF NOT EXISTS mediaapi_media_repository (
    media_id TEXT NOT NULL,
    media_origin TEXT NOT NULL,
    content_type TEXT NOT NULL,
    file_size_bytes INTEGER NOT NULL,
    creation_ts INTEGER NOT NULL,
    upload_name TEXT NOT NULL,
    base64hash TEXT NOT NULL,
    user_id TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS mediaapi_media_repository_index ON mediaapi_media_repository (media_id, media_origin);
CREATE TABLE IF NOT EXISTS mediaapi_thumbnail (
    media_id TEXT NOT NULL,
    media_origin TEXT NOT NULL,
    content_type TEXT NOT NULL,
    file_size_bytes INTEGER NOT NULL,
    creation_ts INTEGER NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    resize_method TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS mediaapi_thumbnail_index ON mediaapi_thumbnail (media_id, media_origin, width, height, resize_method);
";

/// The same text on both engines.
const PROFILES: &str = "
CREATE TABLE IF NOT EXISTS userapi_profiles (
    localpart TEXT NOT NULL,
	server_name TEXT NOT NULL,
    display_name TEXT,
    avatar_url TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS userapi_profiles_idx ON userapi_profiles(localpart, server_name);
";

const ROOM_STATE_POSTGRES: &str = "
CREATE TABLE IF NOT EXISTS syncapi_current_room_state (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    type TEXT NOT NULL,
    sender TEXT NOT NULL,
    contains_url BOOL NOT NULL,
    state_key TEXT NOT NULL,
    headered_event_json TEXT NOT NULL,
    membership TEXT,
    added_at BIGINT,
    history_visibility SMALLINT NOT NULL DEFAULT 2,
    CONSTRAINT syncapi_room_state_unique UNIQUE (room_id, type, state_key)
);
CREATE UNIQUE INDEX IF NOT EXISTS syncapi_event_id_idx ON syncapi_current_room_state(event_id, room_id, type, sender, contains_url);
CREATE INDEX IF NOT EXISTS syncapi_membership_idx ON syncapi_current_room_state(type, state_key, membership) WHERE membership IS NOT NULL AND membership != 'leave';
CREATE UNIQUE INDEX IF NOT EXISTS syncapi_current_room_state_eventid_idx ON syncapi_current_room_state(event_id);
CREATE INDEX IF NOT EXISTS syncapi_current_room_state_type_state_key_idx ON syncapi_current_room_state(type, state_key);
";

const ROOM_STATE_SQLITE: &str = "
CREATE TABLE IF NOT EXISTS syncapi_current_room_state (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    type TEXT NOT NULL,
    sender TEXT NOT NULL,
    contains_url BOOL NOT NULL DEFAULT false,
    state_key TEXT NOT NULL,
    headered_event_json TEXT NOT NULL,
    membership TEXT,
    added_at BIGINT,
    history_visibility SMALLINT NOT NULL DEFAULT 2,
    UNIQUE (room_id, type, state_key)
);
CREATE UNIQUE INDEX IF NOT EXISTS syncapi_event_id_idx ON syncapi_current_room_state(event_id, room_id, type, sender, contains_url);
CREATE UNIQUE INDEX IF NOT EXISTS syncapi_current_room_state_eventid_idx ON syncapi_current_room_state(event_id);
CREATE INDEX IF NOT EXISTS syncapi_current_room_state_type_state_key_idx ON syncapi_current_room_state(type, state_key);
";

/// Which of Dendrite's databases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DendriteDb {
    Media,
    Accounts,
    Sync,
}

enum Backend {
    Postgres(PgDb),
    /// Three files, relative to the working directory.
    Sqlite,
}

/// One media row and its bytes.
#[derive(Debug, Clone)]
pub struct DMedia {
    pub origin: String,
    pub media_id: String,
    pub hash: String,
    /// Thumbnail file names with rows, and without rows.
    pub thumbs: Vec<String>,
}

impl DMedia {
    pub fn mxc(&self) -> String {
        format!("mxc://{}/{}", self.origin, self.media_id)
    }

    /// The hash folder, relative to the media folder.
    pub fn folder(&self) -> String {
        hash_folder(&self.hash)
    }
}

pub fn hash_folder(hash: &str) -> String {
    format!("{}/{}/{}", &hash[..1], &hash[1..2], &hash[2..])
}

/// Dendrite's base64hash: unpadded URL-safe base64 of the SHA-256.
pub fn base64hash(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(data))
}

pub struct Dendrite {
    pub dir: tempfile::TempDir,
    backend: Backend,
    next: std::cell::Cell<u64>,
}

impl Dendrite {
    pub fn sqlite() -> Dendrite {
        Self::build(false)
    }

    pub fn postgres() -> Dendrite {
        Self::build(true)
    }

    fn build(postgres: bool) -> Dendrite {
        super::env::test_env();
        let dir = tempfile::Builder::new().prefix("mo-dendrite-").tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("media_store/tmp")).unwrap();
        let backend = if postgres {
            let pg = PgDb::create_empty();
            pg.batch(MEDIA_POSTGRES);
            pg.batch(PROFILES);
            pg.batch(ROOM_STATE_POSTGRES);
            Backend::Postgres(pg)
        } else {
            for (file, schema) in
                [("mediaapi.db", MEDIA_SQLITE), ("userapi.db", PROFILES), ("syncapi.db", ROOM_STATE_SQLITE)]
            {
                rusqlite::Connection::open(dir.path().join(file)).unwrap().execute_batch(schema).unwrap();
            }
            Backend::Sqlite
        };
        let d = Dendrite { dir, backend, next: std::cell::Cell::new(0) };
        d.write_config();
        d
    }

    pub fn cwd(&self) -> &Path {
        self.dir.path()
    }

    /// The media folder (`./media_store` of the working directory).
    pub fn base(&self) -> PathBuf {
        self.dir.path().join("media_store")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("dendrite.yaml")
    }

    /// dendrite.yaml as a monolith deployment writes it: relative paths,
    /// the global database for PostgreSQL, one file per component for SQLite.
    fn write_config(&self) {
        let databases = match &self.backend {
            Backend::Postgres(pg) => {
                let env = super::env::test_env();
                format!(
                    "  database:\n    connection_string: postgres://{}@/{}?host={}&port={}&sslmode=disable\n",
                    env.pg_superuser,
                    pg.name,
                    env.pg_socket.display(),
                    env.pg_port
                )
            }
            Backend::Sqlite => String::new(),
        };
        let component = |name: &str, key: &str| match &self.backend {
            Backend::Postgres(_) => String::new(),
            Backend::Sqlite => format!("  {key}:\n    connection_string: file:{name}\n"),
        };
        let text = format!(
            "version: 2\nglobal:\n  server_name: {DENDRITE_SERVER}\n{databases}\
             media_api:\n{}  base_path: ./media_store\n  max_file_size_bytes: 10485760\n\
             sync_api:\n{}user_api:\n{}",
            component("mediaapi.db", "database"),
            component("syncapi.db", "database"),
            component("userapi.db", "account_database"),
        );
        std::fs::write(self.config_path(), text).unwrap();
    }

    /// Runs media-offload against this homeserver, in its working directory.
    pub fn mo(&self, args: &[&str]) -> Out {
        self.mo_env(args, &[])
    }

    pub fn mo_env(&self, args: &[&str], envs: &[(&str, &str)]) -> Out {
        let (config, wd) = (self.config_path(), self.cwd().display().to_string());
        let config = config.display().to_string();
        let mut all: Vec<&str> = vec!["--no-progress"];
        all.extend_from_slice(args);
        all.extend(["--dendrite-config", config.as_str(), "--dendrite-working-dir", wd.as_str()]);
        run(&all, self.cwd(), envs)
    }

    /// The arguments of [`Dendrite::mo`], for runs the test spawns itself.
    pub fn args(&self, args: &[&str]) -> Vec<String> {
        let mut all: Vec<String> =
            std::iter::once("--no-progress").chain(args.iter().copied()).map(String::from).collect();
        all.extend([
            "--dendrite-config".to_owned(),
            self.config_path().display().to_string(),
            "--dendrite-working-dir".to_owned(),
            self.cwd().display().to_string(),
        ]);
        all
    }

    pub fn sql(&self, db: DendriteDb, sql: &str) {
        match &self.backend {
            Backend::Postgres(pg) => pg.batch(sql),
            Backend::Sqlite => {
                let file = match db {
                    DendriteDb::Media => "mediaapi.db",
                    DendriteDb::Accounts => "userapi.db",
                    DendriteDb::Sync => "syncapi.db",
                };
                rusqlite::Connection::open(self.dir.path().join(file))
                    .unwrap()
                    .execute_batch(sql)
                    .unwrap_or_else(|e| panic!("{e}: {sql}"));
            }
        }
    }

    /// The first column of `sql`'s rows, as text.
    pub fn texts(&self, db: DendriteDb, sql: &str) -> Vec<String> {
        match &self.backend {
            Backend::Postgres(pg) => {
                pg.client().query(sql, &[]).unwrap().iter().map(|r| r.get::<_, String>(0)).collect()
            }
            Backend::Sqlite => {
                assert_eq!(db, DendriteDb::Media, "only the media database is read back");
                let c = rusqlite::Connection::open(self.dir.path().join("mediaapi.db")).unwrap();
                let mut s = c.prepare(sql).unwrap();
                s.query_map([], |r| r.get::<_, String>(0)).unwrap().map(Result::unwrap).collect()
            }
        }
    }

    pub fn new_id(&self) -> String {
        let n = self.next.get() + 1;
        self.next.set(n);
        format!("Med{n:05}x{}", super::unique_suffix().replace('x', ""))
    }

    /// Adds a media row (`days` old) with `data` in its hash folder (unless
    /// already there: Dendrite shares it), thumbnail files with rows for
    /// `thumbs` and files without rows for `extra_thumb_files`.
    pub fn add(&self, origin: &str, media_id: &str, data: &[u8], days: i64, thumbs: &[&str]) -> DMedia {
        let hash = base64hash(data);
        let created = now_ms() - days * DAY_MS;
        let user = if origin == DENDRITE_SERVER { "@alice:dendrite.test" } else { "" };
        let mut sql = format!(
            "INSERT INTO mediaapi_media_repository (media_id, media_origin, content_type, file_size_bytes, \
             creation_ts, upload_name, base64hash, user_id) VALUES ('{media_id}', '{origin}', 'image/png', {}, \
             {created}, 'a.png', '{hash}', '{user}');\n",
            data.len()
        );
        for t in thumbs {
            let (w, h, method) = parse_thumb(t);
            sql.push_str(&format!(
                "INSERT INTO mediaapi_thumbnail (media_id, media_origin, content_type, file_size_bytes, \
                 creation_ts, width, height, resize_method) VALUES ('{media_id}', '{origin}', 'image/png', {}, \
                 {created}, {w}, {h}, '{method}');\n",
                thumb_bytes(&hash, t).len()
            ));
        }
        self.sql(DendriteDb::Media, &sql);
        let folder = self.base().join(hash_folder(&hash));
        std::fs::create_dir_all(&folder).unwrap();
        let written = std::time::SystemTime::now() - std::time::Duration::from_millis((days * DAY_MS) as u64);
        if !folder.join("file").exists() {
            std::fs::write(folder.join("file"), data).unwrap();
            set_mtime(&folder.join("file"), written);
        }
        for t in thumbs {
            self.write_thumb(&hash, t, written);
        }
        DMedia {
            origin: origin.into(),
            media_id: media_id.into(),
            hash,
            thumbs: thumbs.iter().map(|t| t.to_string()).collect(),
        }
    }

    /// A thumbnail file without a row, in `hash`'s folder.
    pub fn write_thumb(&self, hash: &str, name: &str, written: std::time::SystemTime) {
        let p = self.base().join(hash_folder(hash)).join(name);
        std::fs::write(&p, thumb_bytes(hash, name)).unwrap();
        set_mtime(&p, written);
    }

    pub fn profile_avatar(&self, localpart: &str, mxc: &str) {
        self.sql(
            DendriteDb::Accounts,
            &format!(
                "INSERT INTO userapi_profiles (localpart, server_name, display_name, avatar_url) \
                 VALUES ('{localpart}', '{DENDRITE_SERVER}', '{localpart}', '{mxc}');"
            ),
        );
    }

    /// A room's `m.room.avatar` (`content.url`) or a member's per-room
    /// avatar (`m.room.member`, `content.avatar_url`) in the current state.
    pub fn room_state_avatar(&self, member: bool, mxc: &str) {
        let n = self.new_id();
        let (kind, key, content) = if member {
            ("m.room.member", "@bob:remote.example", format!(r#"{{"membership":"join","avatar_url":"{mxc}"}}"#))
        } else {
            ("m.room.avatar", "", format!(r#"{{"url":"{mxc}"}}"#))
        };
        let json = format!(
            r#"{{"auth_events":[],"content":{content},"depth":3,"event_id":"${n}","origin_server_ts":1,"prev_events":[],"room_id":"!{n}:dendrite.test","sender":"@bob:remote.example","state_key":"{key}","type":"{kind}"}}"#
        );
        self.sql(
            DendriteDb::Sync,
            &format!(
                "INSERT INTO syncapi_current_room_state (room_id, event_id, type, sender, contains_url, state_key, \
                 headered_event_json, membership, added_at) VALUES ('!{n}:dendrite.test', '${n}', '{kind}', \
                 '@bob:remote.example', TRUE, '{key}', '{json}', {}, 1);",
                if member { "'join'" } else { "NULL" }
            ),
        );
    }

    /// Every media row as `origin/media_id`, sorted.
    pub fn rows(&self) -> Vec<String> {
        let mut v =
            self.texts(DendriteDb::Media, "SELECT media_origin || '/' || media_id FROM mediaapi_media_repository");
        v.sort();
        v
    }

    pub fn has_row(&self, m: &DMedia) -> bool {
        self.rows().contains(&format!("{}/{}", m.origin, m.media_id))
    }

    pub fn thumb_rows(&self, m: &DMedia) -> usize {
        self.texts(
            DendriteDb::Media,
            &format!(
                "SELECT media_id FROM mediaapi_thumbnail WHERE media_id = '{}' AND media_origin = '{}'",
                m.media_id, m.origin
            ),
        )
        .len()
    }

    /// Every file of the media folder (tmp/ too), relative, with its bytes.
    pub fn files(&self) -> std::collections::BTreeMap<String, Vec<u8>> {
        super::files_under(&self.base())
    }

    pub fn folder_exists(&self, m: &DMedia) -> bool {
        self.base().join(m.folder()).join("file").exists()
    }

    /// Rows whose file is missing (must never happen after a purge).
    pub fn rows_without_files(&self) -> Vec<String> {
        let rows = self.texts(
            DendriteDb::Media,
            "SELECT media_origin || '/' || media_id || ' ' || base64hash FROM mediaapi_media_repository",
        );
        rows.into_iter()
            .filter(|r| {
                let hash = r.rsplit(' ').next().unwrap();
                !self.base().join(hash_folder(hash)).join("file").exists()
            })
            .collect()
    }
}

fn parse_thumb(name: &str) -> (i64, i64, String) {
    // thumbnail-<w>x<h>-<method>
    let rest = name.strip_prefix("thumbnail-").expect("Dendrite's thumbnail name");
    let (size, method) = rest.split_once('-').unwrap();
    let (w, h) = size.split_once('x').unwrap();
    (w.parse().unwrap(), h.parse().unwrap(), method.to_owned())
}

fn thumb_bytes(hash: &str, name: &str) -> Vec<u8> {
    content_for(&format!("{hash}/{name}"), 120)
}

/// Distinct content for a media.
pub fn bytes_for(seed: &str) -> Vec<u8> {
    content_for(seed, 300 + seed.len() * 7)
}
