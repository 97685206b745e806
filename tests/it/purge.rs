//! purge: which media go (rows, thumbnail rows, files, objects and their
//! cache.db rows) and which never do, on SQLite and PostgreSQL, with moto
//! as the object store; what a dry run promises; and what a kill -9 after
//! the database commit leaves behind (orphans that `check --fix` removes,
//! never rows without bytes).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::common::*;

const PREFIX: &str = "pfx/";
const ORIGIN: &str = "remote.example";

fn remote(hs: &Homeserver) -> Media {
    Media::remote(ORIGIN, &hs.new_id(), &hs.new_id())
}

fn local(hs: &Homeserver) -> Media {
    Media::local(&hs.new_id())
}

fn sum_files(ms: &[&Media]) -> i64 {
    ms.iter().map(|m| m.rel_paths().len() as i64).sum()
}

fn sum_bytes(ms: &[&Media]) -> i64 {
    ms.iter().map(|m| m.total_bytes() as i64).sum()
}

/// Everything a purge may touch, for before/after comparisons.
#[derive(Debug, PartialEq)]
struct State {
    db: Vec<String>,
    files: std::collections::BTreeMap<String, Vec<u8>>,
    objects: std::collections::BTreeMap<String, Vec<u8>>,
    cache: Vec<u8>,
}

fn state(hs: &Homeserver, s3: &S3) -> State {
    State {
        db: hs.db_snapshot(),
        files: hs.local_files(),
        objects: s3.objects(),
        cache: std::fs::read(hs.cache_db()).unwrap_or_default(),
    }
}

/// Asserts `m` is gone everywhere: rows, thumbnail rows, files, objects
/// under PREFIX and its cache.db row.
#[track_caller]
fn assert_purged(hs: &Homeserver, s3: &S3, m: &Media) {
    assert!(!hs.has_row(m), "{} should have been purged from the database", m.media_id);
    assert_eq!(hs.thumb_rows(m), 0, "thumbnail rows of {} should be gone", m.media_id);
    hs.assert_local_gone(m);
    for key in keys_of(&[m], PREFIX) {
        assert!(s3.get(&key).is_none(), "object {key} should have been deleted");
    }
    let row = m.cache_row();
    assert!(
        !cache_rows(&hs.cache_db()).iter().any(|r| r.origin == row.origin && r.media_id == row.media_id),
        "cache.db still has {row:?}"
    );
}

/// Asserts `m` is untouched: its row, thumbnail rows, files and objects.
#[track_caller]
fn assert_kept(hs: &Homeserver, s3: &S3, m: &Media) {
    assert!(hs.has_row(m), "{} should have been kept in the database", m.media_id);
    assert_eq!(hs.thumb_rows(m), m.thumbs.len(), "thumbnail rows of {}", m.media_id);
    hs.assert_local_intact(m);
    for rel in m.rel_paths() {
        let key = format!("{PREFIX}{rel}");
        assert_eq!(s3.get(&key).as_deref(), Some(hs.content(&rel)), "object {key} should be kept");
    }
}

