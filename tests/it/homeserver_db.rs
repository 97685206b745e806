//! The homeserver database interface (`MediaDb`) called directly, on each
//! of its four implementations (Synapse and Dendrite, each on SQLite and
//! a real PostgreSQL): keyset paging visits every candidate once, a dry
//! run's page deletion returns exactly what the real one deletes and
//! changes nothing, deleted thumbnails come back named as the files are,
//! and Dendrite says which deleted hashes other rows still use.

use media_offload::config::dendrite::DendriteSettings;
use media_offload::config::{DbConfig, PgSettings};
use media_offload::homeserver_db::{HomeserverDb, MediaDb, MediaKey, Retention, dendrite};
use media_offload::media_store::MediaKind;

use crate::common::*;

fn all_candidates(db: &mut dyn MediaDb, rule: &Retention) -> Vec<MediaKey> {
    let mut after = None;
    let mut seen = Vec::new();
    loop {
        let page = db.candidates(rule, after.as_ref(), 2).unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        seen.extend(page.into_iter().map(|r| r.key));
    }
    seen
}

fn remote_rule() -> Retention {
    Retention { kind: MediaKind::Remote, cutoff_ms: now_ms() - 30 * DAY_MS, size_gt: 0 }
}

fn synapse_db(hs: &Homeserver) -> HomeserverDb {
    let config = match &hs.db {
        HsDb::Sqlite(path) => DbConfig::Sqlite { path: path.clone() },
        HsDb::Postgres(pg) => {
            let env = test_env();
            DbConfig::Postgres(PgSettings {
                hosts: vec![env.pg_socket.display().to_string()],
                ports: vec![env.pg_port],
                user: Some(env.pg_superuser.clone()),
                dbname: Some(pg.name.clone()),
                ..Default::default()
            })
        }
    };
    HomeserverDb::connect_writable(&config).unwrap()
}

fn synapse_interface(mut hs: Homeserver) {
    let old: Vec<Media> = (0..5)
        .map(|i| Media::remote(&format!("o{}.example", i % 2), &hs.new_id(), &hs.new_id()).with_thumbs())
        .collect();
    let young = Media::remote("o0.example", &hs.new_id(), &hs.new_id()).created_days_ago(1);
    hs.add_all(old.iter().cloned().chain([young.clone()]).collect());
    let mut db = synapse_db(&hs);
    let db = db.media();
    let rule = remote_rule();
    let seen = all_candidates(db, &rule);
    let mut want: Vec<MediaKey> = old.iter().map(|m| MediaKey::new(m.origin.clone().unwrap(), &m.media_id)).collect();
    want.sort();
    assert_eq!(seen, want, "every old row once, in key order");
    let page = db.candidates(&rule, None, 10).unwrap();
    let dry = db.delete_page(&rule, &page, true).unwrap();
    assert_eq!(dry.len(), 5);
    assert!(old.iter().all(|m| hs.has_row(m)), "a dry run deletes nothing");
    let real = db.delete_page(&rule, &page, false).unwrap();
    assert_eq!(dry, real, "the dry run returned what the real run deletes");
    for d in &real {
        let mut names: Vec<&str> = d.thumbnails.iter().map(|(n, _)| n.as_str()).collect();
        names.sort();
        assert_eq!(names, ["32-32-image-png-crop", "640-480-image-jpeg-scale"]);
        assert!(!d.shared);
    }
    assert!(old.iter().all(|m| !hs.has_row(m) && hs.thumb_rows(m) == 0));
    assert!(hs.has_row(&young));
    assert!(db.delete_page(&rule, &page, false).unwrap().is_empty(), "a second deletion finds nothing");
}

crate::on_sqlite_and_postgres!(synapse_on_sqlite, synapse_on_postgres, synapse_interface);

fn dendrite_interface(d: Dendrite) {
    let shared = bytes_for("shared");
    let a = d.add("remote.example", &d.new_id(), &shared, 40, &["thumbnail-32x32-crop"]);
    let b = d.add(DENDRITE_SERVER, &d.new_id(), &shared, 1, &[]);
    let c = d.add("remote.example", &d.new_id(), &bytes_for("c"), 40, &[]);
    let e = d.add("x.example", &d.new_id(), &bytes_for("e"), 40, &[]);
    let settings = DendriteSettings::read(&d.config_path(), Some(d.cwd())).unwrap();
    let mut db = dendrite::connect(&settings, true).unwrap();
    let rule = remote_rule();
    let mut seen = all_candidates(&mut *db, &rule);
    seen.sort();
    let mut want: Vec<MediaKey> =
        [&a, &c, &e].iter().map(|m| MediaKey::new(m.origin.clone(), m.media_id.clone())).collect();
    want.sort();
    assert_eq!(seen, want, "remote, old, each once");
    let page = db.candidates(&rule, None, 10).unwrap();
    let dry = db.delete_page(&rule, &page, true).unwrap();
    assert_eq!(d.rows().len(), 4, "a dry run deletes nothing");
    let mut real = db.delete_page(&rule, &page, false).unwrap();
    let mut dry = dry;
    dry.sort_by(|x, y| x.row.key.cmp(&y.row.key));
    real.sort_by(|x, y| x.row.key.cmp(&y.row.key));
    assert_eq!(dry, real);
    let of = |m: &DMedia| real.iter().find(|x| x.row.key.media_id == m.media_id).unwrap();
    assert!(of(&a).shared, "b still uses a's folder");
    assert_eq!(of(&a).thumbnails, [("thumbnail-32x32-crop".to_owned(), Some(120))]);
    assert!(!of(&c).shared && !of(&e).shared);
    assert_eq!(d.rows(), [format!("{DENDRITE_SERVER}/{}", b.media_id)]);
    assert_eq!(db.newest_activity().unwrap().map(|t| t > now_ms() - 2 * DAY_MS), Some(true));
}

#[test]
fn dendrite_on_sqlite() {
    dendrite_interface(Dendrite::sqlite());
}

#[test]
fn dendrite_on_postgres() {
    dendrite_interface(Dendrite::postgres());
}
