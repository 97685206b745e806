//! A fake homeserver: Synapse's media tables (SQLite file or PostgreSQL
//! database) with rows, and a media store directory with the matching files
//! (originals and thumbnails) at the paths Synapse uses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::cache::CacheRow;
use super::pg::PgDb;
use super::synapse_schema::SYNAPSE_MEDIA_SCHEMA_SQLITE;
use super::yaml::{SERVER_NAME, homeserver_yaml_psycopg2, homeserver_yaml_sqlite};
use super::{DAY_MS, content_for, now_ms, unique_suffix};

/// One media item: a row in local_media_repository or remote_media_cache, its
/// thumbnail rows, and the files to write.
#[derive(Clone, Debug)]
pub struct Media {
    /// None for local media; the media_origin for remote media.
    pub origin: Option<String>,
    pub media_id: String,
    pub filesystem_id: String,
    /// created_ts = now - created_age_ms (at insertion time)
    pub created_age_ms: i64,
    /// last_access_ts = now - age, or NULL
    pub last_access_age_ms: Option<i64>,
    pub url_cache: Option<String>,
    /// Size of the original; None: no original file on disk.
    pub size: Option<usize>,
    /// Thumbnail file names (in the media's thumbnail directory) and sizes.
    pub thumbs: Vec<(String, usize)>,
    /// Insert the database row (false: files only).
    pub insert_row: bool,
    /// `quarantined_by` (local and remote).
    pub quarantined_by: Option<String>,
    /// `safe_from_quarantine` (local only).
    pub safe_from_quarantine: bool,
    /// An upload Synapse has created but not received yet: `media_length`
    /// NULL and no file.
    pub pending: bool,
}

impl Media {
    /// Local media, created 400 days ago, never accessed since, 1000 bytes, no thumbnails.
    pub fn local(media_id: &str) -> Media {
        Media {
            origin: None,
            media_id: media_id.into(),
            filesystem_id: media_id.into(),
            created_age_ms: 400 * DAY_MS,
            last_access_age_ms: None,
            url_cache: None,
            size: Some(1000),
            thumbs: vec![],
            insert_row: true,
            quarantined_by: None,
            safe_from_quarantine: false,
            pending: false,
        }
    }

    /// Remote media (from `origin`), created 400 days ago, 1000 bytes.
    pub fn remote(origin: &str, media_id: &str, filesystem_id: &str) -> Media {
        Media { origin: Some(origin.into()), filesystem_id: filesystem_id.into(), ..Media::local(media_id) }
    }

    pub fn created_days_ago(mut self, d: i64) -> Media {
        self.created_age_ms = d * DAY_MS;
        self
    }

    pub fn created_ms_ago(mut self, ms: i64) -> Media {
        self.created_age_ms = ms;
        self
    }

    pub fn accessed_days_ago(mut self, d: i64) -> Media {
        self.last_access_age_ms = Some(d * DAY_MS);
        self
    }

    pub fn accessed_ms_ago(mut self, ms: i64) -> Media {
        self.last_access_age_ms = Some(ms);
        self
    }

    pub fn url_cache(mut self, url: &str) -> Media {
        self.url_cache = Some(url.into());
        self
    }

    pub fn size(mut self, n: usize) -> Media {
        self.size = Some(n);
        self
    }

    pub fn no_original(mut self) -> Media {
        self.size = None;
        self
    }

    pub fn thumb(mut self, name: &str, size: usize) -> Media {
        self.thumbs.push((name.into(), size));
        self
    }

    /// Two thumbnails as Synapse names them.
    pub fn with_thumbs(self) -> Media {
        self.thumb("32-32-image-png-crop", 300).thumb("640-480-image-jpeg-scale", 2500)
    }

    pub fn files_only(mut self) -> Media {
        self.insert_row = false;
        self
    }

    /// Quarantined by an admin (`quarantined_by` set).
    pub fn quarantined(mut self) -> Media {
        self.quarantined_by = Some("@admin:test.example".into());
        self
    }

    /// Protected from quarantine (local media only).
    pub fn safe_from_quarantine(mut self) -> Media {
        assert!(self.is_local(), "only local media have safe_from_quarantine");
        self.safe_from_quarantine = true;
        self
    }