/// Every purge rule, remote then local, against one homeserver.
fn purge_keeps_and_removes_exactly_what_the_rules_say(mut hs: Homeserver) {
    let s3 = S3::new();
    // Remote media: by COALESCE(last_access_ts, created_ts), never quarantined.
    let r_old = remote(&hs).with_thumbs();
    let r_stale_access = remote(&hs).created_days_ago(1).accessed_days_ago(40);
    let r_old_but_accessed = remote(&hs).accessed_days_ago(1).with_thumbs();
    let r_young = remote(&hs).created_days_ago(1);
    let r_quarantined = remote(&hs).quarantined().with_thumbs();
    // Its key starts with r_old's original key: a different media.
    let r_sibling = Media::remote(ORIGIN, &hs.new_id(), &format!("{}Z", r_old.filesystem_id)).created_days_ago(1);
    // Local media.
    let l_old = local(&hs).with_thumbs();
    let l_accessed = local(&hs).accessed_days_ago(1);
    let avatars: Vec<Media> = AvatarIn::ALL.iter().map(|_| local(&hs).with_thumbs()).collect();
    let l_avatar_of_other_server = local(&hs);
    let l_quarantined = local(&hs).quarantined();
    let l_safe = local(&hs).safe_from_quarantine();
    let l_pending = local(&hs).pending();
    let l_url_preview = local(&hs).url_cache("https://example.org/page");
    let l_small = local(&hs).size(500);

    let mut all = vec![
        r_old.clone(),
        r_stale_access.clone(),
        r_old_but_accessed.clone(),
        r_young.clone(),
        r_quarantined.clone(),
        r_sibling.clone(),
        l_old.clone(),
        l_accessed.clone(),
        l_avatar_of_other_server.clone(),
        l_quarantined.clone(),
        l_safe.clone(),
        l_pending.clone(),
        l_url_preview.clone(),
        l_small.clone(),
    ];
    all.extend(avatars.iter().cloned());
    hs.add_all(all);
    for (table, m) in AvatarIn::ALL.iter().zip(&avatars) {
        hs.add_avatar(*table, &m.mxc(SERVER_NAME));
    }
    hs.add_avatar(AvatarIn::Profiles, &l_avatar_of_other_server.mxc("other.example"));
    hs.update_db("0s");
    hs.upload(&s3, &["--prefix", PREFIX]).ok();
    // The same paths under another prefix: not this store's.
    for m in [&r_old, &l_old] {
        for rel in m.rel_paths() {
            s3.put(&format!("other/{rel}"), b"not ours", &[]);
        }
    }
    let objects_before = s3.keys();
    let cache_before = cache_rows(&hs.cache_db());

    // 1. Remote only: local media are untouched without a local duration.
    let out = hs.mo_store(&s3, PREFIX, &["--json", "--no-progress", "purge", "--remote-older-than", "30d"]).ok();
    let gone = [&r_old, &r_stale_access];
    for m in gone {
        assert_purged(&hs, &s3, m);
    }
    for m in hs.items.iter().filter(|m| !gone.iter().any(|g| g.media_id == m.media_id)) {
        if m.pending || m.url_cache.is_some() {
            assert!(hs.has_row(m));
            hs.assert_local_intact(m);
        } else {
            assert_kept(&hs, &s3, m);
        }
    }
    let v = out.json();
    assert_eq!(v["command"], "purge");
    assert_eq!(v["dry_run"], false);
    assert_eq!(v["object_store"], true);
    assert!(v.get("local").is_none(), "no local rule without a local duration: {v}");
    assert_eq!(out.jn("remote.media"), 2);
    assert_eq!(out.jn("remote.files"), sum_files(&gone));
    assert_eq!(out.jn("remote.file_bytes"), sum_bytes(&gone));
    assert_eq!(out.jn("remote.object_keys"), sum_files(&gone));
    assert_eq!(out.jn("remote.refused") + out.jn("remote.failed") + out.jn("remote.kept_in_use"), 0);
    let mut want: BTreeSet<String> = objects_before.iter().cloned().collect();
    for k in keys_of(&gone, PREFIX) {
        assert!(want.remove(&k), "{k} was never uploaded");
    }
    assert_eq!(s3.keys().into_iter().collect::<BTreeSet<_>>(), want, "only the purged media's objects are gone");
    let mut cache_want = cache_before.clone();
    cache_want.retain(|r| !gone.iter().any(|m| m.media_id == r.media_id));
    assert_eq!(cache_rows(&hs.cache_db()), cache_want, "exactly the purged media leave cache.db");

    // 2. Local, larger than 600 bytes: avatars (in any of the four tables),
    // quarantined, protected, pending and URL-preview media stay.
    let out = hs
        .mo_store(&s3, PREFIX, &["--json", "--no-progress", "purge", "--local-older-than", "30d", "--size-gt", "600"])
        .ok();
    let v = out.json();
    assert!(v.get("remote").is_none(), "no remote rule without a remote duration: {v}");
    let gone_local = [&l_old, &l_avatar_of_other_server];
    for m in gone_local {
        assert_purged(&hs, &s3, m);
    }
    for m in avatars.iter().chain([&l_accessed, &l_quarantined, &l_safe, &l_small, &r_old_but_accessed]) {
        assert_kept(&hs, &s3, m);
    }
    for m in [&r_young, &r_quarantined, &r_sibling] {
        assert_kept(&hs, &s3, m);
    }
    for m in [&l_pending, &l_url_preview] {
        assert!(hs.has_row(m), "{} should be kept", m.media_id);
    }
    hs.assert_local_intact(&l_url_preview);
    assert_eq!(out.jn("local.media"), 2);
    assert_eq!(out.jn("local.files"), sum_files(&gone_local));
    assert_eq!(out.jn("local.file_bytes"), sum_bytes(&gone_local));
    assert_eq!(out.jn("local.object_keys"), sum_files(&gone_local));
    assert_eq!(out.jn("local.avatars_kept"), 4);
    for rel in r_old.rel_paths().iter().chain(l_old.rel_paths().iter()) {
        assert_eq!(s3.get(&format!("other/{rel}")).as_deref(), Some(&b"not ours"[..]), "other prefixes are untouched");
    }

    // 3. Without --size-gt the small one goes too, and nothing else.
    let out = hs.mo_store(&s3, PREFIX, &["--json", "--no-progress", "purge", "--local-older-than", "30d"]).ok();
    assert_eq!(out.jn("local.media"), 1, "{}", out.describe());
    assert_purged(&hs, &s3, &l_small);
    for m in avatars.iter().chain([&l_accessed, &l_quarantined, &l_safe]) {
        assert_kept(&hs, &s3, m);
    }
}

