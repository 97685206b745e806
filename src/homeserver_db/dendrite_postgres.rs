//! Dendrite on PostgreSQL: pages by the row value `(media_id,
//! media_origin)`, the order of Dendrite's unique index, so PostgreSQL
//! seeks it; a page deleted in one transaction, set-based over arrays of
//! keys, which also asks which of the deleted hashes other rows still use.

use std::collections::{BTreeMap, HashSet};

use anyhow::{Result, anyhow};
use postgres::Client;

use super::dendrite::{self as sql, AvatarSources, Local};
use super::{
    Cols, Deleted, MediaDb, MediaInfo, MediaKey, MediaRow, Retention, ThumbnailInfo, length, pg_error_text, pg_query,
    pg_stream,
};
use crate::media_store::MediaKind;

pub struct DendritePostgres {
    client: Client,
    local: Local,
    avatars: AvatarSources,
}

impl DendritePostgres {
    pub(super) fn new(client: Client, local: Vec<String>, avatars: AvatarSources) -> Self {
        Self { client, local: Local(local), avatars }
    }
}

/// The retention rule over `$1` cut-off, `$2` local names, `$3` whether
/// local, `$4` size bound.
const RULE: &str = "creation_ts < $1 AND (media_origin = ANY($2::text[])) = $3 AND file_size_bytes > $4";

impl MediaDb for DendritePostgres {
    fn candidates(&mut self, rule: &Retention, after: Option<&MediaKey>, limit: usize) -> Result<Vec<MediaRow>> {
        let after = after.cloned().unwrap_or_default();
        let rows = pg_query(
            &mut self.client,
            &format!(
                "SELECT media_origin, media_id, base64hash FROM mediaapi_media_repository WHERE {RULE} \
                 AND (media_id, media_origin) > ($5, $6) ORDER BY media_id, media_origin LIMIT $7"
            ),
            &[
                &rule.cutoff_ms,
                &self.local.0,
                &(rule.kind == MediaKind::Local),
                &Local::size_gt(rule),
                &after.media_id,
                &after.origin,
                &(limit as i64),
            ],
            "mediaapi_media_repository",
        )?;
        rows.iter().map(|r| self.local.row(r, 0)).collect()
    }

    fn delete_page(&mut self, rule: &Retention, page: &[MediaRow], dry_run: bool) -> Result<Vec<Deleted>> {
        if page.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = page.iter().map(|r| r.key.media_id.as_str()).collect();
        let origins: Vec<&str> = page.iter().map(|r| r.key.origin.as_str()).collect();
        let failed = |what: &'static str| move |e: postgres::Error| anyhow!("{what}: {}", pg_error_text(&e));
        let mut tx = self.client.transaction().map_err(failed("could not start a transaction"))?;
        let media = tx
            .query(
                &format!(
                    "DELETE FROM mediaapi_media_repository \
                     WHERE (media_id, media_origin) IN (SELECT * FROM unnest($5::text[], $6::text[])) AND {RULE} \
                     RETURNING media_origin, media_id, base64hash, file_size_bytes"
                ),
                &[
                    &rule.cutoff_ms,
                    &self.local.0,
                    &(rule.kind == MediaKind::Local),
                    &Local::size_gt(rule),
                    &ids,
                    &origins,
                ],
            )
            .map_err(failed("deleting media rows"))?;
        let mut gone = BTreeMap::new();
        for r in &media {
            let row = self.local.row(r, 0)?;
            gone.insert(row.key.clone(), Deleted { row, length: length(r.int(3)?), thumbnails: vec![], shared: false });
        }
        if !gone.is_empty() {
            let (ids, origins): (Vec<&str>, Vec<&str>) =
                gone.keys().map(|k| (k.media_id.as_str(), k.origin.as_str())).unzip();
            let thumbs = tx
                .query(
                    "DELETE FROM mediaapi_thumbnail t USING unnest($1::text[], $2::text[]) AS g(i, o) \
                     WHERE t.media_id = g.i AND t.media_origin = g.o \
                     RETURNING t.media_origin, t.media_id, CAST(t.width AS BIGINT), CAST(t.height AS BIGINT), \
                     t.resize_method, t.file_size_bytes",
                    &[&ids, &origins],
                )
                .map_err(failed("deleting thumbnail rows"))?;
            for r in &thumbs {
                if let Some(d) = gone.get_mut(&MediaKey::new(r.string(0)?, r.string(1)?)) {
                    d.thumbnails.push((sql::thumbnail_name(r, 2)?, length(r.int(5)?)));
                }
            }
            let hashes: Vec<&str> = gone.values().map(|d| d.row.location.as_str()).collect();
            let used: HashSet<String> = tx
                .query(
                    "SELECT DISTINCT base64hash FROM mediaapi_media_repository WHERE base64hash = ANY($1::text[])",
                    &[&hashes],
                )
                .map_err(failed("looking up shared hashes"))?
                .iter()
                .map(|r| r.string(0))
                .collect::<Result<_>>()?;
            for d in gone.values_mut() {
                d.shared = used.contains(&d.row.location);
            }
        }
        if dry_run {
            tx.rollback().map_err(failed("could not roll back the dry run"))?;
        } else {
            tx.commit().map_err(failed("could not commit to the homeserver database"))?;
        }
        Ok(gone.into_values().collect())
    }

    fn avatars(&mut self, _server_name: Option<&str>) -> Result<HashSet<MediaKey>> {
        self.avatars.read()
    }

    fn for_each_media(&mut self, each: &mut dyn FnMut(MediaInfo) -> Result<()>) -> Result<()> {
        let local = self.local.clone();
        pg_stream(&mut self.client, sql::MEDIA, &[], "media rows", |r| each(local.media_info(&r)?))
    }

    fn for_each_thumbnail(&mut self, each: &mut dyn FnMut(ThumbnailInfo) -> Result<()>) -> Result<()> {
        let local = self.local.clone();
        pg_stream(&mut self.client, sql::THUMBNAILS, &[], "thumbnail rows", |r| each(local.thumbnail_info(&r)?))
    }

    fn orphan_thumbnail_rows(&mut self) -> Result<Vec<(MediaKey, u64)>> {
        pg_query(&mut self.client, sql::ORPHAN_THUMBNAILS, &[], "thumbnail rows")?.iter().map(sql::orphan).collect()
    }

    fn delete_orphan_thumbnail_rows(&mut self, key: &MediaKey) -> Result<u64> {
        self.client
            .execute(
                "DELETE FROM mediaapi_thumbnail WHERE media_id = $1 AND media_origin = $2 AND NOT EXISTS \
                 (SELECT 1 FROM mediaapi_media_repository WHERE media_id = $1 AND media_origin = $2)",
                &[&key.media_id, &key.origin],
            )
            .map_err(|e| anyhow!("deleting thumbnail rows: {}", pg_error_text(&e)))
    }

    fn has_media(&mut self, key: &MediaKey) -> Result<bool> {
        let rows = pg_query(
            &mut self.client,
            "SELECT 1 FROM mediaapi_media_repository WHERE media_id = $1 AND media_origin = $2",
            &[&key.media_id, &key.origin],
            "media rows",
        )?;
        Ok(!rows.is_empty())
    }

    fn newest_activity(&mut self) -> Result<Option<i64>> {
        let rows = pg_query(&mut self.client, sql::NEWEST, &[], "the newest media rows")?;
        Ok(rows.first().map(|r| r.int(0)).transpose()?.flatten())
    }
}