    /// A pending upload: the row exists (media_length NULL), the bytes do not yet.
    pub fn pending(mut self) -> Media {
        self.pending = true;
        self.size = None;
        self
    }

    /// `mxc://SERVER/ID` of this media (local media: on `server`).
    pub fn mxc(&self, server: &str) -> String {
        format!("mxc://{}/{}", self.origin.as_deref().unwrap_or(server), self.media_id)
    }

    pub fn is_local(&self) -> bool {
        self.origin.is_none()
    }

    fn split_id(&self) -> (String, String, String) {
        let c: Vec<char> = self.filesystem_id.chars().collect();
        let s = |a: usize, b: usize| c[a.min(c.len())..b.min(c.len())].iter().collect::<String>();
        (s(0, 2), s(2, 4), s(4, c.len()))
    }

    /// Relative path of the original.
    pub fn original_rel(&self) -> String {
        let (a, b, r) = self.split_id();
        match &self.origin {
            None => format!("local_content/{a}/{b}/{r}"),
            Some(o) => format!("remote_content/{o}/{a}/{b}/{r}"),
        }
    }

    /// Relative path of the thumbnail directory (no trailing slash).
    pub fn thumb_dir_rel(&self) -> String {
        let (a, b, r) = self.split_id();
        match &self.origin {
            None => format!("local_thumbnails/{a}/{b}/{r}"),
            Some(o) => format!("remote_thumbnail/{o}/{a}/{b}/{r}"),
        }
    }

    /// Relative paths of every file this media has on disk.
    pub fn rel_paths(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.size.is_some() {
            v.push(self.original_rel());
        }
        for (name, _) in &self.thumbs {
            v.push(format!("{}/{name}", self.thumb_dir_rel()));
        }
        v
    }

    /// Total bytes of its files.
    pub fn total_bytes(&self) -> usize {
        self.size.unwrap_or(0) + self.thumbs.iter().map(|t| t.1).sum::<usize>()
    }

    /// The cache.db row update-db makes for it.
    pub fn cache_row(&self) -> CacheRow {
        match &self.origin {
            None => CacheRow::local(&self.media_id),
            Some(o) => CacheRow::remote(o, &self.media_id, &self.filesystem_id),
        }
    }

    /// The two lines `write` prints for it.
    pub fn write_lines(&self) -> [String; 2] {
        [self.original_rel(), format!("{}/", self.thumb_dir_rel())]
    }
}

/// The tables Synapse records avatars in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AvatarIn {
    Profiles,
    RoomMemberships,
    UserDirectory,
    RoomStatsState,
}

impl AvatarIn {
    pub const ALL: [AvatarIn; 4] =
        [AvatarIn::Profiles, AvatarIn::RoomMemberships, AvatarIn::UserDirectory, AvatarIn::RoomStatsState];
}

pub enum HsDb {
    Sqlite(PathBuf),
    Postgres(PgDb),
}

/// A homeserver in a temporary directory: `homeserver.yaml`, its database,
/// and a media store. Tools run with this directory as their working
/// directory, so their default `./cache.db` is `dir/cache.db`.
pub struct Homeserver {
    pub dir: tempfile::TempDir,
    pub media: PathBuf,
    pub db: HsDb,
    files: BTreeMap<String, Vec<u8>>,
    pub items: Vec<Media>,
    id_state: std::cell::Cell<u64>,
}

fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn sql_opt_str(s: &Option<String>) -> String {
    s.as_deref().map(sql_str).unwrap_or_else(|| "NULL".into())
}

impl Homeserver {
    /// SQLite homeserver DB, media store at `DIR/media`.
    pub fn sqlite() -> Homeserver {
        Homeserver::build(false, "media")
    }

    /// PostgreSQL homeserver DB (fresh database, superuser over the unix
    /// socket), media store at `DIR/media`.
    pub fn postgres() -> Homeserver {
        Homeserver::build(true, "media")
    }

    /// SQLite homeserver whose media store is `DIR/<media_subdir>` (e.g.
    /// deeper down, so rows that climb out of the store still land inside DIR).
    pub fn sqlite_with_media_at(media_subdir: &str) -> Homeserver {
        Homeserver::build(false, media_subdir)
    }