on_sqlite_and_postgres!(
    purge_rules_on_sqlite,
    purge_rules_on_postgres,
    purge_keeps_and_removes_exactly_what_the_rules_say
);

/// A dry run lists every row, file and object it would remove, with the
/// totals a real run then reports, and changes nothing; a second real run
/// has nothing left to do.
fn dry_run_changes_nothing_and_a_second_purge_does_nothing(mut hs: Homeserver) {
    let s3 = S3::new();
    let r_old = remote(&hs).with_thumbs();
    let r_offloaded = remote(&hs).size(3000);
    let l_old = local(&hs).with_thumbs();
    let r_young = remote(&hs).created_days_ago(2);
    let l_avatar = local(&hs);
    let l_fresh = local(&hs).accessed_days_ago(2).with_thumbs();
    hs.add_all(vec![
        r_old.clone(),
        r_offloaded.clone(),
        l_old.clone(),
        r_young.clone(),
        l_avatar.clone(),
        l_fresh.clone(),
    ]);
    hs.add_avatar(AvatarIn::RoomStatsState, &l_avatar.mxc(SERVER_NAME));
    hs.update_db("0s");
    hs.upload(&s3, &["--prefix", PREFIX]).ok();
    // Offloaded: only the object is left.
    hs.remove(&r_offloaded.original_rel());

    let before = state(&hs, &s3);
    let args = ["--json", "--no-progress", "purge", "--remote-older-than", "30d", "--local-older-than", "30d"];
    let dry_args: Vec<&str> = args.iter().copied().chain(["--dry-run"]).collect();
    let dry = hs.mo_store(&s3, PREFIX, &dry_args).ok();
    assert_eq!(state(&hs, &s3), before, "a dry run changed something: {}", dry.describe());

    let remote_gone = [&r_old, &r_offloaded];
    let local_gone = [&l_old];
    let mut want = BTreeSet::new();
    for m in remote_gone.iter().chain(local_gone.iter()) {
        let who = match &m.origin {
            Some(o) => format!("would delete row remote {o}/{}", m.media_id),
            None => format!("would delete row local (local)/{}", m.media_id),
        };
        want.insert(who);
        for rel in m.rel_paths() {
            if m.media_id != r_offloaded.media_id {
                want.insert(format!("would delete file {rel} ("));
            }
            want.insert(format!("would delete object key {PREFIX}{rel}"));
        }
    }
    let listed: Vec<&str> = dry.stderr.lines().filter(|l| l.starts_with("would delete")).collect();
    for w in &want {
        assert!(listed.iter().any(|l| l.starts_with(w.as_str())), "dry run does not list {w:?}: {}", dry.describe());
    }
    assert_eq!(listed.len(), want.len(), "dry run lists more than it would remove: {}", dry.describe());
    for kept in [&r_young, &l_avatar, &l_fresh] {
        assert!(!dry.stderr.contains(&kept.media_id), "dry run lists kept media {}: {}", kept.media_id, dry.describe());
    }
    // What is on disk now, i.e. what the purge will find there.
    let on_disk = |ms: &[&Media]| -> (i64, i64) {
        let files: Vec<String> = ms.iter().flat_map(|m| m.rel_paths()).filter(|r| hs.exists(r)).collect();
        (files.len() as i64, files.iter().map(|r| hs.content(r).len() as i64).sum())
    };
    let expected =
        [("remote", on_disk(&remote_gone), &remote_gone[..]), ("local", on_disk(&local_gone), &local_gone[..])];
    let totals = |out: &Out| {
        for (kind, (files, file_bytes), ms) in &expected {
            assert_eq!(out.jn(&format!("{kind}.media")), ms.len() as i64, "{kind}: {}", out.describe());
            assert_eq!(out.jn(&format!("{kind}.files")), *files, "{kind}");
            assert_eq!(out.jn(&format!("{kind}.file_bytes")), *file_bytes, "{kind}");
            assert_eq!(out.jn(&format!("{kind}.object_keys")), sum_files(ms), "{kind}");
        }
    };
    assert_eq!(dry.json()["dry_run"], true);
    totals(&dry);
    assert_eq!(dry.jn("local.avatars_kept"), 1);

    // Without --json the list goes to stdout.
    let text_args: Vec<&str> = dry_args.iter().copied().filter(|a| *a != "--json").collect();
    let text = hs.mo_store(&s3, PREFIX, &text_args).ok();
    assert_eq!(
        text.stdout.lines().filter(|l| l.starts_with("would delete")).count(),
        want.len(),
        "{}",
        text.describe()
    );
    assert!(text.stdout.contains("Would purge 2 remote media"), "{}", text.describe());
    assert_eq!(state(&hs, &s3), before);

    // The real run does what the dry run said.
    let real = hs.mo_store(&s3, PREFIX, &args).ok();
    totals(&real);
    for m in remote_gone.iter().chain(local_gone.iter()) {
        assert_purged(&hs, &s3, m);
    }
    for m in [&r_young, &l_avatar, &l_fresh] {
        assert_kept(&hs, &s3, m);
    }

    // Idempotence: a second purge finds nothing and changes nothing.
    let after = state(&hs, &s3);
    let again = hs.mo_store(&s3, PREFIX, &args).ok();
    for kind in ["remote", "local"] {
        for field in ["media", "files", "object_keys", "refused", "failed"] {
            assert_eq!(again.jn(&format!("{kind}.{field}")), 0, "{kind}.{field}: {}", again.describe());
        }
    }
    assert_eq!(state(&hs, &s3), after);
}

