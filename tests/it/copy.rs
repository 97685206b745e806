//! copy: what the homeserver's database names (or, with --all-objects,
//! everything listed) from one store to another - S3 to S3 across servers
//! with their own credentials and prefixes, S3 or Swift to S3 or a directory
//! store, the media store to S3 and a directory store back into the media
//! store - each object byte-identical at the destination; reruns that copy
//! nothing; kill -9 at each crash point; conflicts, missing sources, dry
//! runs, --delete-source, the state file's pair and its lock.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::common::*;

const MIB: usize = 1024 * 1024;

/// The command line of one `media-offload --json --no-progress copy` run.
#[derive(Clone)]
struct Copy {
    args: Vec<String>,
    envs: Vec<(String, String)>,
}

impl Copy {
    fn new() -> Copy {
        Copy { args: ["--json", "--no-progress", "copy"].map(String::from).to_vec(), envs: vec![] }
    }

    fn arg(mut self, a: &str) -> Copy {
        self.args.push(a.to_owned());
        self
    }

    fn args(mut self, a: &[&str]) -> Copy {
        self.args.extend(a.iter().map(|s| s.to_string()));
        self
    }

    fn env(mut self, k: &str, v: &str) -> Copy {
        self.envs.push((k.to_owned(), v.to_owned()));
        self
    }

    /// `--from SIDE` or `--to SIDE` (`x` is "from" or "to").
    fn side(self, x: &str, side: &str) -> Copy {
        self.args(&[&format!("--{x}"), side])
    }

    /// An S3 bucket on its server, keys under `prefix`.
    fn s3(self, x: &str, s3: &S3, prefix: &str) -> Copy {
        self.side(x, &format!("s3:{}", s3.bucket)).args(&[
            &format!("--{x}-endpoint-url"),
            &s3.endpoint,
            &format!("--{x}-region"),
            "us-east-1",
            &format!("--{x}-prefix"),
            prefix,
        ])
    }

    /// An S3 bucket reached with the keys in `credentials` (a file).
    fn s3_with(self, x: &str, s3: &S3, prefix: &str, credentials: &Path) -> Copy {
        self.s3(x, s3, prefix).args(&[&format!("--{x}-credentials-file"), credentials.to_str().unwrap()])
    }

    /// A Swift container, logged in with ST_AUTH/ST_USER/ST_KEY.
    fn swift(mut self, x: &str, sw: &Swift, prefix: &str) -> Copy {
        for (k, v) in sw.env() {
            self = self.env(k, &v);
        }
        self.side(x, &format!("swift:{}", sw.container)).args(&[&format!("--{x}-prefix"), prefix])
    }

    fn dir(self, x: &str, dir: &Path) -> Copy {
        self.side(x, dir.to_str().unwrap())
    }

    fn arg_refs(&self) -> Vec<&str> {
        self.args.iter().map(String::as_str).collect()
    }

