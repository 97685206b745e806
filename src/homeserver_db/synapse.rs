//! Synapse's media tables: the statements that read the same on both
//! engines (no parameters; every number cast to BIGINT, which both read as
//! a 64-bit integer), and how their rows decode. The statements with
//! parameters are in `synapse_postgres` (`$1`, arrays) and
//! `synapse_sqlite` (`?1`).

use std::collections::HashSet;

use anyhow::Result;

use super::{Candidate, Cols, MediaInfo, MediaKey, MediaRecord, MediaRow, ThumbnailInfo, add_avatar, length};
use crate::media_store::{MediaKind, thumbnail_name};

/// The conditions a remote row must meet to be purged (`$1`/`?1`: the
/// cut-off), shared by the selection and the deletion, which re-checks
/// them so that a media used meanwhile stays.
pub(super) fn remote_rule(p: [&str; 1]) -> String {
    format!("COALESCE(last_access_ts, created_ts) < {} AND quarantined_by IS NULL", p[0])
}

/// The same for local rows (cut-off, size).
pub(super) fn local_rule(p: [&str; 2]) -> String {
    format!(
        "COALESCE(last_access_ts, created_ts) < {} AND media_length IS NOT NULL AND media_length > {} \
         AND url_cache IS NULL AND quarantined_by IS NULL AND NOT safe_from_quarantine",
        p[0], p[1]
    )
}

/// Every avatar URL, as Synapse's own purge protects them: profiles, room
/// memberships, the user directory and room state.
pub(super) const AVATARS: &str = "SELECT avatar_url FROM profiles WHERE avatar_url LIKE 'mxc://%' \
     UNION SELECT avatar_url FROM room_memberships WHERE avatar_url LIKE 'mxc://%' \
     UNION SELECT avatar_url FROM user_directory WHERE avatar_url LIKE 'mxc://%' \
     UNION SELECT avatar FROM room_stats_state WHERE avatar LIKE 'mxc://%'";

/// Every media row, with why it may have no bytes on purpose.
pub(super) const MEDIA: &str = "SELECT '', media_id, media_id, CAST(media_length AS BIGINT), \
       CASE WHEN url_cache IS NOT NULL THEN 'url_cache' WHEN media_length IS NULL THEN 'pending' ELSE '' END \
     FROM local_media_repository \
     UNION ALL SELECT media_origin, media_id, filesystem_id, CAST(media_length AS BIGINT), '' FROM remote_media_cache";

/// Every thumbnail row with its media's folder and recorded length.
pub(super) const THUMBNAILS: &str = "SELECT '', media_id, CAST(thumbnail_width AS BIGINT), \
       CAST(thumbnail_height AS BIGINT), thumbnail_type, thumbnail_method, CAST(thumbnail_length AS BIGINT) \
     FROM local_media_repository_thumbnails \
     UNION ALL SELECT m.media_origin, m.filesystem_id, CAST(t.thumbnail_width AS BIGINT), \
       CAST(t.thumbnail_height AS BIGINT), t.thumbnail_type, t.thumbnail_method, CAST(t.thumbnail_length AS BIGINT) \
     FROM remote_media_cache_thumbnails t JOIN remote_media_cache m \
       ON m.media_origin = t.media_origin AND m.media_id = t.media_id";

/// Thumbnail rows whose media row is gone, per media.
pub(super) const ORPHAN_THUMBNAILS: &str = "SELECT '', media_id, CAST(COUNT(*) AS BIGINT) \
     FROM local_media_repository_thumbnails t \
     WHERE NOT EXISTS (SELECT 1 FROM local_media_repository m WHERE m.media_id = t.media_id) GROUP BY media_id \
     UNION ALL SELECT media_origin, media_id, CAST(COUNT(*) AS BIGINT) FROM remote_media_cache_thumbnails t \
     WHERE NOT EXISTS (SELECT 1 FROM remote_media_cache m \
       WHERE m.media_origin = t.media_origin AND m.media_id = t.media_id) \
     GROUP BY media_origin, media_id";

/// The newest event received (by the unique index on `stream_ordering`).
pub(super) const NEWEST_EVENT: &str =
    "SELECT CAST(received_ts AS BIGINT) FROM events ORDER BY stream_ordering DESC LIMIT 1";

/// The newest `created_ts` or `last_access_ts` of any media row.
pub(super) const NEWEST_MEDIA: &str = "SELECT CAST(MAX(ts) AS BIGINT) FROM ( \
     SELECT MAX(created_ts) AS ts FROM local_media_repository \
     UNION ALL SELECT MAX(last_access_ts) FROM local_media_repository \
     UNION ALL SELECT MAX(created_ts) FROM remote_media_cache \
     UNION ALL SELECT MAX(last_access_ts) FROM remote_media_cache) AS newest";

