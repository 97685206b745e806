//! Synapse on PostgreSQL: pages by row value, so PostgreSQL seeks the
//! unique index instead of rescanning; a page deleted in one transaction
//! with two set-based `DELETE ... RETURNING` statements over arrays of keys.

use std::collections::{BTreeMap, HashSet};

use anyhow::{Result, anyhow};
use postgres::Client;

use super::synapse::{self as sql, local_rule, remote_rule};
use super::{
    Candidate, Cols, Deleted, MediaDb, MediaInfo, MediaKey, MediaRecord, MediaRow, Retention, SynapseDb, ThumbnailInfo,
    length, pg_error_text, pg_query, pg_stream,
};
use crate::media_store::MediaKind;

pub struct SynapsePostgres {
    client: Client,
    has_sha256: Option<bool>,
}

impl SynapsePostgres {
    pub fn new(client: Client) -> Self {
        Self { client, has_sha256: None }
    }

    fn has_sha256(&mut self) -> bool {
        *self.has_sha256.get_or_insert_with(|| self.client.query(sql::PROBE_SHA256, &[]).is_ok())
    }
}

impl MediaDb for SynapsePostgres {
    fn candidates(&mut self, rule: &Retention, after: Option<&MediaKey>, limit: usize) -> Result<Vec<MediaRow>> {
        let after = after.cloned().unwrap_or_default();
        let limit = limit as i64;
        let rows = match rule.kind {
            MediaKind::Remote => pg_query(
                &mut self.client,
                &format!(
                    "SELECT media_origin, media_id, filesystem_id FROM remote_media_cache WHERE {} \
                     AND (media_origin, media_id) > ($2, $3) ORDER BY media_origin, media_id LIMIT $4",
                    remote_rule(["$1"])
                ),
                &[&rule.cutoff_ms, &after.origin, &after.media_id, &limit],
                "remote_media_cache",
            )?,
            MediaKind::Local => pg_query(
                &mut self.client,
                &format!(
                    "SELECT '', media_id, media_id FROM local_media_repository WHERE {} AND media_id > $3 \
                     ORDER BY media_id LIMIT $4",
                    local_rule(["$1", "CAST($2 AS BIGINT)"])
                ),
                &[&rule.cutoff_ms, &rule.size_gt, &after.media_id, &limit],
                "local_media_repository",
            )?,
        };
        rows.iter().map(|r| sql::media_row(r, rule.kind)).collect()
    }

    fn delete_page(&mut self, rule: &Retention, page: &[MediaRow], dry_run: bool) -> Result<Vec<Deleted>> {
        if page.is_empty() {
            return Ok(Vec::new());
        }
        let origins: Vec<&str> = page.iter().map(|r| r.key.origin.as_str()).collect();
        let ids: Vec<&str> = page.iter().map(|r| r.key.media_id.as_str()).collect();
        let mut tx =
            self.client.transaction().map_err(|e| anyhow!("could not start a transaction: {}", pg_error_text(&e)))?;
        let (media_sql, thumbs_sql) = match rule.kind {
            MediaKind::Remote => (
                format!(
                    "DELETE FROM remote_media_cache WHERE (media_origin, media_id) IN \
                     (SELECT * FROM unnest($2::text[], $3::text[])) AND {} \
                     RETURNING media_origin, media_id, filesystem_id, CAST(media_length AS BIGINT)",
                    remote_rule(["$1"])
                ),
                "DELETE FROM remote_media_cache_thumbnails t USING unnest($1::text[], $2::text[]) AS g(o, i) \
                 WHERE t.media_origin = g.o AND t.media_id = g.i \
                 RETURNING t.media_origin, t.media_id, CAST(t.thumbnail_width AS BIGINT), \
                 CAST(t.thumbnail_height AS BIGINT), t.thumbnail_type, t.thumbnail_method, \
                 CAST(t.thumbnail_length AS BIGINT)",
            ),
            MediaKind::Local => (
                format!(
                    "DELETE FROM local_media_repository WHERE media_id = ANY($3::text[]) AND {} \
                     RETURNING '', media_id, media_id, CAST(media_length AS BIGINT)",
                    local_rule(["$1", "CAST($2 AS BIGINT)"])
                ),
                "DELETE FROM local_media_repository_thumbnails WHERE media_id = ANY($1::text[]) \
                 RETURNING '', media_id, CAST(thumbnail_width AS BIGINT), CAST(thumbnail_height AS BIGINT), \
                 thumbnail_type, thumbnail_method, CAST(thumbnail_length AS BIGINT)",
            ),
        };
        let deleted_media = match rule.kind {
            MediaKind::Remote => tx.query(&media_sql, &[&rule.cutoff_ms, &origins, &ids]),
            MediaKind::Local => tx.query(&media_sql, &[&rule.cutoff_ms, &rule.size_gt, &ids]),
        }
        .map_err(|e| anyhow!("deleting media rows: {}", pg_error_text(&e)))?;
        let mut gone = BTreeMap::new();
        for r in &deleted_media {
            let row = sql::media_row(r, rule.kind)?;
            gone.insert(
                row.key.clone(),
                Deleted { row, length: length(r.int(3)?), thumbnails: Vec::new(), shared: false },
            );
        }
        let (origins, ids): (Vec<&str>, Vec<&str>) =
            gone.keys().map(|k| (k.origin.as_str(), k.media_id.as_str())).unzip();
        if !gone.is_empty() {
            let thumbs = match rule.kind {
                MediaKind::Remote => tx.query(thumbs_sql, &[&origins, &ids]),
                MediaKind::Local => tx.query(thumbs_sql, &[&ids]),
            }
            .map_err(|e| anyhow!("deleting thumbnail rows: {}", pg_error_text(&e)))?;
            for r in &thumbs {
                let key = MediaKey::new(r.string(0)?, r.string(1)?);
                if let (Some(d), Some(thumb)) = (gone.get_mut(&key), sql::recorded_thumbnail(r, 2)?) {
                    d.thumbnails.push(thumb);
                }
            }
        }
        if dry_run {
            tx.rollback().map_err(|e| anyhow!("could not roll back the dry run: {}", pg_error_text(&e)))?;
        } else {
            tx.commit().map_err(|e| anyhow!("could not commit to the homeserver database: {}", pg_error_text(&e)))?;
        }
        Ok(gone.into_values().collect())
    }