on_sqlite_and_postgres!(
    dry_run_and_idempotence_on_sqlite,
    dry_run_and_idempotence_on_postgres,
    dry_run_changes_nothing_and_a_second_purge_does_nothing
);

#[test]
fn without_flags_media_retention_applies_and_a_config_purge_section_replaces_it() {
    let mut hs = Homeserver::sqlite();
    // Synapse's units: 90m is ninety minutes, not ninety 30-day months.
    hs.write_homeserver_yaml_with(Some(SERVER_NAME), &media_retention_yaml(Some("90d"), Some("90m")));
    let r_2h = hs.add(remote(&hs).created_ms_ago(2 * HOUR_MS).with_thumbs());
    let r_20min = hs.add(remote(&hs).created_ms_ago(20 * 60 * 1000));
    let l_100d = hs.add(local(&hs).created_days_ago(100).with_thumbs());
    let l_80d = hs.add(local(&hs).created_days_ago(80));

    // No bucket anywhere: the database and the files only, with a warning.
    let out = hs.mo(&["--json", "--no-progress", "purge"]).ok();
    assert!(out.stderr.contains("no object store configured"), "{}", out.describe());
    let v = out.json();
    assert_eq!(v["object_store"], false);
    assert_eq!(out.jn("remote.older_than_secs"), 90 * 60);
    assert_eq!(out.jn("local.older_than_secs"), 90 * 86_400);
    for kind in ["remote", "local"] {
        let source = v[kind]["source"].as_str().unwrap();
        assert!(source.contains("homeserver.yaml") && source.contains("media_retention"), "{kind}: {source}");
        assert_eq!(out.jn(&format!("{kind}.media")), 1);
        assert_eq!(out.jn(&format!("{kind}.object_keys")), 0);
    }
    for m in [&r_2h, &l_100d] {
        assert!(!hs.has_row(m));
        assert_eq!(hs.thumb_rows(m), 0);
        hs.assert_local_gone(m);
    }
    for m in [&r_20min, &l_80d] {
        assert!(hs.has_row(m));
        hs.assert_local_intact(m);
    }

    // A purge section in the config file replaces media_retention as a
    // whole (s3_media_upload units there): with only remote_older_than in
    // it, no local media is purged, whatever homeserver.yaml says.
    let l_200d = hs.add(local(&hs).created_days_ago(200));
    let cfg = hs.write_file("mo.yaml", "purge:\n  remote_older_than: 600s\n");
    let out = hs.mo(&["--json", "--no-progress", "--config", cfg.to_str().unwrap(), "purge"]).ok();
    let v = out.json();
    assert!(v["remote"]["source"].as_str().unwrap().contains("mo.yaml"), "{v}");
    assert!(v["local"].is_null(), "{v}");
    assert_eq!(out.jn("remote.media"), 1);
    assert!(hs.has_row(&l_200d));
    hs.assert_local_intact(&l_200d);
    assert!(!hs.has_row(&r_20min));
    hs.assert_local_gone(&r_20min);
    assert!(hs.has_row(&l_80d));
}