    fn build(postgres: bool, media_subdir: &str) -> Homeserver {
        super::env::test_env();
        let dir = tempfile::Builder::new().prefix("mo-test-").tempdir().unwrap();
        let media = dir.path().join(media_subdir);
        std::fs::create_dir_all(&media).unwrap();
        let db = if postgres {
            HsDb::Postgres(PgDb::create())
        } else {
            let p = dir.path().join("homeserver.db");
            let c = rusqlite::Connection::open(&p).unwrap();
            c.execute_batch(SYNAPSE_MEDIA_SCHEMA_SQLITE).unwrap();
            HsDb::Sqlite(p)
        };
        let seed = unique_suffix();
        let mut id_state: u64 = 0x9E3779B97F4A7C15;
        for b in seed.bytes() {
            id_state = (id_state ^ b as u64).wrapping_mul(0x100000001b3);
        }
        let hs = Homeserver {
            dir,
            media,
            db,
            files: BTreeMap::new(),
            items: vec![],
            id_state: std::cell::Cell::new(id_state | 1),
        };
        hs.write_default_homeserver_yaml();
        // A live homeserver: it received an event just now.
        hs.sql(&format!(
            "INSERT INTO events (topological_ordering, event_id, type, room_id, processed, outlier, received_ts, \
             stream_ordering) VALUES (1, '$live', 'm.room.message', '!room:test.example', TRUE, FALSE, {}, 1);",
            now_ms()
        ));
        hs
    }

    /// Makes the database look abandoned `age_ms` ago: its newest event
    /// was received then (its media rows are as old as the tests made them).
    pub fn last_event_ago(&self, age_ms: i64) {
        self.sql(&format!("UPDATE events SET received_ts = {};", now_ms() - age_ms));
    }

    /// (Re)writes homeserver.yaml pointing at this homeserver's database
    /// (PostgreSQL: superuser over the unix socket).
    pub fn write_default_homeserver_yaml(&self) {
        let text = match &self.db {
            HsDb::Sqlite(p) => homeserver_yaml_sqlite(p, &self.media),
            HsDb::Postgres(pg) => homeserver_yaml_psycopg2(&pg.socket_params(), &self.media),
        };
        self.write_file("homeserver.yaml", &text);
    }

    pub fn pg(&self) -> &PgDb {
        match &self.db {
            HsDb::Postgres(p) => p,
            HsDb::Sqlite(_) => panic!("not a PostgreSQL homeserver"),
        }
    }

    pub fn sqlite_path(&self) -> &Path {
        match &self.db {
            HsDb::Sqlite(p) => p,
            HsDb::Postgres(_) => panic!("not a SQLite homeserver"),
        }
    }

    /// The working directory for tool runs.
    pub fn cwd(&self) -> &Path {
        self.dir.path()
    }

    /// The media store path as a command-line argument.
    pub fn media_arg(&self) -> String {
        self.media.to_string_lossy().into_owned()
    }

    /// The default cache.db (in the working directory).
    pub fn cache_db(&self) -> PathBuf {
        self.dir.path().join("cache.db")
    }

