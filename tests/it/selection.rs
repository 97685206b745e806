//! update-db, check-deleted, update and write against a SQLite homeserver:
//! which media are selected, how cache.db is kept, what `write` prints.

use crate::common::*;

fn sorted(mut v: Vec<CacheRow>) -> Vec<CacheRow> {
    v.sort();
    v
}

#[test]
fn update_db_selects_local_media_by_last_access_else_creation_time() {
    let mut hs = Homeserver::sqlite();
    let id = |hs: &Homeserver| hs.new_id();
    let old_never_accessed = Media::local(&id(&hs)).created_days_ago(40);
    let old_accessed_long_ago = Media::local(&id(&hs)).created_days_ago(100).accessed_days_ago(40);
    let old_but_accessed_yesterday = Media::local(&id(&hs)).created_days_ago(40).accessed_days_ago(1);
    let new_never_accessed = Media::local(&id(&hs)).created_days_ago(1);
    // COALESCE(last_access_ts, created_ts): last_access_ts wins when set
    let new_but_last_access_old = Media::local(&id(&hs)).created_days_ago(1).accessed_days_ago(40);
    hs.add_all(vec![
        old_never_accessed.clone(),
        old_accessed_long_ago.clone(),
        old_but_accessed_yesterday,
        new_never_accessed,
        new_but_last_access_old.clone(),
    ]);

    let before = now_ms();
    let out = hs.update_db("30d");
    let after = now_ms();

    assert_eq!(out.j("new_rows"), 3, "{}", out.describe());
    let cutoff = out.j("cutoff_ms");
    assert!(cutoff >= before - 30 * DAY_MS && cutoff <= after - 30 * DAY_MS, "cutoff_ms {cutoff} is not now - 30 days");
    assert_eq!(
        cache_rows(&hs.cache_db()),
        sorted(vec![
            old_never_accessed.cache_row(),
            old_accessed_long_ago.cache_row(),
            new_but_last_access_old.cache_row()
        ])
    );
}

#[test]
fn update_db_never_selects_url_preview_cache_media() {
    let mut hs = Homeserver::sqlite();
    let plain = Media::local(&hs.new_id()).created_days_ago(400);
    let url_preview = Media::local(&hs.new_id()).created_days_ago(400).url_cache("https://example.org/page");
    let url_preview_accessed_long_ago =
        Media::local(&hs.new_id()).created_days_ago(400).accessed_days_ago(300).url_cache("https://example.org/other");
    hs.add_all(vec![plain.clone(), url_preview, url_preview_accessed_long_ago]);
    let out = hs.update_db("1d");
    assert_eq!(out.j("new_rows"), 1);
    assert_eq!(cache_rows(&hs.cache_db()), vec![plain.cache_row()]);
}

#[test]
fn update_db_selects_remote_media_by_age_and_records_filesystem_id() {
    let mut hs = Homeserver::sqlite();
    let old = Media::remote("remote.example", "remoteOld", "fsOLDabcdefghijk").created_days_ago(60);
    let old_with_port = Media::remote("matrix.example:8448", "remoteOld2", "fsPORTabcdefghij").created_days_ago(60);
    let accessed_recently =
        Media::remote("remote.example", "remoteHot", "fsHOTabcdefghijk").created_days_ago(60).accessed_days_ago(2);
    let young = Media::remote("remote.example", "remoteNew", "fsNEWabcdefghijk").created_days_ago(2);
    // the same media_id from two origins are two different media
    let same_id_other_origin = Media::remote("other.example", "remoteOld", "fsOTHERabcdefgh").created_days_ago(60);
    hs.add_all(vec![old.clone(), old_with_port.clone(), accessed_recently, young, same_id_other_origin.clone()]);
    let out = hs.update_db("30d");
    assert_eq!(out.j("new_rows"), 3);
    let rows = cache_rows(&hs.cache_db());
    assert_eq!(rows, sorted(vec![old.cache_row(), old_with_port.cache_row(), same_id_other_origin.cache_row()]));
    for r in rows {
        assert_eq!(r.kind, "remote");
        assert!(r.filesystem_id.starts_with("fs"), "filesystem_id must come from remote_media_cache: {r:?}");
        assert_ne!(r.filesystem_id, r.media_id);
    }
}