#[test]
fn a_duration_on_the_command_line_purges_only_its_own_kind() {
    // Retention configured for both kinds, in homeserver.yaml and the config file.
    let mut hs = Homeserver::sqlite();
    hs.write_homeserver_yaml_with(Some(SERVER_NAME), &media_retention_yaml(Some("1d"), Some("1d")));
    let cfg = hs.write_file("mo.yaml", "purge:\n  remote_older_than: 1d\n  local_older_than: 1d\n");
    let cfg = cfg.to_str().unwrap();
    let l_old = hs.add(local(&hs));
    let r_old = hs.add(remote(&hs));

    let out = hs.mo(&["--json", "--config", cfg, "purge", "--remote-older-than", "30d"]).ok();
    assert!(out.json().get("local").is_none(), "local media purged without --local-older-than: {}", out.describe());
    assert!(hs.has_row(&l_old), "local media purged without --local-older-than");
    hs.assert_local_intact(&l_old);
    assert!(!hs.has_row(&r_old));

    let r_old2 = hs.add(remote(&hs));
    let out = hs.mo(&["--json", "purge", "--local-older-than", "30d"]).ok();
    assert!(out.json().get("remote").is_none(), "{}", out.describe());
    assert!(hs.has_row(&r_old2));
    hs.assert_local_intact(&r_old2);
    assert!(!hs.has_row(&l_old));
}