    /// Writes `name` (relative to the working directory).
    pub fn write_file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }

    /// A fresh media id like Synapse's (24 ASCII letters).
    pub fn new_id(&self) -> String {
        const L: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        (0..24)
            .map(|_| {
                let mut x = self.id_state.get();
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                self.id_state.set(x);
                L[(x.wrapping_mul(0x2545F4914F6CDD1D) >> 33) as usize % L.len()] as char
            })
            .collect()
    }

    /// Runs SQL on the homeserver database.
    pub fn sql(&self, sql: &str) {
        match &self.db {
            HsDb::Sqlite(p) => rusqlite::Connection::open(p)
                .unwrap()
                .execute_batch(sql)
                .unwrap_or_else(|e| panic!("SQLite: {e}\n{sql}")),
            HsDb::Postgres(pg) => pg.batch(sql),
        }
    }

    /// The first column of every row of `sql` (which must select text,
    /// e.g. with `CAST(x AS TEXT)`; NULL reads as "NULL"), sorted.
    pub fn texts(&self, sql: &str) -> Vec<String> {
        let mut v: Vec<String> = match &self.db {
            HsDb::Sqlite(p) => {
                let c = rusqlite::Connection::open(p).unwrap();
                // A tool under test may be committing right now: wait for it.
                c.busy_timeout(std::time::Duration::from_secs(30)).unwrap();
                let mut st = c.prepare(sql).unwrap_or_else(|e| panic!("SQLite: {e}\n{sql}"));
                st.query_map([], |r| r.get::<_, Option<String>>(0))
                    .unwrap()
                    .map(|x| x.unwrap().unwrap_or_else(|| "NULL".into()))
                    .collect()
            }
            HsDb::Postgres(pg) => pg
                .client()
                .query(sql, &[])
                .unwrap_or_else(|e| panic!("PostgreSQL: {e}\n{sql}"))
                .iter()
                .map(|r| r.get::<_, Option<String>>(0).unwrap_or_else(|| "NULL".into()))
                .collect(),
        };
        v.sort();
        v
    }

    /// Whether the media row of `m` exists.
    pub fn has_row(&self, m: &Media) -> bool {
        let sql = match &m.origin {
            None => format!("SELECT media_id FROM local_media_repository WHERE media_id = {}", sql_str(&m.media_id)),
            Some(o) => format!(
                "SELECT media_id FROM remote_media_cache WHERE media_origin = {} AND media_id = {}",
                sql_str(o),
                sql_str(&m.media_id)
            ),
        };
        !self.texts(&sql).is_empty()
    }

    /// How many thumbnail rows `m` has.
    pub fn thumb_rows(&self, m: &Media) -> usize {
        let sql = match &m.origin {
            None => format!(
                "SELECT media_id FROM local_media_repository_thumbnails WHERE media_id = {}",
                sql_str(&m.media_id)
            ),
            Some(o) => format!(
                "SELECT media_id FROM remote_media_cache_thumbnails WHERE media_origin = {} AND media_id = {}",
                sql_str(o),
                sql_str(&m.media_id)
            ),
        };
        self.texts(&sql).len()
    }

    /// Every row of the tables media-offload reads or writes (the media and
    /// thumbnail tables, and the four avatar tables), rendered as text per
    /// table, for comparing the database before and after a run.
    pub fn db_snapshot(&self) -> Vec<String> {
        const TABLES: &[&str] = &[
            "local_media_repository",
            "local_media_repository_thumbnails",
            "remote_media_cache",
            "remote_media_cache_thumbnails",
            "profiles",
            "room_memberships",
            "user_directory",
            "room_stats_state",
        ];
        let mut out = Vec::new();
        for t in TABLES {
            let rows = match &self.db {
                HsDb::Sqlite(p) => {
                    let c = rusqlite::Connection::open(p).unwrap();
                    let mut st = c.prepare(&format!("SELECT * FROM {t}")).unwrap();
                    let n = st.column_count();
                    let mut rows = st.query([]).unwrap();
                    let mut v = Vec::new();
                    while let Some(r) = rows.next().unwrap() {
                        let cells: Vec<String> = (0..n).map(|i| format!("{:?}", r.get_ref(i).unwrap())).collect();
                        v.push(cells.join("|"));
                    }
                    v.sort();
                    v
                }
                HsDb::Postgres(_) => self.texts(&format!("SELECT CAST(t AS TEXT) FROM {t} t")),
            };
            out.extend(rows.into_iter().map(|r| format!("{t}: {r}")));
        }
        out
    }

    /// Makes `mxc` the avatar of something in `table`, as Synapse records
    /// it there (a user's profile, a room membership, the user directory,
    /// or a room's state).
    pub fn add_avatar(&self, table: AvatarIn, mxc: &str) {
        let n = self.new_id();
        let user = sql_str(&format!("@{n}:test.example"));
        let room = sql_str(&format!("!{n}:test.example"));
        let url = sql_str(mxc);
        self.sql(&match table {
            AvatarIn::Profiles => format!(
                "INSERT INTO profiles (user_id, full_user_id, displayname, avatar_url) VALUES ({}, {user}, 'A', {url});",
                sql_str(&n)
            ),
            AvatarIn::RoomMemberships => format!(
                "INSERT INTO room_memberships (event_id, user_id, sender, room_id, membership, display_name, avatar_url) \
                 VALUES ({}, {user}, {user}, {room}, 'join', 'A', {url});",
                sql_str(&format!("${n}"))
            ),
            AvatarIn::UserDirectory => format!(
                "INSERT INTO user_directory (user_id, room_id, display_name, avatar_url) VALUES ({user}, {room}, 'A', {url});"
            ),
            AvatarIn::RoomStatsState => format!(
                "INSERT INTO room_stats_state (room_id, name, join_rules, history_visibility, avatar, is_federatable) \
                 VALUES ({room}, 'Room', 'public', 'shared', {url}, TRUE);"
            ),
        });
    }

    /// Rewrites homeserver.yaml: the default one with `server_name` set to
    /// `server_name` (None: no server_name at all), followed by `extra`
    /// (e.g. [`media_retention_yaml`] and [`s3_provider_yaml`]).
    pub fn write_homeserver_yaml_with(&self, server_name: Option<&str>, extra: &str) {
        let default = match &self.db {
            HsDb::Sqlite(p) => homeserver_yaml_sqlite(p, &self.media),
            HsDb::Postgres(pg) => homeserver_yaml_psycopg2(&pg.socket_params(), &self.media),
        };
        let line = format!("server_name: \"{SERVER_NAME}\"\n");
        assert!(default.contains(&line), "the default homeserver.yaml has no {line:?}");
        let name = server_name.map(|n| format!("server_name: {}\n", serde_json::to_string(n).unwrap()));
        let text = default.replace(&line, name.as_deref().unwrap_or(""));
        self.write_file("homeserver.yaml", &format!("{text}{extra}"));
    }

    fn rows_sql(m: &Media, now: i64) -> String {
        let created = now - m.created_age_ms;
        let access = m.last_access_age_ms.map(|a| (now - a).to_string()).unwrap_or_else(|| "NULL".into());
        let len = if m.pending { "NULL".to_string() } else { m.size.unwrap_or(0).to_string() };
        let quarantined = sql_opt_str(&m.quarantined_by);
        let mut sql = match &m.origin {
            None => format!(
                "INSERT INTO local_media_repository (media_id, media_type, media_length, created_ts, \
                 upload_name, user_id, url_cache, last_access_ts, quarantined_by, safe_from_quarantine) \
                 VALUES ({}, 'image/png', {len}, {created}, 'upload.png', '@alice:test.example', {}, {access}, \
                 {quarantined}, {});\n",
                sql_str(&m.media_id),
                sql_opt_str(&m.url_cache),
                if m.safe_from_quarantine { "TRUE" } else { "FALSE" }
            ),
            Some(o) => format!(
                "INSERT INTO remote_media_cache (media_origin, media_id, media_type, created_ts, \
                 upload_name, media_length, filesystem_id, last_access_ts, quarantined_by) VALUES ({}, {}, \
                 'image/png', {created}, 'remote.png', {len}, {}, {access}, {quarantined});\n",
                sql_str(o),
                sql_str(&m.media_id),
                sql_str(&m.filesystem_id)
            ),
        };
        for (i, (name, size)) in m.thumbs.iter().enumerate() {
            // "W-H-TOP-SUB-METHOD" as Synapse names thumbnail files
            let p: Vec<&str> = name.split('-').collect();
            let (w, h, ty, method) = if p.len() == 5 {
                (
                    p[0].parse::<i64>().unwrap_or(i as i64),
                    p[1].parse::<i64>().unwrap_or(i as i64),
                    format!("{}/{}", p[2], p[3]),
                    p[4].to_string(),
                )
            } else {
                (i as i64 + 1, i as i64 + 1, "image/png".into(), "crop".into())
            };
            sql.push_str(&match &m.origin {
                None => format!(
                    "INSERT INTO local_media_repository_thumbnails (media_id, thumbnail_width, \
                     thumbnail_height, thumbnail_type, thumbnail_method, thumbnail_length) VALUES \
                     ({}, {w}, {h}, {}, {}, {size});\n",
                    sql_str(&m.media_id),
                    sql_str(&ty),
                    sql_str(&method)
                ),
                Some(o) => format!(
                    "INSERT INTO remote_media_cache_thumbnails (media_origin, media_id, thumbnail_width, \
                     thumbnail_height, thumbnail_method, thumbnail_type, thumbnail_length, filesystem_id) \
                     VALUES ({}, {}, {w}, {h}, {}, {}, {size}, {});\n",
                    sql_str(o),
                    sql_str(&m.media_id),
                    sql_str(&method),
                    sql_str(&ty),
                    sql_str(&m.filesystem_id)
                ),
            });
        }
        sql
    }

    fn write_media_files(&mut self, m: &Media) {
        let mut sizes: Vec<(String, usize)> = Vec::new();
        if let Some(s) = m.size {
            sizes.push((m.original_rel(), s));
        }
        for (name, s) in &m.thumbs {
            sizes.push((format!("{}/{name}", m.thumb_dir_rel()), *s));
        }
        // Synapse wrote the files when it stored the media: they are as old
        // as the media (so past any settle time, unless the media is new).
        let written = std::time::SystemTime::now() - std::time::Duration::from_millis(m.created_age_ms.max(0) as u64);
        for (rel, size) in sizes {
            let data = content_for(&rel, size);
            let p = self.media.join(&rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, &data).unwrap();
            set_mtime(&p, written);
            self.files.insert(rel, data);
        }
    }

    /// Adds one media item (rows + files) and returns it.
    pub fn add(&mut self, m: Media) -> Media {
        self.add_all(vec![m.clone()]);
        m
    }

    /// Adds many media items in one database transaction.
    pub fn add_all(&mut self, items: Vec<Media>) -> Vec<Media> {
        let now = now_ms();
        let mut sql = String::from("BEGIN;\n");
        for m in &items {
            if m.insert_row {
                sql.push_str(&Self::rows_sql(m, now));
            }
        }
        sql.push_str("COMMIT;\n");
        self.sql(&sql);
        for m in &items {
            self.write_media_files(m);
            self.items.push(m.clone());
        }
        items
    }

    /// Expected content of a generated file.
    pub fn content(&self, rel: &str) -> &[u8] {
        self.files.get(rel).unwrap_or_else(|| panic!("{rel} was not generated"))
    }

    /// Every file this fixture generated: relative path -> content.
    pub fn generated(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.files
    }

    pub fn path_of(&self, rel: &str) -> PathBuf {
        self.media.join(rel)
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.media.join(rel).exists()
    }

    /// Every regular file now in the media store: relative path -> content.
    pub fn local_files(&self) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        walk(&self.media, &self.media, &mut out);
        out
    }

    /// Puts a generated file back (as if Synapse fetched it again), written
    /// an hour ago (past the settle time).
    pub fn restore(&self, rel: &str) {
        self.restore_written(rel, std::time::Duration::from_secs(3600));
    }

    /// Puts a generated file back, written `ago` ago.
    pub fn restore_written(&self, rel: &str, ago: std::time::Duration) {
        let p = self.media.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, self.content(rel)).unwrap();
        set_mtime(&p, std::time::SystemTime::now() - ago);
    }

    /// Writes `data` at `rel` in the media store (a damaged or different
    /// copy of a generated file), written `ago` ago.
    pub fn overwrite(&self, rel: &str, data: &[u8], ago: std::time::Duration) {
        let p = self.media.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        set_mtime(&p, std::time::SystemTime::now() - ago);
    }

    /// Removes a local file (as if Synapse or an admin deleted it).
    pub fn remove(&self, rel: &str) {
        std::fs::remove_file(self.media.join(rel)).unwrap();
    }

    /// Asserts every file of `m` is still on disk, unchanged.
    #[track_caller]
    pub fn assert_local_intact(&self, m: &Media) {
        for rel in m.rel_paths() {
            let p = self.media.join(&rel);
            let got = std::fs::read(&p).unwrap_or_else(|e| panic!("{rel} should still be on disk: {e}"));
            assert!(got == self.content(&rel), "{rel} changed on disk");
        }
    }

    /// Asserts no file of `m` is on disk any more.
    #[track_caller]
    pub fn assert_local_gone(&self, m: &Media) {
        for rel in m.rel_paths() {
            assert!(!self.exists(&rel), "{rel} should have been deleted locally");
        }
    }
}

/// Sets a file's modification time.
pub fn set_mtime(path: &Path, t: std::time::SystemTime) {
    std::fs::File::options().write(true).open(path).unwrap().set_modified(t).unwrap();
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            walk(root, &p, out);
        } else if ft.is_file() {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            out.insert(rel, std::fs::read(&p).unwrap());
        }
    }
}

/// Every regular file under `dir` (relative path -> content); empty if `dir` is missing.
pub fn files_under(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}