#[test]
fn duration_suffixes_mean_seconds_hours_days_30_day_months_and_365_day_years() {
    // (duration, age just past it, age just short of it)
    let cases: [(&str, i64, i64); 5] = [
        ("600s", 1200 * 1000, 60 * 1000),
        ("2h", 3 * HOUR_MS, HOUR_MS),
        ("2d", 3 * DAY_MS, DAY_MS),
        ("1m", 31 * DAY_MS, 29 * DAY_MS),
        ("1y", 366 * DAY_MS, 364 * DAY_MS),
    ];
    for (dur, older, younger) in cases {
        let mut hs = Homeserver::sqlite();
        let old = Media::local(&hs.new_id()).created_ms_ago(older);
        let new = Media::local(&hs.new_id()).created_ms_ago(younger);
        hs.add_all(vec![old.clone(), new]);
        let out = hs.update_db(dur);
        assert_eq!(cache_rows(&hs.cache_db()), vec![old.cache_row()], "duration {dur}: {}", out.describe());
    }
}

#[test]
fn zero_duration_selects_everything_created_before_now() {
    let mut hs = Homeserver::sqlite();
    let a = Media::local(&hs.new_id()).created_ms_ago(5000);
    let b = Media::remote("r.example", "rid", "fsidfsidfsid").created_ms_ago(5000);
    hs.add_all(vec![a.clone(), b.clone()]);
    hs.update_db("0s");
    assert_eq!(cache_rows(&hs.cache_db()), sorted(vec![a.cache_row(), b.cache_row()]));
}

#[test]
fn update_db_is_incremental_and_keeps_existing_rows_and_flags() {
    let mut hs = Homeserver::sqlite();
    let a = hs.add(Media::local(&hs.new_id()).created_days_ago(40));
    let b = hs.add(Media::local(&hs.new_id()).created_days_ago(40));
    assert_eq!(hs.update_db("30d").j("new_rows"), 2);
    assert_eq!(hs.update_db("30d").j("new_rows"), 0);

    // b's files disappear and check-deleted marks it
    hs.remove(&b.original_rel());
    hs.mo(&["--json", "check-deleted", &hs.media_arg()]).ok();
    assert_eq!(cache_known_deleted(&hs.cache_db(), "", &b.media_id), Some(true));

    // a media grows old enough (a shorter duration does as well as waiting);
    // b stays marked; a stays
    let c = hs.add(Media::local(&hs.new_id()).created_days_ago(20));
    // and a is accessed again: update-db does not remove rows
    hs.sql(&format!(
        "UPDATE local_media_repository SET last_access_ts = {} WHERE media_id = '{}'",
        now_ms(),
        a.media_id
    ));
    assert_eq!(hs.update_db("10d").j("new_rows"), 1);
    assert_eq!(cache_rows(&hs.cache_db()), sorted(vec![a.cache_row(), b.cache_row().deleted(true), c.cache_row()]));
}

/// The daily run reads only the media that passed the cut-off since the
/// last run. A row written already old (a restored backup, an import) is
/// seen at once by the database's count of old media; hidden by a removal,
/// it is picked up by the weekly full selection; a note of another
/// database counts for nothing.
#[test]
fn update_db_reads_only_what_passed_the_cut_off_and_finds_rows_written_already_old() {
    let mut hs = Homeserver::sqlite();
    let first = hs.add(Media::local(&hs.new_id()).created_days_ago(40));
    hs.add(Media::local(&hs.new_id()).created_days_ago(40));
    assert_eq!(hs.update_db("30d").j("new_rows"), 2);
    let again = hs.update_db("30d");
    assert_eq!(again.j("new_rows"), 0);
    again.stderr_line_with("are in cache.db already");

    let late = hs.add(Media::local(&hs.new_id()).created_days_ago(40));
    let out = hs.update_db("30d");
    assert_eq!(out.j("new_rows"), 1, "{}", out.describe());
    out.stderr_line_with("written already old");
    assert!(hs.has_row(&late));

    // One old row removed, one written old: the count cannot tell.
    hs.sql(&format!("DELETE FROM local_media_repository WHERE media_id = '{}'", first.media_id));
    let hidden = hs.add(Media::local(&hs.new_id()).created_days_ago(40));
    assert_eq!(hs.update_db("30d").j("new_rows"), 0);
    let cache_db = hs.cache_db();
    let note = |sql: &str| rusqlite::Connection::open(&cache_db).unwrap().execute(sql, []).unwrap();
    // A week after the last full selection, the whole history is read again.
    note("UPDATE media_offload_state SET value = json_set(value, '$.full_at_ms', 0)");
    assert_eq!(hs.update_db("30d").j("new_rows"), 1);
    assert!(hs.has_row(&hidden));

    hs.sql(&format!("DELETE FROM local_media_repository WHERE media_id = '{}'", late.media_id));
    let other = hs.add(Media::local(&hs.new_id()).created_days_ago(40));
    note("UPDATE media_offload_state SET value = json_set(value, '$.database', 'SQLite /elsewhere')");
    assert_eq!(hs.update_db("30d").j("new_rows"), 1);
    assert!(hs.has_row(&other));
}

