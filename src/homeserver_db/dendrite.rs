//! Dendrite's media tables (`mediaapi_media_repository`,
//! `mediaapi_thumbnail`, keyed by `(media_id, media_origin)`), the avatars
//! in its user and sync databases, and what both engines share: the
//! statements without parameters and how rows decode. The statements with
//! parameters are in `dendrite_postgres` and `dendrite_sqlite`.
//!
//! Dendrite has no last-access column: a media's age is `creation_ts`,
//! when Dendrite stored the row (for remote media: when it fetched it).
//! Local means an origin among the server's names. One folder holds the
//! bytes of every row with the same `base64hash`, whatever its origin, so
//! a page deletion says which hashes other rows still use.

use std::collections::HashSet;

use anyhow::Result;

use super::{
    Cols, MediaDb, MediaInfo, MediaKey, MediaRow, add_avatar, connect_postgres, open_sqlite, pg_stream, sqlite_stream,
};
use crate::config::DbConfig;
use crate::config::dendrite::DendriteSettings;
use crate::media_store::{MediaKind, dendrite_thumbnail_name};

/// Connect to a Dendrite homeserver's databases: the media database
/// (writable for purge and check --fix), and its user and sync databases
/// for the avatars, read only.
pub fn connect(settings: &DendriteSettings, writable: bool) -> Result<Box<dyn MediaDb>> {
    let avatars = AvatarSources { accounts: settings.accounts_db.clone(), sync: settings.sync_db.clone() };
    let local = settings.server_names.clone();
    Ok(match &settings.media_db {
        DbConfig::Sqlite { path } => {
            Box::new(super::dendrite_sqlite::DendriteSqlite::new(open_sqlite(path, writable)?, local, avatars))
        }
        DbConfig::Postgres(pg) => {
            Box::new(super::dendrite_postgres::DendritePostgres::new(connect_postgres(pg)?, local, avatars))
        }
    })
}

/// Every media row.
pub(super) const MEDIA: &str = "SELECT media_origin, media_id, base64hash, CAST(file_size_bytes AS BIGINT) \
     FROM mediaapi_media_repository";

/// Every thumbnail row of a media that has a row, with the media's hash.
pub(super) const THUMBNAILS: &str = "SELECT m.media_origin, m.base64hash, CAST(t.width AS BIGINT), \
       CAST(t.height AS BIGINT), t.resize_method, CAST(t.file_size_bytes AS BIGINT) \
     FROM mediaapi_thumbnail t JOIN mediaapi_media_repository m \
       ON m.media_id = t.media_id AND m.media_origin = t.media_origin";

/// Thumbnail rows whose media row is gone, per media.
pub(super) const ORPHAN_THUMBNAILS: &str = "SELECT media_origin, media_id, CAST(COUNT(*) AS BIGINT) \
     FROM mediaapi_thumbnail t WHERE NOT EXISTS (SELECT 1 FROM mediaapi_media_repository m \
       WHERE m.media_id = t.media_id AND m.media_origin = t.media_origin) \
     GROUP BY media_origin, media_id";

/// When Dendrite last stored a media or a thumbnail.
pub(super) const NEWEST: &str = "SELECT CAST(MAX(ts) AS BIGINT) FROM ( \
     SELECT MAX(creation_ts) AS ts FROM mediaapi_media_repository \
     UNION ALL SELECT MAX(creation_ts) FROM mediaapi_thumbnail) AS newest";

/// Profile avatars (user API's account database).
const PROFILE_AVATARS: &str = "SELECT avatar_url FROM userapi_profiles WHERE avatar_url LIKE 'mxc://%'";

/// Room avatars and per-room member avatars: the current state events
/// (sync API's database), whose JSON holds `content.url` or
/// `content.avatar_url`.
const ROOM_AVATARS: &str = "SELECT type, headered_event_json FROM syncapi_current_room_state \
     WHERE type IN ('m.room.avatar', 'm.room.member') AND headered_event_json LIKE '%mxc://%'";

/// Which origins are local, and the kind of a row by its origin.
#[derive(Debug, Clone)]
pub(super) struct Local(pub Vec<String>);

impl Local {
    pub fn kind(&self, origin: &str) -> MediaKind {
        if self.0.iter().any(|n| n == origin) { MediaKind::Local } else { MediaKind::Remote }
    }