/// Whether the media tables have the `sha256` column (newer schemas).
pub(super) const PROBE_SHA256: &str = "SELECT sha256 FROM local_media_repository WHERE 1 = 0";

/// The kind of a row by its origin column (`''` for local media).
pub(super) fn kind_of(origin: &str) -> MediaKind {
    if origin.is_empty() { MediaKind::Local } else { MediaKind::Remote }
}

/// A row of [`MEDIA`].
pub(super) fn media_info(r: &impl Cols) -> Result<MediaInfo> {
    let origin = r.string(0)?;
    let no_bytes = match r.string(4)?.as_str() {
        "url_cache" => Some("url_cache"),
        "pending" => Some("pending"),
        _ => None,
    };
    Ok(MediaInfo {
        row: MediaRow { kind: kind_of(&origin), key: MediaKey::new(origin, r.string(1)?), location: r.string(2)? },
        length: r.int(3)?,
        no_bytes,
    })
}

/// A row of origin, media id and location (filesystem id), as the purge
/// candidates and the deleted media rows begin.
pub(super) fn media_row(r: &impl Cols, kind: MediaKind) -> Result<MediaRow> {
    Ok(MediaRow { key: MediaKey::new(r.string(0)?, r.string(1)?), kind, location: r.string(2)? })
}

/// A row of update-db's candidates: origin, media id, filesystem id.
pub(super) fn candidate(r: &impl Cols, kind: MediaKind) -> Result<Candidate> {
    Ok(Candidate { origin: r.string(0)?, media_id: r.string(1)?, filesystem_id: r.string(2)?, kind })
}

/// A media's record from its row (length, sha256) and the file name and
/// recorded length of each of its thumbnail rows ([`recorded_thumbnail`]).
pub(super) fn media_record(
    media: &impl Cols,
    thumbnails: impl IntoIterator<Item = (String, Option<u64>)>,
) -> Result<MediaRecord> {
    Ok(MediaRecord {
        length: length(media.int(0)?),
        sha256: sha256(media.text(1)?),
        thumbnails: thumbnails.into_iter().collect(),
    })
}

/// A thumbnail row's file name and recorded length: width, height, type,
/// method and length from column `first` on; `None` if they name no file.
/// (A length that is not a number is no length.)
pub(super) fn recorded_thumbnail(r: &impl Cols, first: usize) -> Result<Option<(String, Option<u64>)>> {
    Ok(thumbnail_file(r, first)?.map(|name| (name, length(r.int(first + 4).ok().flatten()))))
}

/// A row of [`THUMBNAILS`]; `None` if its values name no file.
pub(super) fn thumbnail_info(r: &impl Cols) -> Result<Option<ThumbnailInfo>> {
    let origin = r.string(0)?;
    let name = thumbnail_file(r, 2)?;
    Ok(name.map(|name| ThumbnailInfo {
        kind: kind_of(&origin),
        location: r.string(1).unwrap_or_default(),
        origin,
        name,
        length: r.int(6).ok().flatten(),
    }))
}

/// The file name of the thumbnail whose width, height, type and method are
/// the columns from `first` on.
pub(super) fn thumbnail_file(r: &impl Cols, first: usize) -> Result<Option<String>> {
    let (w, h) = (r.int(first)?, r.int(first + 1)?);
    let (ty, method) = (r.string(first + 2)?, r.string(first + 3)?);
    Ok(match (w, h) {
        (Some(w), Some(h)) => thumbnail_name(w, h, &ty, &method),
        _ => None,
    })
}

/// A row of [`ORPHAN_THUMBNAILS`].
pub(super) fn orphan(r: &impl Cols) -> Result<(MediaKey, u64)> {
    Ok((MediaKey::new(r.string(0)?, r.string(1)?), r.int(2)?.and_then(|n| u64::try_from(n).ok()).unwrap_or(1)))
}

/// Avatar URLs into candidate keys: the local media (origin `""`) whose
/// id a URL of `server_name` (of any server, without one) names.
pub(super) fn local_avatars(urls: Vec<Option<String>>, server_name: Option<&str>) -> HashSet<MediaKey> {
    let mut all = HashSet::new();
    for url in &urls {
        add_avatar(&mut all, url.as_deref());
    }
    let ids: HashSet<MediaKey> = all
        .into_iter()
        .filter(|k| server_name.is_none_or(|name| name == k.origin))
        .map(|k| MediaKey::new("", k.media_id))
        .collect();
    log::debug!("{} local media are avatars and will be kept", ids.len());
    ids
}

/// A SHA-256 in hex, as Synapse records it.
pub(super) fn sha256(hex_text: Option<String>) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_text?.trim(), &mut out).ok().map(|()| out)
}