#[test]
fn check_deleted_marks_media_only_when_original_and_all_thumbnails_are_gone() {
    let mut hs = Homeserver::sqlite();
    let complete = Media::local(&hs.new_id()).with_thumbs();
    let original_gone = Media::local(&hs.new_id()).with_thumbs();
    let one_thumb_left = Media::remote("remote.example", "rm1", "fsidONETHUMBxx").with_thumbs();
    let all_gone = Media::local(&hs.new_id()).with_thumbs();
    let never_had_files = Media::remote("remote.example", "rm2", "fsidNOFILESxxx").no_original();
    let only_empty_thumb_dir = Media::local(&hs.new_id());
    hs.add_all(vec![
        complete.clone(),
        original_gone.clone(),
        one_thumb_left.clone(),
        all_gone.clone(),
        never_had_files.clone(),
        only_empty_thumb_dir.clone(),
    ]);
    hs.update_db("30d");

    hs.remove(&original_gone.original_rel());
    hs.remove(&one_thumb_left.original_rel());
    hs.remove(&one_thumb_left.rel_paths()[1]);
    for rel in all_gone.rel_paths() {
        hs.remove(&rel);
    }
    hs.remove(&only_empty_thumb_dir.original_rel());
    std::fs::create_dir_all(hs.path_of(&only_empty_thumb_dir.thumb_dir_rel())).unwrap();

    let out = hs.mo(&["--json", "check-deleted", &hs.media_arg()]).ok();
    let db = hs.cache_db();
    let kd = |m: &Media| cache_known_deleted(&db, m.origin.as_deref().unwrap_or(""), &m.media_id).unwrap();
    assert!(!kd(&complete));
    assert!(!kd(&original_gone));
    assert!(!kd(&one_thumb_left));
    assert!(kd(&all_gone));
    assert!(kd(&never_had_files));
    assert!(kd(&only_empty_thumb_dir), "an empty thumbnail dir holds nothing");
    assert_eq!(out.j("marked_deleted"), 3, "{}", out.describe());
    assert_eq!(out.j("reopened"), 0);
    // check-deleted only reads the store
    hs.assert_local_intact(&complete);
}

#[test]
fn check_deleted_reopens_rows_whose_files_came_back() {
    let mut hs = Homeserver::sqlite();
    let back = hs.add(Media::local(&hs.new_id()).with_thumbs());
    let thumb_back = hs.add(Media::remote("remote.example", "rm", "fsidTHUMBBACKx").with_thumbs());
    let stays_gone = hs.add(Media::local(&hs.new_id()));
    hs.update_db("30d");
    for m in [&back, &thumb_back, &stays_gone] {
        for rel in m.rel_paths() {
            hs.remove(&rel);
        }
    }
    let out = hs.mo(&["--json", "check-deleted", &hs.media_arg()]).ok();
    assert_eq!(out.j("marked_deleted"), 3);

    // Synapse fetched them again
    hs.restore(&back.original_rel());
    hs.restore(&thumb_back.rel_paths()[2]);
    let out = hs.mo(&["--json", "check-deleted", &hs.media_arg()]).ok();
    assert_eq!(out.j("reopened"), 2, "{}", out.describe());
    assert_eq!(out.j("marked_deleted"), 0);
    assert_eq!(
        cache_rows(&hs.cache_db()),
        sorted(vec![back.cache_row(), thumb_back.cache_row(), stays_gone.cache_row().deleted(true)])
    );
}

#[test]
fn update_is_update_db_followed_by_check_deleted() {
    let mut hs = Homeserver::sqlite();
    let present = hs.add(Media::local(&hs.new_id()));
    let gone = hs.add(Media::local(&hs.new_id()));
    let young = hs.add(Media::local(&hs.new_id()).created_days_ago(1));
    hs.remove(&gone.original_rel());
    let out = hs.mo(&["--json", "update", &hs.media_arg(), "30d"]).ok();
    let v = out.json();
    assert_eq!(v["command"], "update");
    assert_eq!(out.j("new_rows"), 2);
    assert_eq!(out.j("marked_deleted"), 1);
    assert_eq!(out.j("reopened"), 0);
    assert!(out.j("checked") >= 2);
    assert_eq!(cache_rows(&hs.cache_db()), sorted(vec![present.cache_row(), gone.cache_row().deleted(true)]));
    hs.assert_local_intact(&young);
}

