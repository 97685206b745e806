//! Synapse on SQLite: the same rules as on PostgreSQL, `?n` parameters,
//! and a page deleted in one transaction, media by media (a local file has
//! no round trips to save), each `DELETE ... RETURNING` what it removed.

use std::collections::HashSet;

use anyhow::{Context as _, Result};
use rusqlite::{Connection, OptionalExtension, params};

use super::synapse::{self as sql, local_rule, remote_rule};
use super::{
    Candidate, Cols, Deleted, MediaDb, MediaInfo, MediaKey, MediaRecord, MediaRow, Retention, SynapseDb, ThumbnailInfo,
    length, sqlite_stream,
};
use crate::media_store::MediaKind;

pub struct SynapseSqlite {
    conn: Connection,
    has_sha256: Option<bool>,
}

impl SynapseSqlite {
    pub fn new(conn: Connection) -> Self {
        Self { conn, has_sha256: None }
    }

    fn has_sha256(&mut self) -> bool {
        *self.has_sha256.get_or_insert_with(|| self.conn.prepare(sql::PROBE_SHA256).is_ok())
    }

    fn rows<T>(
        &self,
        query: &str,
        params: impl rusqlite::Params,
        what: &str,
        decode: impl Fn(&rusqlite::Row<'_>) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        sqlite_stream(&self.conn, query, params, what, |r| {
            out.push(decode(r)?);
            Ok(())
        })?;
        Ok(out)
    }
}

impl MediaDb for SynapseSqlite {
    fn candidates(&mut self, rule: &Retention, after: Option<&MediaKey>, limit: usize) -> Result<Vec<MediaRow>> {
        let after = after.cloned().unwrap_or_default();
        let decode = |r: &rusqlite::Row<'_>| sql::media_row(r, rule.kind);
        match rule.kind {
            MediaKind::Remote => self.rows(
                &format!(
                    "SELECT media_origin, media_id, filesystem_id FROM remote_media_cache WHERE {} \
                     AND (media_origin, media_id) > (?2, ?3) ORDER BY media_origin, media_id LIMIT ?4",
                    remote_rule(["?1"])
                ),
                params![rule.cutoff_ms, after.origin, after.media_id, limit as i64],
                "remote_media_cache",
                decode,
            ),
            MediaKind::Local => self.rows(
                &format!(
                    "SELECT '', media_id, media_id FROM local_media_repository WHERE {} AND media_id > ?3 \
                     ORDER BY media_id LIMIT ?4",
                    local_rule(["?1", "?2"])
                ),
                params![rule.cutoff_ms, rule.size_gt, after.media_id, limit as i64],
                "local_media_repository",
                decode,
            ),
        }
    }

