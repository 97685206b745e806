//! check: the four kinds of inconsistency between the homeserver database,
//! the media store and the object store, as counted, sampled and fixed;
//! the grace period; what --fix never touches; the refusal to "fix" a store
//! that belongs to another database; exit codes.

use std::time::{Duration, SystemTime};

use crate::common::*;

const PREFIX: &str = "pfx/";
const ORIGIN: &str = "remote.example";

fn backdate(hs: &Homeserver, rel: &str, age: Duration) {
    let f = std::fs::File::options().write(true).open(hs.path_of(rel)).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
}

fn samples(out: &Out, kind: &str) -> Vec<String> {
    out.json()[kind]["samples"]
        .as_array()
        .unwrap_or_else(|| panic!("no {kind}.samples: {}", out.describe()))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[track_caller]
fn assert_sampled(out: &Out, kind: &str, needles: &[String]) {
    let got = samples(out, kind);
    for n in needles {
        assert!(got.iter().any(|s| s.contains(n.as_str())), "{kind}.samples {got:?} lacks {n:?}");
    }
}

/// One example of everything `check` looks for.
struct Scene {
    hs: Homeserver,
    s3: S3,
    known: Vec<Media>,
    offloaded: Media,
    not_lost: Vec<Media>,
    lost: Vec<Media>,
    /// Media ids whose thumbnail rows have no media row (local, remote).
    orphan_row_ids: (String, String),
    orphan_thumb_files: Media,
    unknown_files: Vec<Media>,
    unknown_objects: Vec<String>,
    not_media_file: String,
    not_media_object: String,
    foreign_object: String,
}

fn scene(mut hs: Homeserver) -> Scene {
    let s3 = S3::new();
    let mut known: Vec<Media> = (0..10).map(|_| Media::local(&hs.new_id()).with_thumbs()).collect();
    known.extend((0..3).map(|_| Media::remote(ORIGIN, &hs.new_id(), &hs.new_id()).with_thumbs()));
    let offloaded = Media::local(&hs.new_id()).with_thumbs();
    // Rows that have no bytes on purpose: not lost.
    let not_lost = vec![
        Media::local(&hs.new_id()).pending(),
        Media::local(&hs.new_id()).url_cache("https://example.org/").no_original(),
    ];
    let lost =
        vec![Media::local(&hs.new_id()).no_original(), Media::remote(ORIGIN, &hs.new_id(), &hs.new_id()).no_original()];
    hs.add_all(known.iter().chain([&offloaded]).chain(&not_lost).chain(&lost).cloned().collect());
    hs.update_db("0s");
    hs.upload(&s3, &["--prefix", PREFIX]).ok();
    for rel in offloaded.rel_paths() {
        hs.remove(&rel);
    }

    // 1. Thumbnail rows (2 local, 1 remote) and files without media rows.
    let orphan_row_ids = (hs.new_id(), hs.new_id());
    hs.sql(&format!(
        "INSERT INTO local_media_repository_thumbnails (media_id, thumbnail_width, thumbnail_height, \
         thumbnail_type, thumbnail_method, thumbnail_length) VALUES ('{l}', 32, 32, 'image/png', 'crop', 300), \
         ('{l}', 640, 480, 'image/jpeg', 'scale', 2500);
         INSERT INTO remote_media_cache_thumbnails (media_origin, media_id, thumbnail_width, thumbnail_height, \
         thumbnail_method, thumbnail_type, thumbnail_length, filesystem_id) VALUES ('{ORIGIN}', '{r}', 32, 32, \
         'crop', 'image/png', 300, '{r}');",
        l = orphan_row_ids.0,
        r = orphan_row_ids.1
    ));
    let orphan_thumb_files = hs.add(Media::local(&hs.new_id()).no_original().with_thumbs().files_only());
    // 2. Files no row knows.
    let unknown_files = hs.add_all(vec![
        Media::local(&hs.new_id()).size(1234).files_only(),
        Media::remote(ORIGIN, &hs.new_id(), &hs.new_id()).size(4321).files_only(),
    ]);
    // 4. Objects no row knows.
    let unknown_objects = vec![
        format!("{PREFIX}{}", Media::local(&hs.new_id()).original_rel()),
        format!("{PREFIX}{}/32-32-image-png-crop", Media::remote(ORIGIN, &hs.new_id(), &hs.new_id()).thumb_dir_rel()),
    ];
    for (i, k) in unknown_objects.iter().enumerate() {
        s3.put(k, &content_for(k, 100 + i), &[]);
    }
    // Not Synapse's layout: left alone. Another prefix: not looked at.
    let not_media_file = "local_content/README.txt".to_string();
    std::fs::write(hs.path_of(&not_media_file), "notes").unwrap();
    let not_media_object = format!("{PREFIX}notes.txt");
    s3.put(&not_media_object, b"notes", &[]);
    let foreign_object = format!("other/{}", Media::local(&hs.new_id()).original_rel());
    s3.put(&foreign_object, b"someone else's", &[]);
    Scene {
        hs,
        s3,
        known,
        offloaded,
        not_lost,
        lost,
        orphan_row_ids,
        orphan_thumb_files,
        unknown_files,
        unknown_objects,
        not_media_file,
        not_media_object,
        foreign_object,
    }
}

impl Scene {
    fn check(&self, extra: &[&str]) -> Out {
        let mut args = vec!["--json", "--no-progress", "check", "--grace-period", "0s"];
        args.extend_from_slice(extra);
        self.hs.mo_store(&self.s3, PREFIX, &args)
    }

    fn orphan_row_count(&self) -> usize {
        self.hs
            .texts(&format!(
                "SELECT media_id FROM local_media_repository_thumbnails WHERE media_id = '{}' \
                 UNION ALL SELECT media_id FROM remote_media_cache_thumbnails WHERE media_id = '{}'",
                self.orphan_row_ids.0, self.orphan_row_ids.1
            ))
            .len()
    }

    /// Everything that is not an orphan is as it was.
    fn assert_known_intact(&self) {
        let dest = Dest::S3(&self.s3);
        for m in &self.known {
            self.hs.assert_copied(m, &dest, PREFIX);
        }
        self.hs.assert_offloaded(&self.offloaded, &dest, PREFIX);
        for m in self.lost.iter().chain(&self.not_lost).chain(&self.known).chain([&self.offloaded]) {
            assert!(self.hs.has_row(m), "check must never delete a media row ({})", m.media_id);
        }
        assert!(self.hs.exists(&self.not_media_file));
        assert!(self.s3.get(&self.not_media_object).is_some());
        assert!(self.s3.get(&self.foreign_object).is_some());
    }
}

fn check_finds_counts_samples_and_fixes_each_kind(hs: Homeserver) {
    let sc = scene(hs);
    let hs = &sc.hs;
    let rows = (sc.known.len() + 1 + sc.not_lost.len() + sc.lost.len()) as i64;
    let files = hs.local_files().len() as i64;
    let objects = sc.s3.keys().iter().filter(|k| k.starts_with(PREFIX)).count() as i64;

    let out = sc.check(&[]).status(4);
    out.no_panic();
    assert_eq!(out.j("rows"), rows, "{}", out.describe());
    assert_eq!(out.j("files"), files);
    assert_eq!(out.j("objects"), objects);
    assert_eq!(out.jn("orphan_thumbnail_rows.count"), 3);
    assert_sampled(
        &out,
        "orphan_thumbnail_rows",
        &[
            format!("mxc://{SERVER_NAME}/{}: 2 thumbnail rows", sc.orphan_row_ids.0),
            format!("mxc://{ORIGIN}/{}: 1 thumbnail rows", sc.orphan_row_ids.1),
        ],
    );
    let thumb_files = sc.orphan_thumb_files.rel_paths();
    assert_eq!(out.jn("orphan_thumbnail_files.count"), thumb_files.len() as i64);
    assert_eq!(out.jn("orphan_thumbnail_files.bytes"), sc.orphan_thumb_files.total_bytes() as i64);
    assert_sampled(&out, "orphan_thumbnail_files", &thumb_files);
    assert_eq!(out.jn("unknown_files.count"), 2);
    assert_eq!(out.jn("unknown_files.bytes"), 1234 + 4321);
    let unknown_rels: Vec<String> = sc.unknown_files.iter().map(|m| m.original_rel()).collect();
    assert_sampled(&out, "unknown_files", &unknown_rels);
    assert_eq!(out.jn("lost_media.count"), 2);
    assert_sampled(
        &out,
        "lost_media",
        &[format!("mxc://{SERVER_NAME}/{}", sc.lost[0].media_id), format!("mxc://{ORIGIN}/{}", sc.lost[1].media_id)],
    );
    assert_eq!(out.jn("unknown_objects.count"), 2);
    assert_eq!(out.jn("unknown_objects.bytes"), 100 + 101);
    assert_sampled(&out, "unknown_objects", &sc.unknown_objects);
    assert_eq!(out.jn("not_media_files.count"), 1);
    assert_eq!(out.jn("not_media_objects.count"), 1);
    assert_sampled(&out, "not_media_objects", std::slice::from_ref(&sc.not_media_object));
    assert_eq!(out.j("young"), 0);
    assert_eq!(out.json()["fix_refused"], serde_json::json!([]));
    for kind in ["orphan_thumbnail_rows", "orphan_thumbnail_files", "unknown_files", "unknown_objects"] {
        assert_eq!(out.jn(&format!("{kind}.fixed")), 0, "without --fix nothing is fixed");
    }
    assert_eq!(sc.orphan_row_count(), 3, "check without --fix changed the database");
    sc.assert_known_intact();
    for m in sc.unknown_files.iter().chain([&sc.orphan_thumb_files]) {
        hs.assert_local_intact(m);
    }

    // The same in words, with the samples under each heading.
    let text = hs.mo_store(&sc.s3, PREFIX, &["--no-progress", "check", "--grace-period", "0s"]).status(4);
    for line in [
        "1. Thumbnail rows without media: 3".to_string(),
        format!("2. Thumbnail files without media: {}", thumb_files.len()),
        "3. Files no row knows: 2 (".to_string(),
        "4. Lost media (no bytes on disk or in the store): 2".to_string(),
        "5. Objects no row knows: 2 (".to_string(),
        format!("    {} (", unknown_rels[0]),
        format!("    mxc://{SERVER_NAME}/{}", sc.lost[0].media_id),
        format!("    {} (", sc.unknown_objects[0]),
        "Left alone: 1 file and 1 object that are not in Synapse's layout".to_string(),
    ] {
        assert!(text.stdout.lines().any(|l| l.starts_with(&line)), "no line {line:?}: {}", text.describe());
    }
    text.clean_error(4, &["inconsistencies"]);

    // --samples caps the examples, not the counts.
    let out = sc.check(&["--samples", "1"]).status(4);
    for kind in ["orphan_thumbnail_rows", "orphan_thumbnail_files", "unknown_files", "lost_media", "unknown_objects"] {
        assert_eq!(samples(&out, kind).len(), 1, "{kind}");
        assert!(out.jn(&format!("{kind}.count")) >= 2, "{kind}");
    }

    // --fix removes kinds 1, 2 and 4, never lost media: exit 4 while they remain.
    let out = sc.check(&["--fix"]).status(4);
    assert_eq!(out.jn("orphan_thumbnail_rows.fixed"), 3, "{}", out.describe());
    assert_eq!(out.jn("orphan_thumbnail_files.fixed"), thumb_files.len() as i64);
    assert_eq!(out.jn("unknown_files.fixed"), 2);
    assert_eq!(out.jn("unknown_objects.fixed"), 2);
    assert_eq!(out.jn("lost_media.count"), 2);
    assert_eq!(sc.orphan_row_count(), 0);
    for m in sc.unknown_files.iter().chain([&sc.orphan_thumb_files]) {
        hs.assert_local_gone(m);
    }
    for k in &sc.unknown_objects {
        assert!(sc.s3.get(k).is_none(), "{k} should be fixed away");
    }
    sc.assert_known_intact();

    let out = sc.check(&[]).status(4);
    for kind in ["orphan_thumbnail_rows", "orphan_thumbnail_files", "unknown_files", "unknown_objects"] {
        assert_eq!(out.jn(&format!("{kind}.count")), 0, "{kind}: {}", out.describe());
    }
    assert_eq!(out.jn("lost_media.count"), 2);

    // Once the lost rows are dealt with (by an admin), check is clean.
    for m in &sc.lost {
        let sql = match &m.origin {
            None => format!("DELETE FROM local_media_repository WHERE media_id = '{}'", m.media_id),
            Some(o) => {
                format!("DELETE FROM remote_media_cache WHERE media_origin = '{o}' AND media_id = '{}'", m.media_id)
            }
        };
        hs.sql(&sql);
    }
    // Their cache.db rows are now stale: reported, and removed by --fix.
    let out = sc.check(&[]).status(4);
    assert_eq!(out.jn("lost_media.count"), 0);
    assert_eq!(out.jn("stale_cache_rows.count"), 2, "{}", out.describe());
    assert_eq!(sc.check(&["--fix"]).ok().jn("stale_cache_rows.fixed"), 2);
    let out = sc.check(&[]).ok();
    assert_eq!(out.jn("stale_cache_rows.count"), 0);
    let text = hs.mo_store(&sc.s3, PREFIX, &["--no-progress", "check", "--grace-period", "0s"]).ok();
    assert!(!text.stderr.contains("error:"), "{}", text.describe());
}

on_sqlite_and_postgres!(check_on_sqlite, check_on_postgres, check_finds_counts_samples_and_fixes_each_kind);

#[test]
fn files_and_objects_younger_than_the_grace_period_are_left_alone_even_with_fix() {
    let mut hs = Homeserver::sqlite();
    let s3 = S3::new();
    let known = hs.add_all((0..4).map(|_| Media::local(&hs.new_id()).with_thumbs()).collect());
    hs.update_db("0s");
    hs.upload(&s3, &["--prefix", PREFIX]).ok();
    let young_file = hs.add(Media::local(&hs.new_id()).files_only().created_ms_ago(60_000));
    let old_file = hs.add(Media::local(&hs.new_id()).files_only());
    backdate(&hs, &old_file.original_rel(), Duration::from_secs(2 * 3600));
    // moto stamps objects with the time of the upload: young.
    let young_object = format!("{PREFIX}{}", Media::local(&hs.new_id()).original_rel());
    s3.put(&young_object, b"just uploaded", &[]);

    // check.grace_period from the config file: 3h covers the 2-hour-old file too.
    let cfg = hs.write_file("mo.yaml", "check:\n  grace_period: 3h\n");
    let out = hs.mo_store(&s3, PREFIX, &["--json", "--config", cfg.to_str().unwrap(), "check", "--fix"]).ok();
    assert_eq!(out.j("young"), 3, "{}", out.describe());
    assert_eq!(out.j("grace_period_secs"), 3 * 3600);
    assert_eq!(out.jn("unknown_files.count") + out.jn("unknown_objects.count"), 0);
    hs.assert_local_intact(&old_file);

    // The default (1h): the old file is reported and fixed, the young ones stay.
    let out = hs.mo_store(&s3, PREFIX, &["--json", "check", "--fix"]).ok();
    assert_eq!(out.j("grace_period_secs"), 3600);
    assert_eq!(out.j("young"), 2, "{}", out.describe());
    assert_eq!(out.jn("unknown_files.count"), 1);
    assert_eq!(out.jn("unknown_files.fixed"), 1);
    assert_eq!(out.jn("unknown_objects.count"), 0);
    hs.assert_local_gone(&old_file);
    hs.assert_local_intact(&young_file);
    assert!(s3.get(&young_object).is_some(), "a young object was deleted");
    for m in &known {
        hs.assert_copied(m, &Dest::S3(&s3), PREFIX);
    }
    let text = hs.mo_store(&s3, PREFIX, &["check"]).ok();
    assert!(text.stdout.contains("Left alone: 2 files and objects younger than 1h"), "{}", text.describe());
}

#[test]
fn fix_refuses_when_most_of_the_store_is_unknown_to_the_database() {
    // This homeserver's media and objects, checked against another
    // homeserver's database: everything looks unknown.
    let mut ours = Homeserver::sqlite();
    let s3 = S3::new();
    let media = ours.add_all((0..12).map(|_| Media::local(&ours.new_id())).collect());
    ours.update_db("0s");
    ours.upload(&s3, &["--prefix", PREFIX]).ok();
    let mut theirs = Homeserver::postgres();
    let their_media = theirs.add_all(vec![Media::local(&theirs.new_id()), Media::local(&theirs.new_id())]);
    let objects = s3.objects();
    let files = ours.local_files();

    let other_yaml = theirs.cwd().join("homeserver.yaml");
    let media_arg = ours.media_arg();
    let args = [
        "--no-progress",
        "check",
        "--fix",
        "--grace-period",
        "0s",
        "--homeserver-config-path",
        other_yaml.to_str().unwrap(),
        "--media-store-path",
        &media_arg,
    ];
    let out = ours.mo_store(&s3, PREFIX, &args);
    out.clean_error(3, &["not done"]);
    assert!(out.stdout.contains("Not fixed: 12 of 12 files are unknown to the database"), "{}", out.describe());
    assert!(out.stdout.contains("Not fixed: 12 of 12 objects are unknown to the database"), "{}", out.describe());
    assert_eq!(ours.local_files(), files, "refused, yet files were deleted");
    assert_eq!(s3.objects(), objects, "refused, yet objects were deleted");
    for m in &their_media {
        assert!(theirs.has_row(m));
    }

    let mut json_args = vec!["--json"];
    json_args.extend_from_slice(&args);
    let out = ours.mo_store(&s3, PREFIX, &json_args).status(3);
    assert_eq!(out.jn("unknown_files.count"), media.len() as i64);
    assert_eq!(out.jn("unknown_files.fixed"), 0);
    assert_eq!(out.jn("unknown_objects.fixed"), 0);
    assert_eq!(out.jn("lost_media.count"), 2, "their rows have no bytes here");
    assert_eq!(out.json()["fix_refused"].as_array().unwrap().len(), 2);
    assert_eq!(ours.local_files(), files);

    // --force overrides the guard (after an interrupted purge of most of a
    // store, the orphans really can outnumber the rest): here it removes
    // everything this database does not know, and says it is forcing.
    json_args.push("--force");
    let out = ours.mo_store(&s3, PREFIX, &json_args).status(4);
    assert!(out.stderr.contains("--force"), "{}", out.describe());
    assert_eq!(out.jn("unknown_files.fixed"), media.len() as i64);
    assert!(out.json()["fix_refused"].as_array().unwrap().is_empty());
    assert!(ours.local_files().is_empty());
}

#[test]
fn a_homeserver_offloaded_to_the_store_is_clean() {
    let mut hs = Homeserver::postgres();
    let s3 = S3::new();
    hs.add_all(vec![
        Media::local(&hs.new_id()).with_thumbs(),
        Media::remote(ORIGIN, &hs.new_id(), &hs.new_id()).with_thumbs(),
        Media::local(&hs.new_id()).pending(),
    ]);
    hs.update_db("0s");
    hs.upload(&s3, &["--prefix", PREFIX, "--delete"]).ok();
    // Everything lives in the store only; nothing is lost.
    let out = hs.mo_store(&s3, PREFIX, &["--json", "check", "--fix", "--grace-period", "0s"]).ok();
    assert_eq!(out.j("rows"), 3);
    assert_eq!(out.j("objects"), 6);
    assert_eq!(out.jn("lost_media.count"), 0);
    assert_eq!(s3.keys().len(), 6);
    let text = hs.mo_store(&s3, PREFIX, &["check", "--grace-period", "0s"]).ok();
    assert!(text.stdout.starts_with("Checked 3 media rows, 0 files, 6 objects"), "{}", text.describe());
}