fn expected_write_lines(media: &[&Media]) -> Vec<String> {
    let mut v: Vec<String> = media.iter().flat_map(|m| m.write_lines()).collect();
    v.sort();
    v
}

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn write_lists_original_and_thumbnail_dir_of_each_not_deleted_row() {
    let mut hs = Homeserver::sqlite();
    let a = hs.add(Media::local(&hs.new_id()).with_thumbs());
    let b = hs.add(Media::remote("remote.example:8448", "rid", "fsidWRITExxxxx"));
    let deleted = hs.add(Media::local(&hs.new_id()));
    hs.update_db("30d");
    hs.remove(&deleted.original_rel());
    hs.mo(&["check-deleted", &hs.media_arg()]).ok();

    let want = expected_write_lines(&[&a, &b]);
    assert!(want.contains(&format!(
        "local_thumbnails/{}/{}/{}/",
        &a.media_id[..2],
        &a.media_id[2..4],
        &a.media_id[4..]
    )));

    let to_stdout_default = hs.mo(&["write"]).ok();
    assert_eq!(sorted_lines(&to_stdout_default.stdout), want);
    let to_stdout_dash = hs.mo(&["write", "-"]).ok();
    assert_eq!(sorted_lines(&to_stdout_dash.stdout), want);

    hs.mo(&["write", "list.txt"]).ok();
    let text = std::fs::read_to_string(hs.cwd().join("list.txt")).unwrap();
    assert_eq!(sorted_lines(&text), want);
    assert!(text.ends_with('\n'));
}

#[test]
fn cache_db_location_comes_from_flag_then_env_then_cwd() {
    let mut hs = Homeserver::sqlite();
    let m = hs.add(Media::local(&hs.new_id()));
    std::fs::create_dir_all(hs.cwd().join("state")).unwrap();

    hs.mo(&["--cache-db", "state/by-flag.db", "update-db", "30d"]).ok();
    assert_eq!(cache_rows(&hs.cwd().join("state/by-flag.db")), vec![m.cache_row()]);

    let by_env = hs.cwd().join("state/by-env.db");
    hs.mo_env(&["update-db", "30d"], &[("MEDIA_OFFLOAD_CACHE_DB", &by_env.to_string_lossy())]).ok();
    assert_eq!(cache_rows(&by_env), vec![m.cache_row()]);

    // the flag wins over the environment
    let flag_wins = hs.cwd().join("state/flag-wins.db");
    hs.mo_env(
        &["update-db", "30d", "--cache-db", &flag_wins.to_string_lossy()],
        &[("MEDIA_OFFLOAD_CACHE_DB", "state/ignored.db")],
    )
    .ok();
    assert!(flag_wins.exists());
    assert!(!hs.cwd().join("state/ignored.db").exists());

    assert!(!hs.cache_db().exists(), "./cache.db must not be touched when another path is given");
    hs.mo(&["update-db", "30d"]).ok();
    assert_eq!(cache_rows(&hs.cache_db()), vec![m.cache_row()]);
}

#[test]
fn global_flags_are_accepted_after_the_subcommand() {
    let mut hs = Homeserver::sqlite();
    hs.add(Media::local(&hs.new_id()));
    let out = hs.mo(&["update-db", "30d", "--json", "--no-progress", "-q"]).ok();
    assert_eq!(out.json()["command"], "update-db");
    assert_eq!(out.j("new_rows"), 1);
    let out = hs.mo(&["check-deleted", &hs.media_arg(), "--json", "-v"]).ok();
    assert_eq!(out.json()["command"], "check-deleted");
}

#[test]
fn summary_goes_to_stdout_as_one_json_object_and_logs_to_stderr() {
    let mut hs = Homeserver::sqlite();
    hs.add(Media::local(&hs.new_id()));
    let out = hs.mo(&["--json", "update-db", "30d"]).ok();
    let lines: Vec<&str> = out.stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "stdout must hold only the JSON summary: {}", out.describe());
    let v = out.json();
    assert_eq!(v["command"], "update-db");
    assert!(v["cutoff_ms"].is_i64());
    // without --json, a human summary is printed instead
    let text = hs.mo(&["update-db", "30d"]).ok();
    assert!(!text.stdout.trim().is_empty());
    assert!(serde_json::from_str::<serde_json::Value>(text.stdout.trim()).is_err());
}

