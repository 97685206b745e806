//! migrate: the daily job with its settings from homeserver.yaml's S3
//! provider section, overridden by the config file, the environment and
//! flags; secrets from the environment, systemd credentials or
//! homeserver.yaml and never printed; dry runs; the lock.

use crate::common::*;

const HS_KEY_ID: &str = "hs-key-id-0001";
const HS_SECRET: &str = "hs-secret-VALUE-0001";

/// No AWS credentials in the environment: they must come from elsewhere.
const NO_ENV_KEYS: [(&str, &str); 2] = [("AWS_ACCESS_KEY_ID", ""), ("AWS_SECRET_ACCESS_KEY", "")];

/// homeserver.yaml with an S3 provider for `s3` under `prefix`, with keys.
fn with_provider(hs: &Homeserver, s3: &S3, prefix: &str) {
    let mut config = s3.provider_config(prefix);
    config.push(pstr("access_key_id", HS_KEY_ID));
    config.push(pstr("secret_access_key", HS_SECRET));
    hs.write_homeserver_yaml_with(Some(SERVER_NAME), &s3_provider_yaml(&config));
}

/// A bucket named by homeserver.yaml's S3 provider (keys under `prefix`),
/// old media (offloaded by a 30-day migrate) and a young one (kept).
fn provider_scene(hs: &mut Homeserver, prefix: &str) -> (S3, Vec<Media>, Media) {
    let s3 = S3::new();
    with_provider(hs, &s3, prefix);
    let (old, young) = media(hs);
    (s3, old, young)
}

/// Old media (offloaded by a 30-day migrate) and a young one (kept).
fn media(hs: &mut Homeserver) -> (Vec<Media>, Media) {
    let old = hs.add_all(vec![
        Media::local(&hs.new_id()).with_thumbs(),
        Media::local(&hs.new_id()),
        Media::remote("remote.example", &hs.new_id(), &hs.new_id()).with_thumbs(),
    ]);
    let young = hs.add(Media::local(&hs.new_id()).created_days_ago(2));
    (old, young)
}

/// Where a provider setting comes from (homeserver.yaml is found in the
/// working directory).
fn yaml_source(key: &str) -> String {
    format!("homeserver.yaml: media_storage_providers[1].config.{key}")
}

fn file_count(ms: &[Media]) -> i64 {
    ms.iter().map(|m| m.rel_paths().len() as i64).sum()
}

#[track_caller]
fn assert_no_secret(out: &Out, secrets: &[&str]) {
    for s in secrets {
        assert!(
            !out.stderr.contains(s) && !out.stdout.contains(s),
            "output shows the secret {s:?}: {}",
            out.describe()
        );
    }
}