    fn env_refs(&self) -> Vec<(&str, &str)> {
        self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    fn run(&self, hs: &Homeserver) -> Out {
        let out = hs.mo_env(&self.arg_refs(), &self.env_refs());
        out.no_panic();
        out
    }

    /// Runs it to be killed at `at` (see [`crashed_at`]).
    fn crashed_at(&self, hs: &Homeserver, at: &str) -> bool {
        let mut envs = self.env_refs();
        envs.push(("MEDIA_OFFLOAD_CRASH_AT", at));
        let out = run(&self.arg_refs(), hs.cwd(), &envs);
        if out.code.is_none() {
            return true;
        }
        assert_eq!(out.code, Some(0), "failed on its own before reaching {at}: {}", out.describe());
        false
    }

    fn paused_at(&self, hs: &Homeserver, point: &str) -> Paused {
        Paused::start_env(&self.arg_refs(), hs.cwd(), point, &self.env_refs())
    }
}

/// A credentials file (YAML, mode 0600) in the homeserver's folder.
fn credentials_file(hs: &Homeserver, name: &str, key_id: &str, secret: &str) -> PathBuf {
    let p = hs.write_file(name, &format!("access_key_id: {key_id}\nsecret_access_key: {secret}\n"));
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    p
}

/// A few media as Synapse has them: local and remote (an origin with a
/// port), originals and thumbnails, one URL preview (never copied; see
/// [`url_previews_are_left_out_with_their_thumbnails`]).
/// Returns the files the database names: relative path -> content.
fn media_scene(hs: &mut Homeserver) -> BTreeMap<String, Vec<u8>> {
    hs.add_all(vec![
        Media::local(&hs.new_id()).size(4321).with_thumbs(),
        Media::local(&hs.new_id()).size(77),
        Media::local(&hs.new_id()).size(0),
        Media::remote("remote.example:8448", &hs.new_id(), &hs.new_id()).size(999).with_thumbs(),
        Media::remote("other.example", &hs.new_id(), &hs.new_id()).size(5),
    ]);
    let named = hs.generated().clone();
    hs.add(Media::local(&hs.new_id()).url_cache("https://example.org/"));
    named
}

/// [`media_scene`]'s files at `prefix` in a bucket on moto, and another,
/// empty bucket there.
fn s3_scene(prefix: &str) -> (Homeserver, BTreeMap<String, Vec<u8>>, S3, S3) {
    let mut hs = Homeserver::sqlite();
    let files = media_scene(&mut hs);
    let src = S3::new();
    Dest::S3(&src).put_all(prefix, &files);
    (hs, files, src, S3::new())
}

/// With `prefix` before each relative path.
fn prefixed(prefix: &str, files: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    files.iter().map(|(k, v)| (format!("{prefix}{k}"), v.clone())).collect()
}

/// Asserts every file of `files` is at `dest` under `prefix`, byte-identical.
#[track_caller]
fn assert_arrived(dest: &Dest, prefix: &str, files: &BTreeMap<String, Vec<u8>>) {
    for (rel, data) in files {
        let key = format!("{prefix}{rel}");
        let got = dest.get(&key).unwrap_or_else(|| panic!("{key} did not arrive"));
        assert!(&got == data, "{key} arrived with {} bytes that differ from the source's {}", got.len(), data.len());
    }
}

/// Asserts the summary's counters (the rest of the fields must be there too).
#[track_caller]
fn assert_counts(out: &Out, want: &[(&str, i64)]) {
    let v = out.json();
    assert_eq!(v["command"], "copy", "{}", out.describe());
    for field in [
        "keys",
        "copied",
        "copied_bytes",
        "skipped_identical",
        "already_done",
        "conflicts",
        "missing_source",
        "failed",
        "source_deleted",
    ] {
        out.j(field);
    }
    for (field, n) in want {
        assert_eq!(out.j(field), *n, "{field}: {}", out.describe());
    }
}

fn total_bytes(files: &BTreeMap<String, Vec<u8>>) -> i64 {
    files.values().map(|v| v.len() as i64).sum()
}

/// No secret in what a run printed.
#[track_caller]
fn assert_not_printed(out: &Out, secrets: &[&str]) {
    for s in secrets {
        assert!(!out.stdout.contains(s) && !out.stderr.contains(s), "{s:?} was printed: {}", out.describe());
    }
}

/// Rows in every table of a state file (0 when there is no file).
fn state_rows(path: &Path) -> i64 {
    if !path.exists() {
        return 0;
    }
    let c = rusqlite::Connection::open(path).unwrap();
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    tables
        .iter()
        .map(|t| c.query_row(&format!("SELECT COUNT(*) FROM \"{t}\""), [], |r| r.get::<_, i64>(0)).unwrap())
        .sum()
}

/// Every file under `dir` with its modification time.
fn mtimes(dir: &Path) -> BTreeMap<String, std::time::SystemTime> {
    files_under(dir)
        .into_keys()
        .map(|k| (k.clone(), std::fs::metadata(dir.join(&k)).unwrap().modified().unwrap()))
        .collect()
}

// ------------------------------------------------------------- S3 to S3 ---

#[test]
fn s3_to_s3_across_two_servers_with_their_own_credentials_and_prefixes_then_a_rerun_copies_nothing() {
    let mut hs = Homeserver::sqlite();
    let mut files = media_scene(&mut hs);
    // Two files above the multipart threshold: streamed, sent in parts.
    let big = hs.add_all(vec![
        Media::local(&hs.new_id()).size(8 * MIB + 1),
        Media::remote("remote.example:8448", &hs.new_id(), &hs.new_id()).size(17 * MIB + 12345),
    ]);
    for m in &big {
        let rel = m.original_rel();
        files.insert(rel.clone(), hs.content(&rel).to_vec());
    }
    // The source: s3s-fs, which checks credentials (moto takes any).
    let src = S3::new_s3s();
    Dest::S3(&src).put_all("old/", hs.generated());
    let dst = S3::new();
    let from_secret = "testing";
    let to_secret = "moto-secret-Not-Printed-42";
    let from_creds = credentials_file(&hs, "from.yaml", "testing", from_secret);
    let to_creds = credentials_file(&hs, "to.yaml", "moto-key-id", to_secret);
    // The default credentials are wrong for s3s-fs: the file must be used.
    let copy = Copy::new()
        .s3_with("from", &src, "old/", &from_creds)
        .s3_with("to", &dst, "new/archive-", &to_creds)
        .env("AWS_ACCESS_KEY_ID", "not-the-key")
        .env("AWS_SECRET_ACCESS_KEY", "not-the-secret");
    let out = copy.run(&hs).ok();
    assert_not_printed(&out, &[to_secret, "not-the-secret"]);
    let n = files.len() as i64;
    assert_counts(
        &out,
        &[
            ("keys", n),
            ("copied", n),
            ("copied_bytes", total_bytes(&files)),
            ("skipped_identical", 0),
            ("already_done", 0),
            ("conflicts", 0),
            ("missing_source", 0),
            ("failed", 0),
            ("source_deleted", 0),
        ],
    );
    assert_eq!(out.json()["dry_run"], false);
    assert_eq!(
        dst.keys(),
        prefixed("new/archive-", &files).into_keys().collect::<Vec<_>>(),
        "exactly what the DB names"
    );
    assert_arrived(&Dest::S3(&dst), "new/archive-", &files);
    assert_arrived(&Dest::S3(&src), "old/", &files);
    let h = dst.head(&format!("new/archive-{}", big[1].original_rel())).unwrap();
    assert_eq!(h.size as usize, 17 * MIB + 12345);

    // The same pair and state file again: nothing to do.
    let before = dst.objects();
    let out = copy.run(&hs).ok();
    assert_counts(&out, &[("keys", n), ("already_done", n), ("copied", 0), ("copied_bytes", 0), ("conflicts", 0)]);
    assert!(dst.objects() == before, "the rerun changed the destination");

    // A new state file: every object is proven identical, none sent again.
    let out = copy.clone().args(&["--state", "fresh-state.db"]).run(&hs).ok();
    assert_counts(&out, &[("keys", n), ("skipped_identical", n), ("copied", 0), ("already_done", 0)]);
    assert!(dst.objects() == before);
}

// ----------------------------------------------------- other store kinds ---

#[test]
fn s3_to_directory_stores_writes_synapse_layout_with_nothing_else() {
    let mut hs = Homeserver::postgres();
    let files = media_scene(&mut hs);
    let src = S3::new();
    Dest::S3(&src).put_all("media/", hs.generated());
    for (side, dir) in [("path", hs.cwd().join("restore")), ("url", hs.cwd().join("restore-url"))] {
        std::fs::create_dir_all(&dir).unwrap();
        let to = if side == "url" { format!("file://{}", dir.display()) } else { dir.display().to_string() };
        // Each destination its own copy, with its own state file.
        let state = format!("state-{side}.db");
        let copy = Copy::new().s3("from", &src, "media/").side("to", &to).args(&["--state", &state]);
        let out = copy.run(&hs).ok();
        assert_counts(&out, &[("keys", files.len() as i64), ("copied", files.len() as i64), ("conflicts", 0)]);
        assert!(files_under(&dir) == files, "{to}: exactly the named files at their relative paths, no temp files");
        let out = copy.run(&hs).ok();
        assert_counts(&out, &[("copied", 0), ("already_done", files.len() as i64)]);
    }
}

#[test]
fn media_store_to_s3_copies_the_named_files_and_leaves_the_media_store_and_cache_alone() {
    let mut hs = Homeserver::sqlite();
    let files = media_scene(&mut hs);
    hs.update_db("30d");
    let cache = cache_dump(&hs.cache_db());
    let dst = S3::new();
    let out = Copy::new().side("from", "media-store").s3("to", &dst, "p/").run(&hs).ok();
    assert_counts(&out, &[("keys", files.len() as i64), ("copied", files.len() as i64), ("source_deleted", 0)]);
    assert_eq!(dst.keys(), prefixed("p/", &files).into_keys().collect::<Vec<_>>());
    assert_arrived(&Dest::S3(&dst), "p/", &files);
    assert!(hs.local_files() == *hs.generated(), "the media store is untouched");
    assert_eq!(cache_dump(&hs.cache_db()), cache, "cache.db is untouched");
}

#[test]
fn to_storage_class_sets_the_class_of_every_copied_object() {
    let mut hs = Homeserver::sqlite();
    let files = media_scene(&mut hs);
    let dst = S3::new();
    Copy::new()
        .side("from", "media-store")
        .s3("to", &dst, "")
        .args(&["--to-storage-class", "STANDARD_IA"])
        .run(&hs)
        .ok();
    for key in files.keys() {
        let h = dst.head(key).unwrap_or_else(|| panic!("{key} did not arrive"));
        assert_eq!(h.storage_class.as_deref(), Some("STANDARD_IA"), "{key}");
    }
}

#[test]
fn media_store_to_the_configured_store_uses_homeserver_yaml_s_provider() {
    let mut hs = Homeserver::sqlite();
    let files = media_scene(&mut hs);
    let dst = S3::new();
    let mut config = dst.provider_config("hs-prefix/");
    config.push(pstr("access_key_id", "hs-key-id"));
    config.push(pstr("secret_access_key", "hs-secret-In-Yaml-7"));
    hs.write_homeserver_yaml_with(Some(SERVER_NAME), &s3_provider_yaml(&config));
    let out = Copy::new().side("from", "media-store").side("to", "store").run(&hs).ok();
    assert_not_printed(&out, &["hs-secret-In-Yaml-7"]);
    assert_counts(&out, &[("copied", files.len() as i64)]);
    assert_eq!(dst.keys(), prefixed("hs-prefix/", &files).into_keys().collect::<Vec<_>>());
    assert_arrived(&Dest::S3(&dst), "hs-prefix/", &files);
}

#[test]
fn swift_to_s3_copies_every_named_object() {
    let mut hs = Homeserver::sqlite();
    let files = media_scene(&mut hs);
    let sw = Swift::new();
    Dest::Swift(&sw).put_all("synapse/", hs.generated());
    let dst = S3::new();
    let out = Copy::new().swift("from", &sw, "synapse/").s3("to", &dst, "").run(&hs).ok();
    assert_not_printed(&out, &["AUTH_tk", &format!("key {}", test_env().swift_key)]);
    assert_counts(&out, &[("keys", files.len() as i64), ("copied", files.len() as i64), ("missing_source", 0)]);
    assert_eq!(dst.keys(), files.keys().cloned().collect::<Vec<_>>());
    assert_arrived(&Dest::S3(&dst), "", &files);
}

#[test]
fn url_previews_are_left_out_with_their_thumbnails() {
    // URL previews are a cache Synapse refills: upload and migrate leave
    // them alone, and a copy does not carry thumbnails whose original it
    // leaves out.
    let mut hs = Homeserver::sqlite();
    let m = hs.add(Media::local(&hs.new_id()).with_thumbs());
    hs.add(Media::local(&hs.new_id()).url_cache("https://example.org/").with_thumbs());
    let dst = S3::new();
    let out = Copy::new().side("from", "media-store").s3("to", &dst, "").run(&hs).ok();
    assert_eq!(dst.keys(), keys_of(&[&m], ""), "{}", out.describe());
    assert_counts(&out, &[("keys", 3), ("copied", 3)]);
}

// ------------------------------------------------- back into the media store ---

#[test]
fn a_directory_store_restored_into_the_media_store_reopens_cache_rows_and_migrate_finds_it_all_there() {
    assert!(is_root(), "this test runs as root, as CI does");
    let mut hs = Homeserver::sqlite();
    let files = media_scene(&mut hs);
    hs.update_db("30d");
    let archive = hs.cwd().join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    // Offloaded to the directory store: files gone, rows known deleted.
    hs.upload_dir(&archive, &["--delete"]).ok();
    assert_eq!(hs.assert_nothing_lost(&Dest::Dir(archive.clone()), ""), files.len());
    let rows = cache_rows(&hs.cache_db());
    assert!(!rows.is_empty() && rows.iter().all(|r| r.known_deleted), "{rows:?}");
    // The media store belongs to the service user; one file came back already.
    let (uid, _) = owner();
    chown_tree(&hs.media, owner());
    let back = files.keys().next().unwrap().clone();
    hs.restore(&back);
    chown_tree(&hs.media, owner());

    let out = Copy::new().dir("from", &archive).side("to", "media-store").run(&hs).ok();
    let n = files.len() as i64;
    assert_counts(&out, &[("keys", n), ("copied", n - 1), ("skipped_identical", 1), ("conflicts", 0)]);
    // (The URL preview's files never left.)
    assert!(hs.local_files() == *hs.generated(), "every file back at its path, with its content, and no temp file");
    for rel in files.keys() {
        let mut p = hs.path_of(rel);
        while p != hs.media {
            assert_eq!(owned_by(&p), uid, "{} is not owned like the media store", p.display());
            p = p.parent().unwrap().to_path_buf();
        }
    }
    for row in cache_rows(&hs.cache_db()) {
        assert!(!row.known_deleted, "restored media must be present locally in cache.db: {row:?}");
    }

    // A later upload finds everything already in the store: nothing is sent
    // (--settle-time 0: as it would be days later, when the restored files
    // are no longer new).
    let archived = files_under(&archive);
    let written = mtimes(&archive);
    let out = hs.upload_dir(&archive, &["--settle-time", "0"]).ok();
    assert_eq!(out.j("uploaded_files"), 0, "{}", out.describe());
    assert_eq!(out.j("already_present_files"), n);
    assert!(files_under(&archive) == archived && mtimes(&archive) == written, "the store was written to");
    // And offloading again loses nothing.
    let out = hs.upload_dir(&archive, &["--delete", "--settle-time", "0"]).ok();
    assert_eq!(out.j("uploaded_files"), 0);
    assert_eq!(out.j("deleted_files"), n);
    assert_eq!(hs.assert_nothing_lost(&Dest::Dir(archive.clone()), ""), files.len());
}

// ------------------------------------------------------------- kill -9 ---

/// The safety invariant of a copy that may delete its source: every file
/// is still at the source or byte-identical at the destination.
#[track_caller]
fn assert_nowhere_lost(files: &BTreeMap<String, Vec<u8>>, src: &Dest, src_prefix: &str, dst: &Dest, dst_prefix: &str) {
    for (rel, data) in files {
        if src.get(&format!("{src_prefix}{rel}")).as_ref() == Some(data) {
            continue;
        }
        let got = dst.get(&format!("{dst_prefix}{rel}"));
        assert!(got.as_ref() == Some(data), "LOST DATA: {rel} left the source without an identical copy");
    }
}

/// A dozen media with thumbnails, offloaded already (no file left in the
/// media store, as when an admin leaves one object store for another);
/// their files (relative path -> content).
fn crash_scene() -> (Homeserver, BTreeMap<String, Vec<u8>>) {
    let mut hs = Homeserver::sqlite();
    hs.add_all((0..12).map(|i| Media::local(&hs.new_id()).size(1000 + i * 333).with_thumbs()).collect());
    let files = hs.generated().clone();
    for rel in files.keys() {
        hs.remove(rel);
    }
    (hs, files)
}

/// For each crash point, a fresh copy (a new source on moto, a new s3s-fs
/// destination, its own state file) killed at the point's first and fifth
/// occurrence; after each kill nothing is lost, and a rerun completes, after
/// which one more run does nothing.
fn kill_at_each_point_then_rerun(points: &[&str], extra: &[&str]) {
    let (hs, files) = crash_scene();
    let n = files.len() as i64;
    let creds = credentials_file(&hs, "to.yaml", "testing", "testing");
    for point in points {
        let (src, dst) = (S3::new(), S3::new_s3s());
        Dest::S3(&src).put_all("", &files);
        let state = format!("state-{point}.db");
        let copy = Copy::new().s3("from", &src, "").s3_with("to", &dst, "copy/", &creds).args(&["--state", &state]);
        // Wrong default credentials: s3s-fs must get the file's.
        let copy = copy.args(extra).env("AWS_ACCESS_KEY_ID", "not-the-key");
        let (s, d) = (Dest::S3(&src), Dest::S3(&dst));
        for k in [1, 5] {
            let at = format!("{point}:{k}");
            let killed = copy.crashed_at(&hs, &at);
            assert!(killed || k > 1, "{at} was not reached");
            assert_nowhere_lost(&files, &s, "", &d, "copy/");
        }
        let out = copy.run(&hs).ok();
        assert_eq!(out.j("keys"), n, "{point}: {}", out.describe());
        assert_eq!(out.j("conflicts") + out.j("failed") + out.j("missing_source"), 0, "{point}: {}", out.describe());
        assert_arrived(&d, "copy/", &files);
        if extra.contains(&"--delete-source") {
            assert!(src.keys().is_empty(), "{point}: every source object goes once its copy is verified");
        } else {
            assert!(src.objects() == files, "{point}: the source is untouched");
        }
        let out = copy.run(&hs).ok();
        assert_counts(&out, &[("keys", n), ("already_done", n), ("copied", 0), ("source_deleted", 0)]);
    }
}

#[test]
fn kill_9_at_each_crash_point_of_copy_then_a_rerun_completes() {
    kill_at_each_point_then_rerun(&["copy-after-put", "copy-after-verify", "copy-state-commit"], &[]);
}

#[test]
fn kill_9_at_each_crash_point_of_copy_delete_source_never_loses_an_object_and_a_rerun_completes() {
    kill_at_each_point_then_rerun(
        &["copy-after-put", "copy-after-verify", "copy-after-source-delete", "copy-state-commit"],
        &["--delete-source"],
    );
}

// ------------------------------------------------ conflicts and missing ---

#[test]
fn a_differing_destination_object_is_a_conflict_kept_unless_overwrite_mismatched() {
    let (hs, files, src, dst) = s3_scene("");
    let key = files.keys().find(|k| files[*k].len() > 100).unwrap().clone();
    let mut other = files[&key].clone();
    other[3] ^= 0x20;
    dst.put(&key, &other, &[]);
    let copy = Copy::new().s3("from", &src, "").s3("to", &dst, "");
    let n = files.len() as i64;
    let out = copy.run(&hs).status(3);
    assert_counts(&out, &[("keys", n), ("conflicts", 1), ("copied", n - 1)]);
    out.stderr_line_with(&key);
    assert_eq!(dst.get(&key).unwrap(), other, "a conflict is kept, not overwritten");
    let mut rest = files.clone();
    rest.remove(&key);
    assert_arrived(&Dest::S3(&dst), "", &rest);
    // Still a conflict on the next run: it was not recorded as done.
    let out = copy.run(&hs).status(3);
    assert_counts(&out, &[("conflicts", 1), ("copied", 0)]);
    assert_eq!(dst.get(&key).unwrap(), other);

    let out = copy.clone().arg("--overwrite-mismatched").run(&hs).ok();
    assert_counts(&out, &[("conflicts", 0), ("copied", 1)]);
    assert_arrived(&Dest::S3(&dst), "", &files);
}

#[test]
fn a_missing_source_object_is_reported_and_the_others_are_copied() {
    let mut hs = Homeserver::sqlite();
    let files = media_scene(&mut hs);
    let mut present = files.clone();
    // Gone from the source and from the media store: lost before the copy.
    let gone = present.keys().find(|k| k.contains("thumbnail")).unwrap().clone();
    present.remove(&gone);
    hs.remove(&gone);
    // Not at the source, but still in the media store (not offloaded yet):
    // nothing is lost, the offload will store it.
    let local = present.keys().find(|k| k.starts_with("remote_content/")).unwrap().clone();
    present.remove(&local);
    let src = S3::new();
    Dest::S3(&src).put_all("", &present);
    let dst = S3::new();
    let out = Copy::new().s3("from", &src, "").s3("to", &dst, "").run(&hs).status(3);
    let n = files.len() as i64;
    assert_counts(&out, &[("keys", n), ("missing_source", 1), ("local_only", 1), ("copied", n - 2), ("conflicts", 0)]);
    out.stderr_line_with(&gone);
    assert_eq!(dst.keys(), present.keys().cloned().collect::<Vec<_>>());
    assert_arrived(&Dest::S3(&dst), "", &present);
}

// --------------------------------------------- dry run and --delete-source ---

#[test]
fn a_dry_run_changes_nothing_and_writes_no_state() {
    let (hs, files, src, dst) = s3_scene("");
    let out = Copy::new().s3("from", &src, "").s3("to", &dst, "").args(&["--dry-run", "--delete-source"]).run(&hs).ok();
    assert_eq!(out.json()["dry_run"], true, "{}", out.describe());
    assert_eq!(out.j("keys"), files.len() as i64);
    assert!(dst.keys().is_empty(), "a dry run copied {:?}", dst.keys());
    assert!(src.objects() == files, "a dry run changed the source");
    assert_eq!(state_rows(&hs.cwd().join("copy-state.db")), 0, "a dry run wrote state");
}

#[test]
fn delete_source_removes_only_objects_whose_copy_is_verified() {
    let (hs, files, src, dst) = s3_scene("s/");
    let conflict = files.keys().find(|k| k.starts_with("remote_content/")).unwrap().clone();
    dst.put(&format!("d/{conflict}"), b"another tool's bytes", &[]);
    let out = Copy::new().s3("from", &src, "s/").s3("to", &dst, "d/").arg("--delete-source").run(&hs).status(3);
    let n = files.len() as i64;
    assert_counts(&out, &[("conflicts", 1), ("copied", n - 1), ("source_deleted", n - 1)]);
    assert_eq!(src.keys(), vec![format!("s/{conflict}")], "only the conflicting object stays at the source");
    assert_eq!(src.get(&format!("s/{conflict}")).unwrap(), files[&conflict]);
    let mut rest = files.clone();
    rest.remove(&conflict);
    assert_arrived(&Dest::S3(&dst), "d/", &rest);
}

#[test]
fn delete_source_is_refused_from_the_media_store() {
    let mut hs = Homeserver::sqlite();
    media_scene(&mut hs);
    hs.update_db("30d");
    let dst = S3::new();
    let out = Copy::new().side("from", "media-store").s3("to", &dst, "").arg("--delete-source").run(&hs);
    out.clean_error(1, &["--delete-source", "media-store"]);
    assert!(dst.keys().is_empty());
    assert!(hs.local_files() == *hs.generated());
}

// ------------------------------------------------- the state file ---

#[test]
fn a_state_file_refuses_another_pair_with_one_line_naming_it() {
    let (hs, files, src, a) = s3_scene("");
    let b = S3::new();
    let state = hs.cwd().join("pair-state.db");
    let st = state.to_str().unwrap();
    Copy::new().s3("from", &src, "").s3("to", &a, "").args(&["--state", st]).run(&hs).ok();
    let out = Copy::new().s3("from", &src, "").s3("to", &b, "").args(&["--state", st]).run(&hs);
    out.clean_error(1, &[st]);
    assert!(b.keys().is_empty(), "nothing copied to the other destination");
    // The same destination under another prefix is another pair too.
    let out = Copy::new().s3("from", &src, "").s3("to", &a, "elsewhere/").args(&["--state", st]).run(&hs);
    out.clean_error(1, &[st]);
    assert_eq!(a.keys(), files.keys().cloned().collect::<Vec<_>>());
}

#[test]
fn a_second_run_on_the_same_state_file_exits_75() {
    let (hs, files, src, dst) = s3_scene("");
    let copy = Copy::new().s3("from", &src, "").s3("to", &dst, "");
    let paused = copy.paused_at(&hs, "copy-after-put");
    let out = copy.run(&hs);
    out.clean_error(75, &["another media-offload run (pid "]);
    assert!(out.stdout.trim().is_empty(), "the refused run printed a summary: {}", out.describe());
    let out = paused.resume().ok();
    assert_eq!(out.j("copied"), files.len() as i64);
    assert_arrived(&Dest::S3(&dst), "", &files);
}

// ------------------------------------------------- --all-objects ---

#[test]
fn all_objects_copies_what_no_row_knows() {
    let (hs, files, src, dst) = s3_scene("src/");
    let orphans: BTreeMap<String, Vec<u8>> = [
        ("local_content/zz/yy/orphanorphanorphan", b"orphan".to_vec()),
        ("not-synapse-layout.txt", b"something an admin put there".to_vec()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Dest::S3(&src).put_all("src/", &orphans);
    // Outside the source's prefix: never listed.
    src.put("elsewhere/file", b"x", &[]);

    Copy::new().s3("from", &src, "src/").s3("to", &dst, "").run(&hs).ok();
    assert_eq!(dst.keys(), files.keys().cloned().collect::<Vec<_>>(), "without --all-objects: only the named ones");

    let out = Copy::new().s3("from", &src, "src/").s3("to", &dst, "").args(&["--all-objects", "--state", "all.db"]);
    let out = out.run(&hs).ok();
    let mut all = files.clone();
    all.extend(orphans);
    assert_counts(&out, &[("keys", all.len() as i64), ("copied", 2), ("skipped_identical", files.len() as i64)]);
    assert_eq!(dst.keys(), all.keys().cloned().collect::<Vec<_>>());
    assert_arrived(&Dest::S3(&dst), "", &all);
}

/// SSE-C on either side: objects encrypted with a customer key at the
/// source are read with `--from-sse-customer-key-file` (ranged reads of a
/// large one included) and arrive as plaintext; copied on with
/// `--to-sse-customer-key-file`, they are stored under that key, and a
/// second run proves them identical (the ETags of SSE-C objects prove
/// nothing: by reading). The key is never printed. (moto keeps SSE-C
/// objects readable without the key, so "stored encrypted" is not checked
/// here; the upload tests prove SSE-C on s3s-fs.)
#[test]
fn sse_c_keys_per_side_from_files() {
    let mut hs = Homeserver::sqlite();
    let mut files = media_scene(&mut hs);
    let big = hs.add(Media::local(&hs.new_id()).size(9 * MIB + 7));
    files.insert(big.original_rel(), hs.content(&big.original_rel()).to_vec());
    let key = "0123456789abcdef0123456789ABCDEF";
    let key_file = hs.write_file("sse.key", key);
    std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let key_arg = key_file.to_str().unwrap();
    let src = S3::new();
    for (rel, data) in &files {
        src.put_ssec(&format!("enc/{rel}"), data, key);
    }
    let plain = S3::new();
    let out = Copy::new()
        .s3("from", &src, "enc/")
        .args(&["--from-sse-customer-key-file", key_arg])
        .s3("to", &plain, "")
        .arg("--state")
        .arg("one.db")
        .run(&hs)
        .ok();
    assert_not_printed(&out, &[key]);
    assert_eq!(out.j("copied"), files.len() as i64, "{}", out.describe());
    assert_arrived(&Dest::S3(&plain), "", &files);

    let again = S3::new();
    let to_encrypted = |state: &str| {
        Copy::new()
            .s3("from", &plain, "")
            .s3("to", &again, "x/")
            .args(&["--to-sse-customer-key-file", key_arg])
            .args(&["--state", state])
    };
    let out = to_encrypted("two.db").run(&hs).ok();
    assert_eq!(out.j("copied"), files.len() as i64, "{}", out.describe());
    for (rel, data) in &files {
        let got = again.try_get(&format!("x/{rel}"), Some(key)).unwrap();
        assert!(&got == data, "{rel} differs under SSE-C");
    }
    // A fresh state file: every object compared by reading, all identical.
    let out = to_encrypted("three.db").run(&hs).ok();
    assert_eq!(out.j("skipped_identical"), files.len() as i64, "{}", out.describe());
    assert_eq!(out.j("copied"), 0);
}