#[test]
fn homeserver_config_path_flag_points_at_another_config_file() {
    let mut hs = Homeserver::sqlite();
    let m = hs.add(Media::local(&hs.new_id()));
    let text = std::fs::read_to_string(hs.cwd().join("homeserver.yaml")).unwrap();
    std::fs::remove_file(hs.cwd().join("homeserver.yaml")).unwrap();
    hs.write_file("conf/hs.yaml", &text);
    hs.mo(&["update-db", "30d", "--homeserver-config-path", "conf/hs.yaml"]).ok();
    assert_eq!(cache_rows(&hs.cache_db()), vec![m.cache_row()]);
    // update takes the flag too
    hs.mo(&["update", &hs.media_arg(), "30d", "--homeserver-config-path", "conf/hs.yaml"]).ok();
}

#[test]
fn database_yaml_in_cwd_takes_precedence_over_homeserver_yaml() {
    let mut hs = Homeserver::sqlite();
    let m = hs.add(Media::local(&hs.new_id()));
    // homeserver.yaml now points nowhere useful
    hs.write_file("homeserver.yaml", &homeserver_yaml_sqlite(&hs.cwd().join("missing-dir/none.db"), &hs.media));
    hs.write_file("database.yaml", &database_yaml_sqlite(hs.sqlite_path()));
    hs.mo(&["update-db", "30d"]).ok();
    assert_eq!(cache_rows(&hs.cache_db()), vec![m.cache_row()]);
}

#[test]
fn relative_sqlite_path_in_homeserver_yaml_is_relative_to_cwd() {
    let mut hs = Homeserver::sqlite();
    let m = hs.add(Media::local(&hs.new_id()));
    hs.write_file("homeserver.yaml", &homeserver_yaml_sqlite(std::path::Path::new("homeserver.db"), &hs.media));
    hs.mo(&["update-db", "30d"]).ok();
    assert_eq!(cache_rows(&hs.cache_db()), vec![m.cache_row()]);
}

#[test]
fn update_db_reads_the_homeserver_database_without_changing_it() {
    let mut hs = Homeserver::sqlite();
    hs.add_all((0..20).map(|i| Media::local(&format!("media{i:04}abcdefghij")).with_thumbs()).collect());
    let before = std::fs::read(hs.sqlite_path()).unwrap();
    hs.update_db("30d");
    let after = std::fs::read(hs.sqlite_path()).unwrap();
    assert!(before == after, "the homeserver database file changed");
}

#[test]
fn thumbnail_dir_holding_only_a_subdirectory_counts_as_deleted_like_the_python_tool() {
    // the contract: thumbnails are the *regular files* in the thumbnail dir
    let mut hs = Homeserver::sqlite();
    let m = hs.add(Media::local(&hs.new_id()).with_thumbs());
    hs.update_db("30d");
    for rel in m.rel_paths() {
        hs.remove(&rel);
    }
    std::fs::create_dir_all(hs.path_of(&m.thumb_dir_rel()).join("a-subdirectory")).unwrap();
    // the Python tool marks it deleted (on a copy of the cache)...
    let py = hs.cwd().join("py");
    std::fs::create_dir_all(&py).unwrap();
    cache_insert(&py.join("cache.db"), &[m.cache_row()]);
    run_python(&["--no-progress", "check-deleted", &hs.media_arg()], &py, &[]).ok();
    assert_eq!(cache_known_deleted(&py.join("cache.db"), "", &m.media_id), Some(true));
    // ...and so must we
    let out = hs.mo(&["--json", "check-deleted", &hs.media_arg()]).ok();
    assert_eq!(out.j("marked_deleted"), 1, "{}", out.describe());
}

/// A large homeserver's `remote_content` holds a folder per server, far
/// more than a process may hold descriptors (1,024 by default): the walk
/// that finds media pulled back must not keep one open per folder.
#[test]
fn check_deleted_walks_more_server_folders_than_it_may_open_descriptors() {
    let mut hs = Homeserver::sqlite();
    let media: Vec<Media> = (0..200)
        .map(|i| hs.add(Media::remote(&format!("s{i}.example"), &format!("m{i}"), &format!("fsid{i:09}x"))))
        .collect();
    hs.update_db("30d");
    for m in &media {
        hs.remove(&m.original_rel());
    }
    let out = hs.mo(&["--json", "check-deleted", &hs.media_arg()]).ok();
    assert_eq!(out.j("marked_deleted"), 200);
    for m in &media {
        hs.restore(&m.original_rel());
    }
    let base = hs.media_arg();
    let limited = "ulimit -n 64 && exec \"$0\" \"$@\"";
    let args = ["-c", limited, bin(), "--json", "check-deleted", base.as_str()];
    let out = run_program("sh", &args, hs.cwd(), &[]).ok();
    assert_eq!(out.j("reopened"), 200, "{}", out.describe());
}