#[test]
fn without_any_retention_purge_is_an_error_and_changes_nothing() {
    let mut hs = Homeserver::postgres();
    hs.add_all(vec![remote(&hs).with_thumbs(), local(&hs)]);
    let before = (hs.db_snapshot(), hs.local_files());
    let out = hs.mo(&["--no-progress", "purge"]);
    out.clean_error(1, &["nothing to purge", "media_retention"]);
    assert_eq!((hs.db_snapshot(), hs.local_files()), before);
}

#[test]
fn purge_walks_every_batch() {
    // More media than one batch (500) holds, avatars among them.
    let mut hs = Homeserver::postgres();
    let items = hs.add_all((0..1100).map(|_| local(&hs).size(1)).collect());
    for m in items.iter().step_by(400) {
        hs.add_avatar(AvatarIn::Profiles, &m.mxc(SERVER_NAME));
    }
    let args = ["--json", "--no-progress", "purge", "--local-older-than", "30d"];
    let dry = hs.mo(&[&args[..], &["--dry-run"]].concat()).ok();
    assert_eq!(dry.jn("local.media"), 1097, "{}", dry.describe());
    assert_eq!(dry.jn("local.avatars_kept"), 3);
    let out = hs.mo(&args).ok();
    assert_eq!(out.jn("local.media"), 1097, "{}", out.describe());
    assert_eq!(out.jn("local.files"), 1097);
    assert_eq!(hs.texts("SELECT media_id FROM local_media_repository").len(), 3);
    assert_eq!(hs.local_files().len(), 3);
}

#[test]
fn without_a_server_name_an_avatar_on_any_server_protects_a_local_media_id() {
    let mut hs = Homeserver::sqlite();
    hs.write_homeserver_yaml_with(None, "");
    let avatar = hs.add(local(&hs));
    let plain = hs.add(local(&hs));
    hs.add_avatar(AvatarIn::UserDirectory, &avatar.mxc("other.example"));
    let out = hs.mo(&["--json", "--no-progress", "purge", "--local-older-than", "30d"]).ok();
    assert_eq!(out.jn("local.avatars_kept"), 1);
    assert!(hs.has_row(&avatar));
    hs.assert_local_intact(&avatar);
    assert!(!hs.has_row(&plain));
    hs.assert_local_gone(&plain);
}