    fn avatars(&mut self, server_name: Option<&str>) -> Result<HashSet<MediaKey>> {
        let rows = pg_query(
            &mut self.client,
            sql::AVATARS,
            &[],
            "avatars (profiles, room_memberships, user_directory, room_stats_state)",
        )?;
        let urls = rows.iter().map(|r| r.text(0)).collect::<Result<Vec<_>>>()?;
        Ok(sql::local_avatars(urls, server_name))
    }

    fn for_each_media(&mut self, each: &mut dyn FnMut(MediaInfo) -> Result<()>) -> Result<()> {
        pg_stream(&mut self.client, sql::MEDIA, &[], "media rows", |r| each(sql::media_info(&r)?))
    }

    fn for_each_thumbnail(&mut self, each: &mut dyn FnMut(ThumbnailInfo) -> Result<()>) -> Result<()> {
        pg_stream(&mut self.client, sql::THUMBNAILS, &[], "thumbnail rows", |r| match sql::thumbnail_info(&r)? {
            Some(t) => each(t),
            None => Ok(()),
        })
    }

    fn orphan_thumbnail_rows(&mut self) -> Result<Vec<(MediaKey, u64)>> {
        pg_query(&mut self.client, sql::ORPHAN_THUMBNAILS, &[], "thumbnail rows")?.iter().map(sql::orphan).collect()
    }

    fn delete_orphan_thumbnail_rows(&mut self, key: &MediaKey) -> Result<u64> {
        let result = if key.origin.is_empty() {
            self.client.execute(
                "DELETE FROM local_media_repository_thumbnails WHERE media_id = $1 \
                 AND NOT EXISTS (SELECT 1 FROM local_media_repository WHERE media_id = $1)",
                &[&key.media_id],
            )
        } else {
            self.client.execute(
                "DELETE FROM remote_media_cache_thumbnails WHERE media_origin = $1 AND media_id = $2 \
                 AND NOT EXISTS (SELECT 1 FROM remote_media_cache WHERE media_origin = $1 AND media_id = $2)",
                &[&key.origin, &key.media_id],
            )
        };
        result.map_err(|e| anyhow!("deleting thumbnail rows: {}", pg_error_text(&e)))
    }

    fn has_media(&mut self, key: &MediaKey) -> Result<bool> {
        let rows = if key.origin.is_empty() {
            pg_query(
                &mut self.client,
                "SELECT 1 FROM local_media_repository WHERE media_id = $1",
                &[&key.media_id],
                "media rows",
            )?
        } else {
            pg_query(
                &mut self.client,
                "SELECT 1 FROM remote_media_cache WHERE media_origin = $1 AND media_id = $2",
                &[&key.origin, &key.media_id],
                "media rows",
            )?
        };
        Ok(!rows.is_empty())
    }

    fn newest_activity(&mut self) -> Result<Option<i64>> {
        let event = self.client.query(sql::NEWEST_EVENT, &[]).ok().and_then(|rows| rows.first()?.int(0).ok()?);
        let media = pg_query(&mut self.client, sql::NEWEST_MEDIA, &[], "the newest media rows")?;
        Ok(event.max(media.first().map(|r| r.int(0)).transpose()?.flatten()))
    }
}

/// update-db's candidates: last used before $1 and not before $2, in
/// cache.db's key order (bytewise: `COLLATE "C"`).
const LOCAL_CANDIDATES: &str = "SELECT '', media_id, media_id FROM local_media_repository \
     WHERE COALESCE(last_access_ts, created_ts) < $1 AND COALESCE(last_access_ts, created_ts) >= $2 \
     AND url_cache IS NULL";
