//! Dendrite: `purge --dendrite-config` and `check --dendrite-config` on
//! Dendrite's schema (PostgreSQL, and SQLite with three separate files)
//! and its layout of shared hash folders. Every purge rule through the
//! binary, the dry run, a second run changing nothing, kill -9 at each
//! crash point then a rerun, `check` finding each planted inconsistency,
//! and the commands that must refuse Dendrite.

use std::time::{Duration, SystemTime};

use crate::common::*;

const REMOTE: &str = "remote.example";

macro_rules! on_both {
    ($sqlite:ident, $postgres:ident, $scenario:path) => {
        #[test]
        fn $sqlite() {
            $scenario(Dendrite::sqlite());
        }

        #[test]
        fn $postgres() {
            $scenario(Dendrite::postgres());
        }
    };
}

on_both!(purge_rules_on_sqlite, purge_rules_on_postgres, purge_keeps_and_removes_exactly_what_the_rules_say);
on_both!(check_on_sqlite, check_on_postgres, check_finds_each_planted_inconsistency);

fn purge_keeps_and_removes_exactly_what_the_rules_say(d: Dendrite) {
    let thumbs = ["thumbnail-32x32-crop", "thumbnail-640x480-scale"];
    // Remote, old: purged, with its thumbnail rows and its folder.
    let r_old = d.add(REMOTE, &d.new_id(), &bytes_for("r_old"), 40, &thumbs);
    // Remote, recent: kept.
    let r_young = d.add(REMOTE, &d.new_id(), &bytes_for("r_young"), 2, &thumbs);
    // A local upload and an old remote media with the same bytes: the
    // remote row goes, the shared folder stays (cleanmedia deleted it).
    let shared = bytes_for("shared");
    let l_shared = d.add(DENDRITE_SERVER, &d.new_id(), &shared, 400, &thumbs[..1]);
    let r_shared = d.add("third.example", &d.new_id(), &shared, 40, &thumbs[1..]);
    // The same media id from two origins: rows are keyed by both.
    let same_id = d.new_id();
    let r_same_id = d.add(REMOTE, &same_id, &bytes_for("r_same_id"), 40, &[]);
    let l_same_id = d.add(DENDRITE_SERVER, &same_id, &bytes_for("l_same_id"), 1, &[]);
    // A local media with an empty user_id is still local (cleanmedia
    // called it remote).
    let l_no_user = d.add(DENDRITE_SERVER, &d.new_id(), &bytes_for("l_no_user"), 400, &[]);
    d.sql(
        DendriteDb::Media,
        &format!("UPDATE mediaapi_media_repository SET user_id = '' WHERE media_id = '{}'", l_no_user.media_id),
    );
    // Avatars of each kind, old, of either origin: kept.
    let profile = d.add(DENDRITE_SERVER, &d.new_id(), &bytes_for("profile"), 400, &thumbs);
    let room = d.add(REMOTE, &d.new_id(), &bytes_for("room"), 400, &[]);
    let member = d.add(REMOTE, &d.new_id(), &bytes_for("member"), 400, &[]);
    d.profile_avatar("alice", &profile.mxc());
    d.room_state_avatar(false, &room.mxc());
    d.room_state_avatar(true, &member.mxc());
    // An avatar URL of another origin with the id of an old remote media:
    // the whole mxc:// must match, so that media goes.
    let r_avatar_elsewhere = d.add(REMOTE, &d.new_id(), &bytes_for("r_avatar_elsewhere"), 40, &[]);
    d.profile_avatar("carol", &format!("mxc://other.example/{}", r_avatar_elsewhere.media_id));
    // Two old local rows with the same bytes, one recent local with them too.
    let twice = bytes_for("twice");
    let l_twice_a = d.add(DENDRITE_SERVER, &d.new_id(), &twice, 400, &[]);
    let l_twice_b = d.add(DENDRITE_SERVER, &d.new_id(), &twice, 400, &thumbs[..1]);
    let thrice = bytes_for("thrice");
    let l_thrice_old = d.add(DENDRITE_SERVER, &d.new_id(), &thrice, 400, &[]);
    let l_thrice_new = d.add(DENDRITE_SERVER, &d.new_id(), &thrice, 1, &[]);
    // A thumbnail file without a row, beside an old remote media's: it goes with the folder.
    d.write_thumb(&r_old.hash, "thumbnail-96x96-crop", SystemTime::now() - Duration::from_secs(86400 * 40));
    // Dendrite's uploads in progress are never touched.
    std::fs::write(d.base().join("tmp/upload"), b"partial").unwrap();

    let before_rows = d.rows();
    let before_files = d.files();

    // The dry run lists exactly the remote rows and changes nothing.
    let out = d.mo(&["--json", "purge", "--remote-older-than", "30d", "--dry-run"]).ok();
    assert_eq!(d.rows(), before_rows, "a dry run deletes no row");
    assert_eq!(d.files(), before_files, "a dry run deletes no file");
    assert_eq!(out.jn("remote.media"), 4, "{}", out.describe());
    for m in [&r_old, &r_shared, &r_same_id, &r_avatar_elsewhere] {
        out.stderr_line_with(&format!("would delete row remote {}/{}", m.origin, m.media_id));
    }
    out.stderr_line_with(&format!("would delete file {}/file", r_old.folder()));
    assert!(!out.stderr.contains(&format!("would delete file {}/", r_shared.folder())), "{}", out.describe());
    let dry_files = out.jn("remote.files");

    // Remote only, from the config file.
    let config = d.cwd().join("mo.yaml");
    std::fs::write(
        &config,
        format!(
            "dendrite_config: {}\ndendrite_working_dir: {}\npurge:\n  remote_older_than: 30d\n",
            d.config_path().display(),
            d.cwd().display()
        ),
    )
    .unwrap();
    let config_arg = config.display().to_string();
    let out = run(&["--no-progress", "--json", "--config", &config_arg, "purge"], d.cwd(), &[]).ok();
    assert_eq!(out.json()["object_store"], false);
    assert_eq!(out.jn("remote.media"), 4);
    assert_eq!(out.jn("remote.files"), dry_files, "the dry run promised these files");
    assert_eq!(out.jn("remote.avatars_kept"), 2);
    assert_eq!(out.jn("remote.rows_only"), 1, "the shared folder stays");
    assert!(out.json().get("local").is_none());
    for m in [&r_old, &r_shared, &r_same_id, &r_avatar_elsewhere] {
        assert!(!d.has_row(m), "{} should be purged", m.mxc());
        assert_eq!(d.thumb_rows(m), 0, "thumbnail rows of {}", m.mxc());
    }
    for m in [&r_old, &r_same_id, &r_avatar_elsewhere] {
        assert!(!d.base().join(m.folder()).exists(), "{} should be gone", m.folder());
    }
    assert!(d.folder_exists(&l_shared), "the local upload's only copy is kept");
    assert!(d.base().join(l_shared.folder()).join(thumbs[1]).exists(), "shared thumbnails stay");
    for m in [&r_young, &room, &member, &l_same_id, &l_no_user, &l_shared, &profile] {
        assert!(d.has_row(m) && d.folder_exists(m), "{} should be kept", m.mxc());
        assert_eq!(d.thumb_rows(m), m.thumbs.len());
    }
    assert!(d.base().join("tmp/upload").exists());
    assert!(d.rows_without_files().is_empty(), "{:?}", d.rows_without_files());

    // A second run changes nothing.
    let rows = d.rows();
    let files = d.files();
    let out = run(&["--no-progress", "--json", "--config", &config_arg, "purge"], d.cwd(), &[]).ok();
    assert_eq!(out.jn("remote.media"), 0);
    assert_eq!((d.rows(), d.files()), (rows, files));

    // Local, when asked: never an avatar, a hash folder only with its last row.
    let out = d.mo(&["--json", "purge", "--local-older-than", "30d"]).ok();
    assert!(out.json().get("remote").is_none(), "flags replace the config file's policy");
    for m in [&l_shared, &l_no_user, &l_twice_a, &l_twice_b, &l_thrice_old] {
        assert!(!d.has_row(m), "{} should be purged", m.mxc());
    }
    assert_eq!(out.jn("local.media"), 5);
    assert_eq!(out.jn("local.avatars_kept"), 1);
    for m in [&l_shared, &l_no_user, &l_twice_a] {
        assert!(!d.base().join(m.folder()).exists(), "{} should be gone with its last row", m.folder());
    }
    assert!(d.folder_exists(&l_thrice_new), "still used by a recent row");
    for m in [&profile, &l_same_id, &l_thrice_new, &r_young, &room, &member] {
        assert!(d.has_row(m) && d.folder_exists(m), "{} should be kept", m.mxc());
    }
    assert!(d.rows_without_files().is_empty(), "{:?}", d.rows_without_files());
    let out = d.mo(&["--json", "purge", "--local-older-than", "30d", "--remote-older-than", "30d"]).ok();
    assert_eq!(out.jn("local.media") + out.jn("remote.media") + out.jn("local.files"), 0);

    // What is left is consistent.
    let out = d.mo(&["--json", "check"]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert_eq!(out.json()["homeserver"], "dendrite");
}

fn check_finds_each_planted_inconsistency(d: Dendrite) {
    let old = SystemTime::now() - Duration::from_secs(86400 * 3);
    let mut healthy = Vec::new();
    for i in 0..12 {
        healthy.push(d.add(DENDRITE_SERVER, &d.new_id(), &bytes_for(&format!("ok{i}")), 10, &["thumbnail-32x32-crop"]));
    }
    // Dendrite stored something today: the database is the live one.
    healthy.push(d.add(REMOTE, &d.new_id(), &bytes_for("today"), 0, &[]));
    // A thumbnail file without a row in a known folder: normal under sharing.
    d.write_thumb(&healthy[0].hash, "thumbnail-96x96-crop", old);
    // 4. a row whose file is missing.
    let lost = d.add(REMOTE, &d.new_id(), &bytes_for("lost"), 10, &[]);
    std::fs::remove_file(d.base().join(lost.folder()).join("file")).unwrap();
    // 1. thumbnail rows without their media row.
    let orphan_rows = d.add(REMOTE, &d.new_id(), &bytes_for("orphan_rows"), 10, &["thumbnail-32x32-crop"]);
    d.sql(
        DendriteDb::Media,
        &format!("DELETE FROM mediaapi_media_repository WHERE media_id = '{}'", orphan_rows.media_id),
    );
    // 3. a folder no row's hash refers to (the rows of orphan_rows are gone
    // too, so its folder is one), and a young one, left alone.
    let unknown_hash = base64hash(b"nobody");
    std::fs::create_dir_all(d.base().join(hash_folder(&unknown_hash))).unwrap();
    let unknown = d.base().join(hash_folder(&unknown_hash)).join("file");
    std::fs::write(&unknown, b"nobody").unwrap();
    set_mtime(&unknown, old);
    let young_hash = base64hash(b"young");
    std::fs::create_dir_all(d.base().join(hash_folder(&young_hash))).unwrap();
    std::fs::write(d.base().join(hash_folder(&young_hash)).join("file"), b"young").unwrap();
    // 6. a file whose size is not its rows'.
    let damaged = d.add(DENDRITE_SERVER, &d.new_id(), &bytes_for("damaged"), 10, &[]);
    let damaged_file = d.base().join(damaged.folder()).join("file");
    std::fs::write(&damaged_file, b"short").unwrap();
    set_mtime(&damaged_file, old);
    // Not Dendrite's: left alone; tmp/ is not looked at.
    std::fs::write(d.base().join(healthy[1].folder()).join("notes.txt"), b"x").unwrap();
    std::fs::write(d.base().join("tmp/upload"), b"partial").unwrap();

    let out = d.mo(&["--json", "check"]);
    assert_eq!(out.code(), 4, "{}", out.describe());
    assert_eq!(out.jn("orphan_thumbnail_rows.count"), 1);
    assert_eq!(out.jn("orphan_thumbnail_files.count"), 0, "thumbnails without rows are normal");
    // orphan_rows' file and thumbnail, and the unknown file.
    assert_eq!(out.jn("unknown_files.count"), 3, "{}", out.describe());
    assert_eq!(out.jn("lost_media.count"), 1);
    assert!(out.stdout.contains(&lost.mxc()), "{}", out.describe());
    assert_eq!(out.jn("damaged_files.count"), 1);
    assert_eq!(out.jn("not_media_files.count"), 1);
    assert_eq!(out.jn("young"), 1);
    let text = d.mo(&["check"]);
    assert!(text.stdout.contains("4. Lost media (no file on disk): 1"), "{}", text.describe());
    assert!(!text.stdout.contains("Thumbnail files without media"), "{}", text.describe());

    // --fix removes the orphans only.
    let out = d.mo(&["--json", "check", "--fix"]);
    assert_eq!(out.code(), 4, "lost and damaged media are left: {}", out.describe());
    assert_eq!(out.jn("orphan_thumbnail_rows.fixed"), 1);
    assert_eq!(out.jn("unknown_files.fixed"), 3);
    assert!(!d.base().join(orphan_rows.folder()).exists());
    assert!(!unknown.exists());
    assert!(d.base().join(hash_folder(&young_hash)).join("file").exists());
    assert!(d.base().join("tmp/upload").exists());
    assert!(d.base().join(healthy[0].folder()).join("thumbnail-96x96-crop").exists());
    for m in &healthy {
        assert!(d.folder_exists(m) && d.has_row(m));
    }
    assert!(d.has_row(&lost), "lost media are reported, never removed");
    let out = d.mo(&["--json", "check"]);
    assert_eq!(out.jn("unknown_files.count") + out.jn("orphan_thumbnail_rows.count"), 0);
    assert_eq!(out.jn("lost_media.count") + out.jn("damaged_files.count"), 2);
}

/// Old remote media to purge (a third sharing bytes with kept local
/// uploads) and kept media, killed at `at`: no row is ever left without
/// its file, a rerun completes, `check --fix` removes the orphan folders
/// the kill left, and one more purge changes nothing.
fn killed_at_then_rerun(d: Dendrite, at: &str) {
    let mut doomed = Vec::new();
    let mut kept = Vec::new();
    for i in 0..30 {
        let data = bytes_for(&format!("doomed{i}"));
        doomed.push(d.add(REMOTE, &d.new_id(), &data, 40, &["thumbnail-32x32-crop"]));
        if i % 3 == 0 {
            kept.push(d.add(DENDRITE_SERVER, &d.new_id(), &data, 400, &[]));
        }
    }
    for i in 0..30 {
        kept.push(d.add(REMOTE, &d.new_id(), &bytes_for(&format!("kept{i}")), 0, &["thumbnail-32x32-crop"]));
    }
    let args = d.args(&["--json", "purge", "--remote-older-than", "30d", "--concurrency", "1"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(crashed_at(&args, d.cwd(), at), "the purge never reached {at}");
    assert!(d.rows_without_files().is_empty(), "after a kill at {at}: {:?}", d.rows_without_files());
    for m in &kept {
        assert!(d.has_row(m) && d.folder_exists(m), "{} must stay (kill at {at})", m.mxc());
    }
    // The page's rows went in one transaction, before any file.
    assert!(doomed.iter().all(|m| !d.has_row(m)), "kill at {at}");
    let out = run(&args, d.cwd(), &[]).ok();
    assert_eq!(out.jn("remote.media"), 0, "{}", out.describe());
    // Folders whose rows went before the kill: check finds them, --fix removes them.
    let out = d.mo(&["--json", "check"]);
    assert_eq!(out.code(), 4, "{}", out.describe());
    assert!(out.jn("unknown_files.count") > 0);
    assert_eq!(out.jn("lost_media.count"), 0);
    d.mo(&["check", "--fix"]).ok();
    d.mo(&["check"]).ok();
    for m in &doomed {
        let used = kept.iter().any(|k| k.hash == m.hash);
        assert_eq!(d.folder_exists(m), used, "{}", m.folder());
    }
    for m in &kept {
        assert!(d.has_row(m) && d.folder_exists(m));
    }
    let rows = d.rows();
    let files = d.files();
    let again = run(&args, d.cwd(), &[]).ok();
    assert_eq!(again.jn("remote.media") + again.jn("remote.files"), 0);
    assert_eq!((d.rows(), d.files()), (rows, files));
}

#[test]
fn purge_killed_after_the_commit_then_rerun() {
    killed_at_then_rerun(Dendrite::sqlite(), "after-purge-commit");
}

#[test]
fn purge_killed_after_some_folders_then_rerun() {
    killed_at_then_rerun(Dendrite::sqlite(), "after-purge-files:7");
}

#[test]
fn purge_killed_after_the_first_folder_on_postgres_then_rerun() {
    killed_at_then_rerun(Dendrite::postgres(), "after-purge-files:1");
}

#[test]
fn a_held_lock_makes_a_dendrite_purge_exit_75() {
    let d = Dendrite::sqlite();
    let m = d.add(REMOTE, &d.new_id(), &bytes_for("m"), 40, &[]);
    let lock = std::fs::File::options().create(true).truncate(false).write(true).open(d.cwd().join("cache.db.lock"));
    let lock = lock.unwrap();
    lock.try_lock().unwrap();
    let out = d.mo(&["purge", "--remote-older-than", "30d"]);
    assert_eq!(out.code(), 75, "{}", out.describe());
    assert!(d.has_row(&m));
    drop(lock);
    d.mo(&["purge", "--remote-older-than", "30d"]).ok();
    assert!(!d.has_row(&m));
}

#[test]
fn relative_paths_without_the_working_dir_and_store_options_are_refused() {
    let d = Dendrite::sqlite();
    let config = d.config_path().display().to_string();
    let elsewhere = tempfile::tempdir().unwrap();
    let out = run(&["purge", "--remote-older-than", "30d", "--dendrite-config", &config], elsewhere.path(), &[]);
    out.clean_error(1, &["media_api.base_path", "--dendrite-working-dir"]);
    let out = d.mo(&["purge", "--remote-older-than", "30d", "--bucket", "b"]);
    out.clean_error(1, &["--bucket", "object store"]);
    let out = d.mo(&["purge"]);
    out.clean_error(1, &["nothing to purge", "--remote-older-than"]);
}

#[test]
fn offload_commands_refuse_a_dendrite_configuration() {
    let d = Dendrite::sqlite();
    let config = d.cwd().join("mo.yaml");
    std::fs::write(&config, format!("dendrite_config: {}\n", d.config_path().display())).unwrap();
    let config = config.display().to_string();
    let base = d.base().display().to_string();
    for args in [
        vec!["migrate"],
        vec!["upload", base.as_str(), "bucket", "--delete"],
        vec!["update-db", "30d"],
        vec!["check-deleted", base.as_str()],
    ] {
        let mut all = vec!["--config", config.as_str()];
        all.extend(args);
        run(&all, d.cwd(), &[]).clean_error(1, &["Dendrite cannot read media from an object store"]);
    }
    // dendrite.yaml given as a homeserver config is recognised too.
    let dendrite_yaml = d.config_path().display().to_string();
    run(&["update-db", "30d", "--homeserver-config-path", &dendrite_yaml], d.cwd(), &[])
        .clean_error(1, &["Dendrite", "--dendrite-config"]);
    run(&["migrate", "--homeserver-config-path", &dendrite_yaml], d.cwd(), &[])
        .clean_error(1, &["Dendrite", "--dendrite-config"]);
}