    fn delete_page(&mut self, rule: &Retention, page: &[MediaRow], dry_run: bool) -> Result<Vec<Deleted>> {
        let tx = self.conn.transaction().context("could not start a transaction on the homeserver database")?;
        let (media_sql, thumbs_sql) = match rule.kind {
            MediaKind::Remote => (
                format!(
                    "DELETE FROM remote_media_cache WHERE media_origin = ?2 AND media_id = ?3 AND {} \
                     RETURNING filesystem_id, CAST(media_length AS BIGINT)",
                    remote_rule(["?1"])
                ),
                "DELETE FROM remote_media_cache_thumbnails WHERE media_origin = ?1 AND media_id = ?2 \
                 RETURNING 0, 0, thumbnail_width, thumbnail_height, thumbnail_type, thumbnail_method, \
                 thumbnail_length",
            ),
            MediaKind::Local => (
                format!(
                    "DELETE FROM local_media_repository WHERE media_id = ?2 AND {} \
                     RETURNING media_id, CAST(media_length AS BIGINT)",
                    local_rule(["?1", "?3"])
                ),
                "DELETE FROM local_media_repository_thumbnails WHERE media_id = ?1 \
                 RETURNING 0, 0, thumbnail_width, thumbnail_height, thumbnail_type, thumbnail_method, \
                 thumbnail_length",
            ),
        };
        let mut deleted = Vec::new();
        {
            let mut media = tx.prepare(&media_sql)?;
            let mut thumbs = tx.prepare(thumbs_sql)?;
            for row in page {
                let key = &row.key;
                let gone = match rule.kind {
                    MediaKind::Remote => media.query_row(params![rule.cutoff_ms, key.origin, key.media_id], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?))
                    }),
                    MediaKind::Local => media.query_row(params![rule.cutoff_ms, key.media_id, rule.size_gt], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?))
                    }),
                }
                .optional()
                .context("deleting media rows")?;
                let Some((location, media_length)) = gone else { continue };
                let mut d = Deleted {
                    row: MediaRow { key: key.clone(), kind: rule.kind, location },
                    length: length(media_length),
                    thumbnails: Vec::new(),
                    shared: false,
                };
                let mut rows = match rule.kind {
                    MediaKind::Remote => thumbs.query(params![key.origin, key.media_id]),
                    MediaKind::Local => thumbs.query(params![key.media_id]),
                }
                .context("deleting thumbnail rows")?;
                while let Some(r) = rows.next()? {
                    d.thumbnails.extend(sql::recorded_thumbnail(r, 2)?);
                }
                deleted.push(d);
            }
        }
        if dry_run {
            tx.rollback().context("could not roll back the dry run")?;
        } else {
            tx.commit().context("could not commit to the homeserver database")?;
        }
        Ok(deleted)
    }

    fn avatars(&mut self, server_name: Option<&str>) -> Result<HashSet<MediaKey>> {
        let urls = self.rows(
            sql::AVATARS,
            [],
            "avatars (profiles, room_memberships, user_directory, room_stats_state)",
            |r| r.text(0),
        )?;
        Ok(sql::local_avatars(urls, server_name))
    }

    fn for_each_media(&mut self, each: &mut dyn FnMut(MediaInfo) -> Result<()>) -> Result<()> {
        sqlite_stream(&self.conn, sql::MEDIA, [], "media rows", |r| each(sql::media_info(r)?))
    }

    fn for_each_thumbnail(&mut self, each: &mut dyn FnMut(ThumbnailInfo) -> Result<()>) -> Result<()> {
        sqlite_stream(&self.conn, sql::THUMBNAILS, [], "thumbnail rows", |r| match sql::thumbnail_info(r)? {
            Some(t) => each(t),
            None => Ok(()),
        })
    }

    fn orphan_thumbnail_rows(&mut self) -> Result<Vec<(MediaKey, u64)>> {
        self.rows(sql::ORPHAN_THUMBNAILS, [], "thumbnail rows", |r| sql::orphan(r))
    }

    fn delete_orphan_thumbnail_rows(&mut self, key: &MediaKey) -> Result<u64> {
        let changed = if key.origin.is_empty() {
            self.conn.execute(
                "DELETE FROM local_media_repository_thumbnails WHERE media_id = ?1 \
                 AND NOT EXISTS (SELECT 1 FROM local_media_repository WHERE media_id = ?1)",
                params![key.media_id],
            )
        } else {
            self.conn.execute(
                "DELETE FROM remote_media_cache_thumbnails WHERE media_origin = ?1 AND media_id = ?2 \
                 AND NOT EXISTS (SELECT 1 FROM remote_media_cache WHERE media_origin = ?1 AND media_id = ?2)",
                params![key.origin, key.media_id],
            )
        };
        Ok(changed.context("deleting thumbnail rows")? as u64)
    }

    fn has_media(&mut self, key: &MediaKey) -> Result<bool> {
        let found = if key.origin.is_empty() {
            self.rows(
                "SELECT 1 FROM local_media_repository WHERE media_id = ?1",
                [&key.media_id],
                "media rows",
                |_| Ok(()),
            )?
        } else {
            self.rows(
                "SELECT 1 FROM remote_media_cache WHERE media_origin = ?1 AND media_id = ?2",
                [&key.origin, &key.media_id],
                "media rows",
                |_| Ok(()),
            )?
        };
        Ok(!found.is_empty())
    }

    fn newest_activity(&mut self) -> Result<Option<i64>> {
        let event = self
            .rows(sql::NEWEST_EVENT, [], "the newest event", |r| r.int(0))
            .ok()
            .and_then(|v| v.into_iter().next().flatten());
        let media = self.rows(sql::NEWEST_MEDIA, [], "the newest media rows", |r| r.int(0))?;
        Ok(event.max(media.into_iter().next().flatten()))
    }
}