const REMOTE_CANDIDATES: &str = "SELECT media_origin, media_id, filesystem_id FROM remote_media_cache \
     WHERE COALESCE(last_access_ts, created_ts) < $1 AND COALESCE(last_access_ts, created_ts) >= $2";
/// cache.db's key order (bytes, as SQLite compares text), whatever the
/// database's collation.
const LOCAL_ORDER: &str = " ORDER BY media_id COLLATE \"C\"";
const REMOTE_ORDER: &str = " ORDER BY media_origin COLLATE \"C\", media_id COLLATE \"C\"";

impl SynapseDb for SynapsePostgres {
    fn for_each_candidate(
        &mut self,
        kind: MediaKind,
        cutoff_ms: i64,
        since_ms: i64,
        ordered: bool,
        each: &mut dyn FnMut(Candidate) -> Result<()>,
    ) -> Result<()> {
        let (query, order, table) = match kind {
            MediaKind::Local => (LOCAL_CANDIDATES, LOCAL_ORDER, "local_media_repository"),
            MediaKind::Remote => (REMOTE_CANDIDATES, REMOTE_ORDER, "remote_media_cache"),
        };
        let query = if ordered { format!("{query}{order}") } else { query.to_owned() };
        pg_stream(&mut self.client, &query, &[&cutoff_ms, &since_ms], table, |r| each(sql::candidate(&r, kind)?))
    }

    fn count_candidates(&mut self, kind: MediaKind, before_ms: i64) -> Result<u64> {
        let (sql, table) = match kind {
            MediaKind::Local => (
                "SELECT CAST(COUNT(*) AS BIGINT) FROM local_media_repository \
                 WHERE COALESCE(last_access_ts, created_ts) < $1 AND url_cache IS NULL",
                "local_media_repository",
            ),
            MediaKind::Remote => (
                "SELECT CAST(COUNT(*) AS BIGINT) FROM remote_media_cache \
                 WHERE COALESCE(last_access_ts, created_ts) < $1",
                "remote_media_cache",
            ),
        };
        let rows = pg_query(&mut self.client, sql, &[&before_ms], table)?;
        Ok(length(rows.first().map(|r| r.int(0)).transpose()?.flatten()).unwrap_or(0))
    }

    fn media_record(&mut self, origin: &str, media_id: &str) -> Result<Option<MediaRecord>> {
        let sha = if self.has_sha256() { "sha256" } else { "NULL::text" };
        let (media, thumbs) = if origin.is_empty() {
            let p: &[&(dyn postgres::types::ToSql + Sync)] = &[&media_id];
            (
                pg_query(
                    &mut self.client,
                    &format!(
                        "SELECT CAST(media_length AS BIGINT), {sha} FROM local_media_repository WHERE media_id = $1"
                    ),
                    p,
                    "the media's record",
                )?,
                pg_query(
                    &mut self.client,
                    "SELECT CAST(thumbnail_width AS BIGINT), CAST(thumbnail_height AS BIGINT), thumbnail_type, \
                     thumbnail_method, CAST(thumbnail_length AS BIGINT) FROM local_media_repository_thumbnails \
                     WHERE media_id = $1",
                    p,
                    "the media's thumbnail rows",
                )?,
            )
        } else {
            let p: &[&(dyn postgres::types::ToSql + Sync)] = &[&origin, &media_id];
            (
                pg_query(
                    &mut self.client,
                    &format!(
                        "SELECT CAST(media_length AS BIGINT), {sha} FROM remote_media_cache \
                         WHERE media_origin = $1 AND media_id = $2"
                    ),
                    p,
                    "the media's record",
                )?,
                pg_query(
                    &mut self.client,
                    "SELECT CAST(thumbnail_width AS BIGINT), CAST(thumbnail_height AS BIGINT), thumbnail_type, \
                     thumbnail_method, CAST(thumbnail_length AS BIGINT) FROM remote_media_cache_thumbnails \
                     WHERE media_origin = $1 AND media_id = $2",
                    p,
                    "the media's thumbnail rows",
                )?,
            )
        };
        let Some(m) = media.first() else { return Ok(None) };
        let thumbnails = thumbs.iter().map(|t| sql::recorded_thumbnail(t, 0)).collect::<Result<Vec<_>>>()?;
        sql::media_record(m, thumbnails.into_iter().flatten()).map(Some)
    }

    fn last_used(&mut self, origin: &str, media_id: &str) -> Result<Option<i64>> {
        let rows = if origin.is_empty() {
            pg_query(
                &mut self.client,
                "SELECT CAST(COALESCE(last_access_ts, created_ts) AS BIGINT) FROM local_media_repository \
                 WHERE media_id = $1",
                &[&media_id],
                "the media's last access",
            )?
        } else {
            pg_query(
                &mut self.client,
                "SELECT CAST(COALESCE(last_access_ts, created_ts) AS BIGINT) FROM remote_media_cache \
                 WHERE media_origin = $1 AND media_id = $2",
                &[&origin, &media_id],
                "the media's last access",
            )?
        };
        rows.first().map(|r| Ok(r.int(0)?.unwrap_or(0))).transpose()
    }
}