#[test]
fn migrate_takes_its_settings_from_homeserver_yaml_and_a_second_run_does_nothing() {
    let mut hs = Homeserver::postgres();
    let (s3, old, young) = provider_scene(&mut hs, "hs/");

    let out = hs.mo_env(&["-v", "--json", "--no-progress", "migrate"], &NO_ENV_KEYS).ok();
    let dest = Dest::S3(&s3);
    for m in &old {
        hs.assert_offloaded(m, &dest, "hs/");
    }
    hs.assert_local_intact(&young);
    let old_refs: Vec<&Media> = old.iter().collect();
    assert_eq!(s3.keys(), keys_of(&old_refs, "hs/"), "exactly the old media, under the provider's prefix");
    let v = out.json();
    assert_eq!(v["command"], "migrate");
    assert_eq!(v["dry_run"], false);
    assert_eq!(out.jn("update_db.new_rows"), 3);
    let files = file_count(&old);
    assert_eq!(out.jn("upload.uploaded_files"), files);
    assert_eq!(out.jn("upload.deleted_files"), files);
    assert_eq!(out.jn("upload.failed_files"), 0);
    for line in [
        format!("bucket = {:?} (from {})", s3.bucket, yaml_source("bucket")),
        format!("endpoint_url = {:?} (from {})", s3.endpoint, yaml_source("endpoint_url")),
        format!("prefix = \"hs/\" (from {})", yaml_source("prefix")),
        format!("access_key_id is set (from {})", yaml_source("access_key_id")),
        format!("secret_access_key is set (from {})", yaml_source("secret_access_key")),
        "duration = \"30d\" (from default)".to_string(),
    ] {
        out.stderr_line_with(&line);
    }
    assert_no_secret(&out, &[HS_KEY_ID, HS_SECRET]);
    for row in cache_rows(&hs.cache_db()) {
        assert!(row.known_deleted, "{row:?}");
    }

    // A second run finds nothing new and changes nothing.
    let objects = s3.objects();
    let files_now = hs.local_files();
    let out = hs.mo_env(&["--json", "--no-progress", "migrate"], &NO_ENV_KEYS).ok();
    assert_eq!(out.jn("update_db.new_rows"), 0);
    assert_eq!(out.jn("upload.uploaded_files"), 0);
    assert_eq!(out.jn("upload.deleted_files"), 0);
    assert_eq!(s3.objects(), objects);
    assert_eq!(hs.local_files(), files_now);

    // A dry run with work to do reports it and changes nothing, cache.db included.
    let newly_old = hs.add(Media::local(&hs.new_id()).with_thumbs());
    let cache = std::fs::read(hs.cache_db()).unwrap();
    let out = hs.mo_env(&["--json", "--no-progress", "migrate", "--dry-run"], &NO_ENV_KEYS).ok();
    assert_eq!(out.json()["dry_run"], true);
    assert_eq!(out.jn("update_db.new_rows"), 1, "{}", out.describe());
    assert_eq!(out.jn("upload.uploaded_files"), 3);
    assert_eq!(out.jn("upload.deleted_files"), 3);
    assert_eq!(std::fs::read(hs.cache_db()).unwrap(), cache, "a dry run wrote to cache.db");
    assert_eq!(s3.objects(), objects);
    hs.assert_local_intact(&newly_old);
}

#[test]
fn flags_beat_the_environment_beats_the_config_file_beats_homeserver_yaml() {
    let mut hs = Homeserver::sqlite();
    let (s3, old, young) = provider_scene(&mut hs, "hs/");
    let cfg = hs.write_file("mo.yaml", "prefix: file/\n");
    let cfg = cfg.to_str().unwrap();
    let env_prefix = ("MEDIA_OFFLOAD_PREFIX", "env/");
    let probe = old[0].original_rel();

    struct Case<'a> {
        config: &'a str,
        flags: &'a [&'a str],
        envs: &'a [(&'a str, &'a str)],
        source: String,
        prefix: &'a str,
    }
    let cases = [
        Case {
            config: cfg,
            flags: &["--prefix", "flag/"],
            envs: &[env_prefix],
            source: "(from --prefix)".into(),
            prefix: "flag/",
        },
        Case {
            config: cfg,
            flags: &[],
            envs: &[env_prefix],
            source: "(from environment MEDIA_OFFLOAD_PREFIX)".into(),
            prefix: "env/",
        },
        Case { config: cfg, flags: &[], envs: &[], source: format!("(from {cfg}: prefix)"), prefix: "file/" },
        Case {
            config: "/dev/null",
            flags: &[],
            envs: &[],
            source: format!("(from {})", yaml_source("prefix")),
            prefix: "hs/",
        },
    ];
    for c in cases {
        let mut args = vec!["-v", "--json", "--no-progress", "--config", c.config, "migrate", "--dry-run"];
        args.extend_from_slice(c.flags);
        let out = hs.mo_env(&args, c.envs).ok();
        out.stderr_line_with(&format!("prefix = {:?} {}", c.prefix, c.source));
        out.stderr_line_with(&format!("would upload {}{probe} (", c.prefix));
        assert_eq!(out.jn("upload.uploaded_files"), file_count(&old), "{}", out.describe());
    }
    // Dry runs: no cache.db, no object, every file in place.
    assert!(!hs.cache_db().exists(), "a dry run created cache.db");
    assert!(s3.keys().is_empty());
    for m in old.iter().chain([&young]) {
        hs.assert_local_intact(m);
    }

    // For real: the bucket from the environment, the prefix from the flag.
    let other = S3::new();
    let out = hs
        .mo_env(
            &["--json", "--no-progress", "--config", cfg, "migrate", "--prefix", "flag/"],
            &[("MEDIA_OFFLOAD_BUCKET", &other.bucket), env_prefix],
        )
        .ok();
    assert_eq!(out.jn("upload.uploaded_files"), file_count(&old));
    for m in &old {
        hs.assert_offloaded(m, &Dest::S3(&other), "flag/");
    }
    assert!(s3.keys().is_empty(), "homeserver.yaml's bucket was overridden");
}