/// The deletion re-checks the rule: a media accessed after purge selected
/// it, before its row is deleted, is kept. PostgreSQL makes this
/// deterministic: the test holds the media's row lock while it records the
/// access, waits until purge's DELETE is blocked on that lock, then commits.
#[test]
fn a_media_accessed_after_selection_is_kept() {
    let mut hs = Homeserver::postgres();
    let s3 = S3::new();
    let items = hs.add_all((0..5).map(|_| remote(&hs).with_thumbs()).collect());
    hs.update_db("0s");
    hs.upload(&s3, &["--prefix", PREFIX]).ok();
    // Purge deletes in key order: hold the last one.
    let mut sorted = items.clone();
    sorted.sort_by(|a, b| a.media_id.cmp(&b.media_id));
    let (accessed, others) = sorted.split_last().unwrap();

    let mut holder = hs.pg().client();
    let mut tx = holder.transaction().unwrap();
    tx.execute(
        "UPDATE remote_media_cache SET last_access_ts = $1 WHERE media_origin = $2 AND media_id = $3",
        &[&now_ms(), &ORIGIN, &accessed.media_id],
    )
    .unwrap();
    let mut args: Vec<String> =
        ["--json", "--no-progress", "purge", "--remote-older-than", "30d"].map(String::from).to_vec();
    args.extend(s3.store_flags(PREFIX));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = spawn(&argv, hs.cwd(), &[]);
    let mut watcher = hs.pg().client();
    let start = Instant::now();
    loop {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND application_name = 'media-offload' AND wait_event_type = 'Lock'",
                &[],
            )
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        if child.try_wait().unwrap().is_some() {
            let out = wait_output(child, "purge".into());
            panic!("purge finished without waiting for the held row: {}", out.describe());
        }
        assert!(start.elapsed() < Duration::from_secs(60), "purge never reached the held row");
        std::thread::sleep(Duration::from_millis(10));
    }
    tx.commit().unwrap();
    let out = wait_output(child, "purge".into()).ok();
    assert_eq!(out.jn("remote.kept_in_use"), 1, "{}", out.describe());
    assert_eq!(out.jn("remote.media"), others.len() as i64);
    for m in others {
        assert_purged(&hs, &s3, m);
    }
    assert_kept(&hs, &s3, accessed);
    assert!(cache_rows(&hs.cache_db()).iter().any(|r| r.media_id == accessed.media_id), "its cache.db row stays");
}

