//! Dendrite on SQLite (`file:` connection strings; media, accounts and
//! sync are three files): the same rules as on PostgreSQL with `?n`
//! parameters, the server's names as a JSON array (`json_each`), and a
//! page deleted in one transaction, media by media.

use std::collections::HashSet;

use anyhow::{Context as _, Result};
use rusqlite::{Connection, OptionalExtension, params};

use super::dendrite::{self as sql, AvatarSources, Local};
use super::{Cols, Deleted, MediaDb, MediaInfo, MediaKey, MediaRow, Retention, ThumbnailInfo, length, sqlite_stream};
use crate::media_store::MediaKind;

pub struct DendriteSqlite {
    conn: Connection,
    local: Local,
    /// The local names as a JSON array, for `json_each`.
    local_json: String,
    avatars: AvatarSources,
}

impl DendriteSqlite {
    pub(super) fn new(conn: Connection, local: Vec<String>, avatars: AvatarSources) -> Self {
        let local_json = serde_json::to_string(&local).unwrap_or_else(|_| "[]".to_owned());
        Self { conn, local: Local(local), local_json, avatars }
    }
}

/// The retention rule over `?1` cut-off, `?2` local names, `?3` whether
/// local, `?4` size bound.
const RULE: &str = "creation_ts < ?1 AND (media_origin IN (SELECT value FROM json_each(?2))) = ?3 \
     AND file_size_bytes > ?4";

impl MediaDb for DendriteSqlite {
    fn candidates(&mut self, rule: &Retention, after: Option<&MediaKey>, limit: usize) -> Result<Vec<MediaRow>> {
        let after = after.cloned().unwrap_or_default();
        let mut rows = Vec::new();
        sqlite_stream(
            &self.conn,
            &format!(
                "SELECT media_origin, media_id, base64hash FROM mediaapi_media_repository WHERE {RULE} \
                 AND (media_id, media_origin) > (?5, ?6) ORDER BY media_id, media_origin LIMIT ?7"
            ),
            params![
                rule.cutoff_ms,
                self.local_json,
                rule.kind == MediaKind::Local,
                Local::size_gt(rule),
                after.media_id,
                after.origin,
                limit as i64
            ],
            "mediaapi_media_repository",
            |r| {
                rows.push(self.local.row(r, 0)?);
                Ok(())
            },
        )?;
        Ok(rows)
    }

    fn delete_page(&mut self, rule: &Retention, page: &[MediaRow], dry_run: bool) -> Result<Vec<Deleted>> {
        let tx = self.conn.transaction().context("could not start a transaction on the homeserver database")?;
        let mut deleted = Vec::new();
        {
            let mut media = tx.prepare(&format!(
                "DELETE FROM mediaapi_media_repository WHERE media_id = ?5 AND media_origin = ?6 AND {RULE} \
                 RETURNING base64hash, file_size_bytes"
            ))?;
            let mut thumbs = tx.prepare(
                "DELETE FROM mediaapi_thumbnail WHERE media_id = ?1 AND media_origin = ?2 \
                 RETURNING width, height, resize_method, file_size_bytes",
            )?;
            let local = rule.kind == MediaKind::Local;
            for row in page {
                let key = &row.key;
                let gone = media
                    .query_row(
                        params![rule.cutoff_ms, self.local_json, local, Local::size_gt(rule), key.media_id, key.origin],
                        |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?)),
                    )
                    .optional()
                    .context("deleting media rows")?;
                let Some((hash, size)) = gone else { continue };
                let mut d = Deleted {
                    row: MediaRow { key: key.clone(), kind: row.kind, location: hash },
                    length: length(size),
                    thumbnails: Vec::new(),
                    shared: false,
                };
                let mut rows = thumbs.query(params![key.media_id, key.origin]).context("deleting thumbnail rows")?;
                while let Some(r) = rows.next()? {
                    d.thumbnails.push((sql::thumbnail_name(r, 0)?, length(r.int(3)?)));
                }
                deleted.push(d);
            }
            if !deleted.is_empty() {
                let hashes: Vec<&str> = deleted.iter().map(|d| d.row.location.as_str()).collect();
                let mut used = HashSet::new();
                sqlite_stream(
                    &tx,
                    "SELECT DISTINCT base64hash FROM mediaapi_media_repository \
                     WHERE base64hash IN (SELECT value FROM json_each(?1))",
                    [serde_json::to_string(&hashes)?],
                    "shared hashes",
                    |r| {
                        used.insert(r.string(0)?);
                        Ok(())
                    },
                )?;
                for d in &mut deleted {
                    d.shared = used.contains(&d.row.location);
                }
            }
        }
        if dry_run {
            tx.rollback().context("could not roll back the dry run")?;
        } else {
            tx.commit().context("could not commit to the homeserver database")?;
        }
        Ok(deleted)
    }

    fn avatars(&mut self, _server_name: Option<&str>) -> Result<HashSet<MediaKey>> {
        self.avatars.read()
    }

    fn for_each_media(&mut self, each: &mut dyn FnMut(MediaInfo) -> Result<()>) -> Result<()> {
        sqlite_stream(&self.conn, sql::MEDIA, [], "media rows", |r| each(self.local.media_info(r)?))
    }

    fn for_each_thumbnail(&mut self, each: &mut dyn FnMut(ThumbnailInfo) -> Result<()>) -> Result<()> {
        sqlite_stream(&self.conn, sql::THUMBNAILS, [], "thumbnail rows", |r| each(self.local.thumbnail_info(r)?))
    }

    fn orphan_thumbnail_rows(&mut self) -> Result<Vec<(MediaKey, u64)>> {
        let mut out = Vec::new();
        sqlite_stream(&self.conn, sql::ORPHAN_THUMBNAILS, [], "thumbnail rows", |r| {
            out.push(sql::orphan(r)?);
            Ok(())
        })?;
        Ok(out)
    }

    fn delete_orphan_thumbnail_rows(&mut self, key: &MediaKey) -> Result<u64> {
        let changed = self
            .conn
            .execute(
                "DELETE FROM mediaapi_thumbnail WHERE media_id = ?1 AND media_origin = ?2 AND NOT EXISTS \
                 (SELECT 1 FROM mediaapi_media_repository WHERE media_id = ?1 AND media_origin = ?2)",
                params![key.media_id, key.origin],
            )
            .context("deleting thumbnail rows")?;
        Ok(changed as u64)
    }

    fn has_media(&mut self, key: &MediaKey) -> Result<bool> {
        let found = self
            .conn
            .query_row(
                "SELECT 1 FROM mediaapi_media_repository WHERE media_id = ?1 AND media_origin = ?2",
                params![key.media_id, key.origin],
                |_| Ok(()),
            )
            .optional()
            .context("looking up a media row")?;
        Ok(found.is_some())
    }

    fn newest_activity(&mut self) -> Result<Option<i64>> {
        let newest =
            self.conn.query_row(sql::NEWEST, [], |r| r.get::<_, Option<i64>>(0)).context("the newest media rows")?;
        Ok(newest)
    }
}