#[test]
fn credentials_directory_secrets_are_used_after_the_environment_and_never_printed() {
    let mut hs = Homeserver::sqlite();
    let (s3, old, _) = provider_scene(&mut hs, "");
    let creds = hs.cwd().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("access_key_id"), "cred-key-id-0002\n").unwrap();
    std::fs::write(creds.join("secret_access_key"), "cred-secret-VALUE-0002\n").unwrap();
    let creds_dir = creds.to_str().unwrap();
    let secrets =
        [HS_KEY_ID, HS_SECRET, "cred-key-id-0002", "cred-secret-VALUE-0002", "env-key-id-0003", "env-secret-0003"];

    // Environment first.
    let out = hs
        .mo_env(
            &["-v", "--json", "migrate", "--dry-run"],
            &[
                ("CREDENTIALS_DIRECTORY", creds_dir),
                ("AWS_ACCESS_KEY_ID", "env-key-id-0003"),
                ("AWS_SECRET_ACCESS_KEY", "env-secret-0003"),
            ],
        )
        .ok();
    out.stderr_line_with("access_key_id is set (from environment AWS_ACCESS_KEY_ID)");
    out.stderr_line_with("secret_access_key is set (from environment AWS_SECRET_ACCESS_KEY)");
    assert_no_secret(&out, &secrets);

    // Then the credentials, ahead of homeserver.yaml.
    let envs = [NO_ENV_KEYS[0], NO_ENV_KEYS[1], ("CREDENTIALS_DIRECTORY", creds_dir)];
    let out = hs.mo_env(&["-v", "--json", "migrate"], &envs).ok();
    out.stderr_line_with(&format!("access_key_id is set (from credential {creds_dir}/access_key_id)"));
    out.stderr_line_with(&format!("secret_access_key is set (from credential {creds_dir}/secret_access_key)"));
    assert_no_secret(&out, &secrets);
    for m in &old {
        hs.assert_offloaded(m, &Dest::S3(&s3), "");
    }
}