/// Kill -9 right after the database transaction committed: purge blocks
/// updating cache.db (the test holds its write lock), so the kill lands
/// after the commit and before any file or object is deleted.
fn kill_after_commit_leaves_orphans_that_check_fix_removes(mut hs: Homeserver) {
    let s3 = S3::new();
    let doomed: Vec<Media> = (0..3).map(|_| remote(&hs).with_thumbs()).collect();
    let kept: Vec<Media> = (0..8).map(|_| local(&hs).accessed_days_ago(1).with_thumbs()).collect();
    hs.add_all(doomed.iter().chain(&kept).cloned().collect());
    hs.update_db("0s");
    hs.upload(&s3, &["--prefix", PREFIX]).ok();
    let objects_before = s3.objects();
    let files_before = hs.local_files();

    let blocker = rusqlite::Connection::open(hs.cache_db()).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut args: Vec<String> = ["--no-progress", "purge", "--remote-older-than", "30d"].map(String::from).to_vec();
    args.extend(s3.store_flags(PREFIX));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = spawn(&argv, hs.cwd(), &[]);
    // Timing only decides when to kill; the hang guard fails the test.
    let start = Instant::now();
    while doomed.iter().any(|m| hs.has_row(m)) {
        if let Some(status) = child.try_wait().unwrap() {
            let out = wait_output(child, "purge".into());
            panic!("purge exited ({status}) while blocked on cache.db: {}", out.describe());
        }
        assert!(start.elapsed() < Duration::from_secs(60), "purge never committed");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    blocker.execute_batch("ROLLBACK").unwrap();
    drop(blocker);

    // Rows gone, bytes all still there: orphans, never rows without bytes.
    for m in &doomed {
        assert!(!hs.has_row(m));
        assert_eq!(hs.thumb_rows(m), 0);
    }
    for m in &kept {
        assert!(hs.has_row(m));
    }
    assert_eq!(hs.local_files(), files_before, "purge deleted files before it was killed");
    assert_eq!(s3.objects(), objects_before, "purge deleted objects before it was killed");

    let check = |fix: bool| -> Out {
        let mut a = vec!["--json", "--no-progress", "check", "--grace-period", "0s"];
        if fix {
            a.push("--fix");
        }
        hs.mo_store(&s3, PREFIX, &a)
    };
    let doomed_refs: Vec<&Media> = doomed.iter().collect();
    let originals = doomed.len() as i64;
    let thumbs = sum_files(&doomed_refs) - originals;
    let out = check(false).status(4);
    assert_eq!(out.jn("unknown_files.count"), originals, "{}", out.describe());
    assert_eq!(out.jn("orphan_thumbnail_files.count"), thumbs);
    assert_eq!(out.jn("unknown_objects.count"), sum_files(&doomed_refs));
    assert_eq!(out.jn("lost_media.count"), 0);
    assert_eq!(out.jn("orphan_thumbnail_rows.count"), 0);

    let out = check(true).ok();
    assert_eq!(out.jn("unknown_files.fixed"), originals, "{}", out.describe());
    assert_eq!(out.jn("orphan_thumbnail_files.fixed"), thumbs);
    assert_eq!(out.jn("unknown_objects.fixed"), sum_files(&doomed_refs));
    for m in &doomed {
        hs.assert_local_gone(m);
        for key in keys_of(&[m], PREFIX) {
            assert!(s3.get(&key).is_none(), "{key} should be fixed away");
        }
    }
    for m in &kept {
        hs.assert_copied(m, &Dest::S3(&s3), PREFIX);
    }
    let out = check(false).ok();
    for kind in ["orphan_thumbnail_rows", "orphan_thumbnail_files", "unknown_files", "lost_media", "unknown_objects"] {
        assert_eq!(out.jn(&format!("{kind}.count")), 0, "{kind}: {}", out.describe());
    }
}

on_sqlite_and_postgres!(
    kill_after_commit_on_sqlite,
    kill_after_commit_on_postgres,
    kill_after_commit_leaves_orphans_that_check_fix_removes
);

/// A credential that may only delete objects (no ListBucket, no
/// HeadObject, not even HeadBucket), as a policy in front of moto plays
/// it: purge needs nothing else, since the keys follow from the rows and
/// go in batch deletes.
#[test]
fn purge_needs_only_the_right_to_delete_objects() {
    let mut hs = Homeserver::sqlite();
    let s3 = S3::new();
    let doomed: Vec<Media> = (0..4).map(|_| remote(&hs).with_thumbs()).collect();
    let kept = remote(&hs).created_days_ago(1).with_thumbs();
    hs.add_all(doomed.iter().chain([&kept]).cloned().collect());
    hs.update_db("0s");
    hs.upload(&s3, &["--prefix", PREFIX]).ok();
    let allow = |line: &str| {
        let (method, target) = line.split_once(' ').unwrap_or_default();
        let target = target.split(' ').next().unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let has_key = path.trim_start_matches('/').split_once('/').is_some_and(|(_, k)| !k.is_empty());
        (method == "DELETE" && has_key)
            || (method == "POST" && query.split('&').any(|q| q == "delete" || q == "delete="))
    };
    let proxy = DenyProxy::start(&s3.endpoint, allow);
    let args = [
        "--json",
        "--no-progress",
        "purge",
        "--remote-older-than",
        "30d",
        "--bucket",
        &s3.bucket,
        "--endpoint-url",
        &proxy.endpoint,
        "--prefix",
        PREFIX,
    ];
    let out = hs.mo(&args).ok();
    let refs: Vec<&Media> = doomed.iter().collect();
    for m in &doomed {
        assert_purged(&hs, &s3, m);
    }
    assert_kept(&hs, &s3, &kept);
    assert_eq!(out.jn("remote.media"), doomed.len() as i64, "{}", out.describe());
    assert_eq!(out.jn("remote.object_keys"), sum_files(&refs));
    assert_eq!(out.jn("remote.failed"), 0);
    let refused = proxy.refused();
    assert!(
        refused
            .iter()
            .all(|l| [format!("HEAD /{} HTTP/1.1", s3.bucket), format!("HEAD /{}/ HTTP/1.1", s3.bucket)].contains(l)),
        "purge asked for more than deletes (only the HeadBucket preflight may be refused): {refused:?}"
    );
    // A second run has no rows left, so it deletes nothing.
    let again = hs.mo(&args).ok();
    assert_eq!(again.jn("remote.object_keys"), 0, "{}", again.describe());
}