impl SynapseDb for SynapseSqlite {
    fn for_each_candidate(
        &mut self,
        kind: MediaKind,
        cutoff_ms: i64,
        since_ms: i64,
        ordered: bool,
        each: &mut dyn FnMut(Candidate) -> Result<()>,
    ) -> Result<()> {
        let (query, order, table) = match kind {
            MediaKind::Local => (
                "SELECT '', media_id, media_id FROM local_media_repository \
                 WHERE COALESCE(last_access_ts, created_ts) < ?1 AND COALESCE(last_access_ts, created_ts) >= ?2 \
                 AND url_cache IS NULL",
                " ORDER BY media_id COLLATE BINARY",
                "local_media_repository",
            ),
            MediaKind::Remote => (
                "SELECT media_origin, media_id, filesystem_id FROM remote_media_cache \
                 WHERE COALESCE(last_access_ts, created_ts) < ?1 AND COALESCE(last_access_ts, created_ts) >= ?2",
                " ORDER BY media_origin COLLATE BINARY, media_id COLLATE BINARY",
                "remote_media_cache",
            ),
        };
        let query = if ordered { format!("{query}{order}") } else { query.to_owned() };
        sqlite_stream(&self.conn, &query, [cutoff_ms, since_ms], table, |r| each(sql::candidate(r, kind)?))
    }

    fn count_candidates(&mut self, kind: MediaKind, before_ms: i64) -> Result<u64> {
        let sql = match kind {
            MediaKind::Local => {
                "SELECT COUNT(*) FROM local_media_repository \
                 WHERE COALESCE(last_access_ts, created_ts) < ?1 AND url_cache IS NULL"
            }
            MediaKind::Remote => {
                "SELECT COUNT(*) FROM remote_media_cache WHERE COALESCE(last_access_ts, created_ts) < ?1"
            }
        };
        let count: i64 = self.conn.query_row(sql, [before_ms], |r| r.get(0)).context("counting candidates")?;
        Ok(length(Some(count)).unwrap_or(0))
    }

    fn media_record(&mut self, origin: &str, media_id: &str) -> Result<Option<MediaRecord>> {
        let sha = if self.has_sha256() { "sha256" } else { "NULL" };
        let decode = |r: &rusqlite::Row<'_>| sql::media_record(r, []);
        let thumb = |r: &rusqlite::Row<'_>| sql::recorded_thumbnail(r, 0);
        let (media, thumbs) = if origin.is_empty() {
            (
                self.rows(
                    &format!("SELECT media_length, {sha} FROM local_media_repository WHERE media_id = ?1"),
                    [media_id],
                    "the media's record",
                    decode,
                )?,
                self.rows(
                    "SELECT thumbnail_width, thumbnail_height, thumbnail_type, thumbnail_method, thumbnail_length \
                     FROM local_media_repository_thumbnails WHERE media_id = ?1",
                    [media_id],
                    "the media's thumbnail rows",
                    thumb,
                )?,
            )
        } else {
            (
                self.rows(
                    &format!(
                        "SELECT media_length, {sha} FROM remote_media_cache WHERE media_origin = ?1 AND media_id = ?2"
                    ),
                    [origin, media_id],
                    "the media's record",
                    decode,
                )?,
                self.rows(
                    "SELECT thumbnail_width, thumbnail_height, thumbnail_type, thumbnail_method, thumbnail_length \
                     FROM remote_media_cache_thumbnails WHERE media_origin = ?1 AND media_id = ?2",
                    [origin, media_id],
                    "the media's thumbnail rows",
                    thumb,
                )?,
            )
        };
        let Some(record) = media.into_iter().next() else { return Ok(None) };
        Ok(Some(MediaRecord { thumbnails: thumbs.into_iter().flatten().collect(), ..record }))
    }

    fn last_used(&mut self, origin: &str, media_id: &str) -> Result<Option<i64>> {
        let found = if origin.is_empty() {
            self.conn
                .query_row(
                    "SELECT COALESCE(last_access_ts, created_ts) FROM local_media_repository WHERE media_id = ?1",
                    [media_id],
                    |r| r.get::<_, Option<i64>>(0),
                )
                .optional()
        } else {
            self.conn
                .query_row(
                    "SELECT COALESCE(last_access_ts, created_ts) FROM remote_media_cache \
                     WHERE media_origin = ?1 AND media_id = ?2",
                    [origin, media_id],
                    |r| r.get::<_, Option<i64>>(0),
                )
                .optional()
        };
        Ok(found.context("reading the media's last access")?.map(|t| t.unwrap_or(0)))
    }
}