#[test]
fn config_file_sets_duration_cache_db_concurrency_and_the_store() {
    let mut hs = Homeserver::sqlite();
    let s3 = S3::new();
    let (old, young) = media(&mut hs);
    std::fs::create_dir(hs.cwd().join("state")).unwrap();
    let cache = hs.cwd().join("state/mo-cache.db");
    let cfg = hs.write_file(
        "mo.yaml",
        &format!(
            "duration: 1d\ncache_db: {}\nconcurrency: 3\nbucket: {}\nendpoint_url: {}\nprefix: cfg/\n",
            cache.display(),
            s3.bucket,
            s3.endpoint
        ),
    );
    let cfg = cfg.to_str().unwrap();
    // The environment and the flag beat the config file's duration.
    let dry = hs
        .mo_env(&["-v", "--json", "--config", cfg, "migrate", "--dry-run"], &[("MEDIA_OFFLOAD_DURATION", "30d")])
        .ok();
    dry.stderr_line_with("duration = \"30d\" (from environment MEDIA_OFFLOAD_DURATION)");
    assert_eq!(dry.jn("upload.uploaded_files"), file_count(&old), "{}", dry.describe());
    let dry = hs
        .mo_env(
            &["-v", "--json", "--config", cfg, "migrate", "--dry-run", "--duration", "2y"],
            &[("MEDIA_OFFLOAD_DURATION", "30d")],
        )
        .ok();
    dry.stderr_line_with("(from --duration)");
    assert_eq!(dry.jn("upload.uploaded_files"), 0, "{}", dry.describe());
    assert!(!cache.exists(), "a dry run created cache.db");

    let out = hs.mo(&["-v", "--json", "--no-progress", "--config", cfg, "migrate"]).ok();
    out.stderr_line_with(&format!("duration = \"1d\" (from {cfg}: duration)"));
    out.stderr_line_with(&format!("concurrency = \"3\" (from {cfg}: concurrency)"));
    out.stderr_line_with(&format!("bucket = {:?} (from {cfg}: bucket)", s3.bucket));
    // 1d, not the default 30d: the two-day-old media goes too.
    for m in old.iter().chain([&young]) {
        hs.assert_offloaded(m, &Dest::S3(&s3), "cfg/");
    }
    assert_eq!(cache_rows(&cache).len(), 4);
    assert!(!hs.cache_db().exists(), "cache_db from the config file was not used");

    // MEDIA_OFFLOAD_CONFIG names the file too; --cache-db beats its cache_db.
    let elsewhere = hs.cwd().join("elsewhere.db");
    let out = hs
        .mo_env(&["--json", "--cache-db", elsewhere.to_str().unwrap(), "migrate"], &[("MEDIA_OFFLOAD_CONFIG", cfg)])
        .ok();
    assert_eq!(out.jn("update_db.new_rows"), 4);
    assert_eq!(out.jn("upload.uploaded_files"), 0);
    assert_eq!(cache_rows(&elsewhere).len(), 4);
}

#[test]
fn config_file_errors_name_the_key_and_never_echo_a_secret() {
    let mut hs = Homeserver::sqlite();
    let s3 = S3::new();
    let (old, _) = media(&mut hs);
    for (text, needles) in [
        ("bukket: x\n", &["mo.yaml", "bukket"][..]),
        ("purge:\n  remote_older_thn: 1d\n", &["mo.yaml", "remote_older_thn"][..]),
        ("secret_access_key: Very-Secret-In-File\n", &["mo.yaml", "secret_access_key"][..]),
        ("access_key_id: Key-Id-In-File\n", &["mo.yaml", "access_key_id"][..]),
    ] {
        let cfg = hs.write_file("mo.yaml", text);
        let out = hs.mo_store(&s3, "", &["--config", cfg.to_str().unwrap(), "migrate"]);
        out.clean_error(1, needles);
        assert_no_secret(&out, &["Very-Secret-In-File", "Key-Id-In-File"]);
    }
    // No bucket anywhere.
    let out = hs.mo(&["migrate"]);
    out.clean_error(1, &["no object store"]);
    assert!(!hs.cache_db().exists());
    assert!(s3.keys().is_empty());
    for m in &old {
        hs.assert_local_intact(m);
    }
}

#[test]
fn a_held_lock_exits_75_and_changes_nothing() {
    let mut hs = Homeserver::sqlite();
    let (s3, old, _) = provider_scene(&mut hs, "");
    let lock = std::fs::File::create(hs.cwd().join("cache.db.lock")).unwrap();
    lock.try_lock().unwrap();
    let out = hs.mo(&["migrate"]);
    out.clean_error(75, &["lock"]);
    assert!(s3.keys().is_empty());
    for m in &old {
        hs.assert_local_intact(m);
    }
    drop(lock);
    hs.mo(&["--json", "migrate"]).ok();
    for m in &old {
        hs.assert_offloaded(m, &Dest::S3(&s3), "");
    }
}