    /// The size bound of a rule (remote rules have none).
    pub fn size_gt(rule: &super::Retention) -> i64 {
        if rule.kind == MediaKind::Local { rule.size_gt } else { -1 }
    }

    /// A row of the media table read as (origin, id, hash) from `first` on.
    pub fn row(&self, r: &impl Cols, first: usize) -> Result<MediaRow> {
        let origin = r.string(first)?;
        Ok(MediaRow {
            kind: self.kind(&origin),
            key: MediaKey::new(origin, r.string(first + 1)?),
            location: r.string(first + 2)?,
        })
    }

    /// A row of [`MEDIA`].
    pub fn media_info(&self, r: &impl Cols) -> Result<MediaInfo> {
        Ok(MediaInfo { row: self.row(r, 0)?, length: r.int(3)?, no_bytes: None })
    }

    /// A row of [`THUMBNAILS`].
    pub fn thumbnail_info(&self, r: &impl Cols) -> Result<super::ThumbnailInfo> {
        let origin = r.string(0)?;
        Ok(super::ThumbnailInfo {
            kind: self.kind(&origin),
            origin,
            location: r.string(1)?,
            name: thumbnail_name(r, 2)?,
            length: r.int(5)?,
        })
    }
}

/// The file name of the thumbnail whose width, height and method are the
/// columns from `first` on.
pub(super) fn thumbnail_name(r: &impl Cols, first: usize) -> Result<String> {
    Ok(dendrite_thumbnail_name(r.int(first)?.unwrap_or(0), r.int(first + 1)?.unwrap_or(0), &r.string(first + 2)?))
}

/// A row of [`ORPHAN_THUMBNAILS`].
pub(super) fn orphan(r: &impl Cols) -> Result<(MediaKey, u64)> {
    Ok((MediaKey::new(r.string(0)?, r.string(1)?), r.int(2)?.and_then(|n| u64::try_from(n).ok()).unwrap_or(1)))
}

/// Where the avatars are: the user API's account database and the sync
/// API's database (three separate files with SQLite).
pub(super) struct AvatarSources {
    accounts: DbConfig,
    sync: DbConfig,
}

impl AvatarSources {
    /// Every avatar: profiles, rooms and per-room members, as whole
    /// `mxc://origin/id` keys.
    pub fn read(&self) -> Result<HashSet<MediaKey>> {
        let mut avatars = HashSet::new();
        texts(&self.accounts, PROFILE_AVATARS, "profile avatars (userapi_profiles)", &mut |r| {
            add_avatar(&mut avatars, r.text(0)?.as_deref());
            Ok(())
        })?;
        texts(&self.sync, ROOM_AVATARS, "room and member avatars (syncapi_current_room_state)", &mut |r| {
            let (kind, json) = (r.string(0)?, r.string(1)?);
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&json) else { return Ok(()) };
            let field = if kind == "m.room.avatar" { "url" } else { "avatar_url" };
            add_avatar(&mut avatars, event.get("content").and_then(|c| c.get(field)).and_then(|u| u.as_str()));
            Ok(())
        })?;
        log::debug!("{} media are avatars and will be kept", avatars.len());
        Ok(avatars)
    }
}

/// Stream a statement without parameters on either engine.
fn texts(config: &DbConfig, sql: &str, what: &str, each: &mut dyn FnMut(&dyn TextRow) -> Result<()>) -> Result<()> {
    match config {
        DbConfig::Sqlite { path } => {
            let conn = open_sqlite(path, false)?;
            sqlite_stream(&conn, sql, [], what, |r| each(r))
        }
        DbConfig::Postgres(pg) => pg_stream(&mut connect_postgres(pg)?, sql, &[], what, |r| each(&r)),
    }
}

/// [`Cols`] as an object, for [`texts`].
trait TextRow {
    fn text(&self, i: usize) -> Result<Option<String>>;
    fn string(&self, i: usize) -> Result<String> {
        Ok(self.text(i)?.unwrap_or_default())
    }
}

impl<T: Cols> TextRow for T {
    fn text(&self, i: usize) -> Result<Option<String>> {
        Cols::text(self, i)
    }
}
