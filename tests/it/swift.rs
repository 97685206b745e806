//! OpenStack Swift through the binary, against the single-node Swift of
//! `scripts/test-services.sh` (TempAuth): offload with delete, SLO sizes,
//! what an existing object must prove, conflicts, purge and check, a token
//! that expires mid-run, and `swift_media_upload`'s command lines.

use std::time::Duration;

use crate::common::*;

const MIB: usize = 1024 * 1024;
/// Files above this go up as SLOs in the tests (the cluster's own maximum
/// is Swift's 5 GiB).
const SEGMENT: &str = "1M";

impl Homeserver {
    /// `media-offload --json --no-progress upload MEDIA CONTAINER --swift EXTRA...`
    /// logged in with ST_AUTH/ST_USER/ST_KEY.
    fn upload_swift(&self, sw: &Swift, extra: &[&str]) -> Out {
        let media = self.media_arg();
        let mut args: Vec<&str> = vec!["--json", "--no-progress", "upload", &media, &sw.container, "--swift"];
        args.extend_from_slice(extra);
        self.mo_env(&args, &env_refs(&sw.env()))
    }

    /// ARGS (migrate, purge or check and its flags) with `--swift --container C`.
    fn mo_swift(&self, sw: &Swift, args: &[&str]) -> Out {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--swift", "--container", &sw.container]);
        self.mo_env(&all, &env_refs(&sw.env()))
    }
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// No secret of the test Swift in what a run printed.
#[track_caller]
fn assert_no_secrets(out: &Out) {
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(!all.contains("AUTH_tk"), "a token was printed: {}", out.describe());
    assert!(!all.contains(&format!("key {}", test_env().swift_key)), "the key was printed: {}", out.describe());
}

#[test]
fn swift_upload_delete_offloads_small_files_and_slos_then_reruns_change_nothing() {
    let mut hs = Homeserver::sqlite();
    let sw = Swift::new();
    let media = hs.add_all(vec![
        Media::local(&hs.new_id()).size(4321).with_thumbs(),
        Media::remote("remote.example:8448", &hs.new_id(), &hs.new_id()).size(999).with_thumbs(),
        // 2.5 segments: an SLO of three.
        Media::local(&hs.new_id()).size(5 * MIB / 2),
    ]);
    hs.update_db("0s");
    let out = hs.upload_swift(&sw, &["--delete", "--swift-segment-size", SEGMENT, "-v"]).ok();
    assert_no_secrets(&out);
    let dest = Dest::Swift(&sw);
    for m in &media {
        hs.assert_offloaded(m, &dest, "");
    }
    let refs: Vec<&Media> = media.iter().collect();
    assert_eq!(sw.keys(), keys_of(&refs, ""), "objects named by Synapse's relative paths, no segment among them");
    let big = media[2].original_rel();
    let head = sw.head(&big).unwrap();
    assert_eq!(head.get("x-static-large-object").map(String::as_str), Some("True"), "{head:?}");
    assert_eq!(head.get("x-object-meta-mo-md5"), Some(&md5_hex(hs.content(&big))));
    assert_eq!(sw.segments().keys().len(), 3, "three segments");
    let files = refs.iter().map(|m| m.rel_paths().len()).sum::<usize>() as i64;
    assert_eq!(out.j("deleted_files"), files);
    assert_eq!(out.jn("deleted_by.part_etags"), 1, "the SLO: proven by its segments");
    assert_eq!(out.jn("deleted_by.etag"), files - 1);

    // Everything is offloaded: a second run has nothing to do.
    let again = hs.upload_swift(&sw, &["--delete", "--swift-segment-size", SEGMENT]).ok();
    assert_eq!(again.j("uploaded_files"), 0);
    assert_eq!(again.j("deleted_files"), 0);
}

#[test]
fn swift_existing_objects_are_proven_or_kept_as_conflicts() {
    let mut hs = Homeserver::sqlite();
    let sw = Swift::new();
    let same = hs.add(Media::local(&hs.new_id()).size(3000));
    let differs = hs.add(Media::local(&hs.new_id()).size(3000));
    let slo = hs.add(Media::local(&hs.new_id()).size(3 * MIB / 2));
    let slo_tampered = hs.add(Media::local(&hs.new_id()).size(3 * MIB / 2));
    hs.update_db("0s");
    // A first run copies everything (no delete).
    hs.upload_swift(&sw, &["--swift-segment-size", SEGMENT]).ok();
    // Then the store changes under it: another tool writes different bytes
    // of the same size, and a segment of an SLO is replaced.
    let key = differs.original_rel();
    let mut other = hs.content(&key).to_vec();
    other[7] ^= 1;
    sw.put(&key, &other);
    let segments = sw.segments();
    let tampered_prefix = format!("{}/slo/", slo_tampered.original_rel());
    let seg = segments.keys().into_iter().find(|k| k.starts_with(&tampered_prefix)).unwrap();
    let mut bytes = segments.get(&seg).unwrap();
    bytes[0] ^= 1;
    segments.put(&seg, &bytes);

    let out = hs.upload_swift(&sw, &["--delete", "--swift-segment-size", SEGMENT]).status(3);
    hs.assert_offloaded(&same, &Dest::Swift(&sw), "");
    hs.assert_offloaded(&slo, &Dest::Swift(&sw), "");
    hs.assert_local_intact(&differs);
    hs.assert_local_intact(&slo_tampered);
    assert_eq!(sw.get(&key).unwrap(), other, "the differing object is not overwritten");
    assert_eq!(out.j("conflicts"), 2, "{}", out.describe());
    assert_eq!(out.jn("deleted_by.etag"), 1);
    assert_eq!(out.jn("deleted_by.part_etags"), 1);

    // With --overwrite-mismatched the local files replace both objects,
    // and the replaced SLO's old segments go.
    let out = hs.upload_swift(&sw, &["--delete", "--overwrite-mismatched", "--swift-segment-size", SEGMENT]).ok();
    assert_eq!(out.j("deleted_files"), 2);
    assert_eq!(segments.keys().len(), 4, "two SLOs of two segments each: {:?}", segments.keys());
    assert_eq!(sw.get(&slo_tampered.original_rel()).unwrap().len(), 3 * MIB / 2);
}

/// Swift honours `If-None-Match: *`: after the run's first small upload
/// (which finds that out) new objects go up without a HEAD, and a
/// conditional PUT refused because an object is there leads to the same
/// rules as a HEAD would: the same bytes count as present, other bytes are
/// a conflict that keeps both (exit 3).
#[test]
fn swift_conditional_puts_keep_the_conflict_rules() {
    let mut hs = Homeserver::sqlite();
    let sw = Swift::new();
    // Uploaded first (its cache.db rows come first): the probe.
    let fresh = hs.add_all((0..2).map(|_| Media::local(&hs.new_id()).size(2000)).collect());
    hs.update_db("0s");
    let same = hs.add(Media::local(&hs.new_id()).size(3000));
    let differs = hs.add(Media::local(&hs.new_id()).size(3000));
    let after = hs.add(Media::local(&hs.new_id()).size(1000));
    hs.update_db("0s");
    sw.put(&same.original_rel(), hs.content(&same.original_rel()));
    let key = differs.original_rel();
    let mut other = hs.content(&key).to_vec();
    other[11] ^= 1;
    sw.put(&key, &other);

    let out = hs.upload_swift(&sw, &["--delete", "--concurrency", "1", "-v"]).status(3);
    assert_no_secrets(&out);
    let probe = out.stderr.find("refuses a PUT over an existing object with If-None-Match");
    let conflict = out.stderr.find(&key);
    assert!(probe.is_some() && probe < conflict, "the probe comes first, then the conflict: {}", out.describe());
    for m in fresh.iter().chain([&same, &after]) {
        hs.assert_offloaded(m, &Dest::Swift(&sw), "");
    }
    hs.assert_local_intact(&differs);
    assert_eq!(sw.get(&key).unwrap(), other, "the differing object is not overwritten");
    assert_eq!(out.j("conflicts"), 1, "{}", out.describe());
    assert_eq!(out.j("already_present_files"), 1);
    assert_eq!(out.j("uploaded_files"), 3);
    assert_eq!(out.jn("deleted_by.etag"), 4);
}

#[test]
fn swift_purge_removes_objects_with_their_slo_segments_and_check_finds_orphans() {
    let mut hs = Homeserver::postgres();
    let sw = Swift::new();
    let old = hs.add(Media::remote("remote.example", &hs.new_id(), &hs.new_id()).size(3 * MIB / 2).with_thumbs());
    let kept = hs.add(Media::remote("remote.example", &hs.new_id(), &hs.new_id()).accessed_days_ago(1).size(5000));
    hs.update_db("0s");
    hs.upload_swift(&sw, &["--delete", "--swift-segment-size", SEGMENT]).ok();
    assert_eq!(sw.segments().keys().len(), 2);

    // An object no row knows, and one the old swift_media_upload named by
    // its absolute local path.
    sw.put("remote_content/remote.example/zz/yy/orphanorphanorphan", b"orphan");
    let absolute = format!("{}/{}", hs.media.display(), kept.original_rel());
    sw.put(&absolute, hs.content(&kept.original_rel()));
    let out = hs.mo_swift(&sw, &["--json", "--no-progress", "check", "--grace-period", "0s"]).status(4);
    assert_eq!(out.jn("unknown_objects.count"), 1, "segments are never orphans: {}", out.describe());
    assert_eq!(out.jn("absolute_named_objects.count"), 1);
    let text = hs.mo_swift(&sw, &["--no-progress", "check", "--grace-period", "0s"]).status(4);
    assert!(text.stdout.contains("swift copy --destination"), "{}", text.describe());

    let out = hs.mo_swift(&sw, &["--json", "--no-progress", "purge", "--remote-older-than", "30d"]).ok();
    assert_no_secrets(&out);
    for key in old.rel_paths() {
        assert!(sw.get(&key).is_none(), "{key} should be purged");
    }
    assert_eq!(sw.segments().keys(), Vec::<String>::new(), "the SLO's segments are purged with it");
    assert!(sw.get(&kept.original_rel()).is_some());
}

#[test]
fn swift_token_expiring_mid_run_is_renewed() {
    let mut hs = Homeserver::sqlite();
    let sw = Swift::new();
    let media = hs.add_all((0..3).map(|_| Media::local(&hs.new_id()).size(2000)).collect());
    hs.update_db("0s");
    let env = test_env();
    let media_arg = hs.media_arg();
    let args = [
        "--json",
        "--no-progress",
        "-v",
        "upload",
        &media_arg,
        &sw.container,
        "--swift",
        "--delete",
        "--concurrency",
        "1",
    ];
    // Through the proxy whose tokens live a few seconds; paused after the
    // first upload for longer than that.
    let paused = Paused::start_env(
        &args,
        hs.cwd(),
        "after-put",
        &[("ST_AUTH", &env.swift_short_auth), ("ST_USER", &env.swift_short_user), ("ST_KEY", &env.swift_short_key)],
    );
    std::thread::sleep(Duration::from_secs(env.swift_short_token_life + 1));
    let out = paused.resume().ok();
    assert_eq!(out.j("deleted_files"), 3, "{}", out.describe());
    out.stderr_line_with("the token was refused; logging in again");
    assert_no_secrets(&out);
    for m in &media {
        hs.assert_offloaded(m, &Dest::Swift(&sw), "");
    }
}

#[test]
fn swift_media_upload_takes_the_scripts_command_lines_and_clouds_yaml() {
    let mut hs = Homeserver::sqlite();
    let sw = Swift::new();
    let media = hs.add_all(vec![Media::local(&hs.new_id()).with_thumbs(), Media::local(&hs.new_id())]);
    let env = test_env();
    hs.write_file(
        "clouds.yaml",
        &format!(
            "clouds:\n  test:\n    auth_type: v1password\n    auth:\n      auth_url: {}\n      username: {}\n",
            env.swift_auth, env.swift_user
        ),
    );
    // The password where openstacksdk keeps it apart.
    hs.write_file("secure.yaml", &format!("clouds:\n  test:\n    auth:\n      password: {}\n", env.swift_key));
    let link = hs.cwd().join("swift_media_upload");
    std::os::unix::fs::symlink(bin(), &link).unwrap();
    let script = link.to_str().unwrap();
    let media_arg = hs.media_arg();
    let c = sw.container.as_str();
    let run = |args: &[&str]| run_program(script, args, hs.cwd(), &[]);
    run(&["--cloud", "test", "--container", c, "update", &media_arg, "0d"]).ok();
    let out = run(&["--cloud", "test", "--container", c, "upload", &media_arg, c, "--delete"]).ok();
    assert_no_secrets(&out);
    for m in &media {
        hs.assert_offloaded(m, &Dest::Swift(&sw), "");
    }

    // Wrong credentials stop the run at once, saying so without the key.
    hs.add(Media::local(&hs.new_id()));
    hs.update_db("0s");
    let wrong = "wrong-key-value";
    let out = run_program(
        bin(),
        &["upload", &media_arg, c, "--swift", "--delete"],
        hs.cwd(),
        &[("ST_AUTH", &env.swift_auth), ("ST_USER", &env.swift_user), ("ST_KEY", wrong)],
    )
    .status(1);
    assert!(out.stderr.contains("refused"), "{}", out.describe());
    assert!(!out.stderr.contains(wrong), "{}", out.describe());
}

#[test]
fn swift_provider_in_homeserver_yaml_drives_migrate() {
    let mut hs = Homeserver::sqlite();
    let sw = Swift::new();
    let m = hs.add(Media::local(&hs.new_id()).with_thumbs());
    let env = test_env();
    hs.write_file(
        "clouds.yaml",
        &format!(
            "clouds:\n  prod:\n    auth_type: v1password\n    auth:\n      auth_url: {}\n      username: {}\n      password: {}\n",
            env.swift_auth, env.swift_user, env.swift_key
        ),
    );
    hs.write_homeserver_yaml_with(
        None,
        &format!(
            "media_storage_providers:\n- module: swift_storage_provider.SwiftStorageProviderBackend\n  store_local: true\n  \
             config:\n    cloud: prod\n    container: {}\n    region_name: RegionOne\n",
            sw.container
        ),
    );
    let out = hs.mo(&["--json", "--no-progress", "migrate", "--duration", "0d", "--settle-time", "0s"]).ok();
    assert_eq!(out.jn("upload.deleted_files"), m.rel_paths().len() as i64, "{}", out.describe());
    hs.assert_offloaded(&m, &Dest::Swift(&sw), "");
}

/// Keystone v3: a password scoped to a project from clouds.yaml (with the
/// region the Swift provider names), and an application credential from
/// an openrc's OS_* variables; the object-store endpoint from the catalog.
#[test]
fn swift_behind_keystone_with_a_password_and_an_application_credential() {
    let mut hs = Homeserver::sqlite();
    let sw = Swift::new_keystone();
    let env = test_env();
    let first = hs.add(Media::local(&hs.new_id()).with_thumbs());
    hs.write_file(
        "clouds.yaml",
        &format!(
            "clouds:\n  ks:\n    auth:\n      auth_url: {}\n      username: mo-user\n      password: mo-user-pass\n      \
             project_name: media\n      user_domain_name: Default\n      project_domain_id: default\n",
            env.keystone_url.trim_end_matches("/v3")
        ),
    );
    hs.write_homeserver_yaml_with(
        None,
        &format!(
            "media_storage_providers:\n- module: swift_storage_provider.SwiftStorageProviderBackend\n  config:\n    \
             cloud: ks\n    container: {}\n    region_name: RegionOne\n",
            sw.container
        ),
    );
    let out = hs.mo(&["--json", "--no-progress", "migrate", "--duration", "0d", "--settle-time", "0s"]).ok();
    assert_no_secrets(&out);
    assert!(!out.stderr.contains("mo-user-pass"), "{}", out.describe());
    hs.assert_offloaded(&first, &Dest::Swift(&sw), "");

    // Used after the first run's cut-off, so update-db selects it.
    let second = hs.add(Media::local(&hs.new_id()).created_ms_ago(1));
    hs.update_db("0s");
    let media_arg = hs.media_arg();
    let out = hs
        .mo_env(
            &[
                "--json",
                "--no-progress",
                "upload",
                &media_arg,
                &sw.container,
                "--swift",
                "--delete",
                "--settle-time",
                "0s",
            ],
            &[
                ("OS_AUTH_URL", &env.keystone_url),
                ("OS_AUTH_TYPE", "v3applicationcredential"),
                ("OS_APPLICATION_CREDENTIAL_ID", &env.keystone_app_id),
                ("OS_APPLICATION_CREDENTIAL_SECRET", &env.keystone_app_secret),
                ("OS_REGION_NAME", "RegionOne"),
            ],
        )
        .ok();
    assert!(!out.stderr.contains(&env.keystone_app_secret), "{}", out.describe());
    hs.assert_offloaded(&second, &Dest::Swift(&sw), "");
}

/// `delete_many`, which purge is to use: S3's DeleteObjects in batches of
/// 1,000 with the Content-MD5 that call requires (s3s-fs refuses it
/// without), and Swift's bulk delete, SLOs with their segments.
#[test]
fn delete_many_batches_on_s3_and_swift() {
    use media_offload::config::Secret;
    use media_offload::store::swift::{SwiftAuth, SwiftSettings};
    use media_offload::store::{LocalData, StoreSettings, open};

    let media_dir = tempfile::tempdir().unwrap();
    let settings = |bucket: &str, endpoint: Option<&str>, swift: Option<SwiftSettings>| StoreSettings {
        bucket: bucket.to_owned(),
        endpoint_url: endpoint.map(str::to_owned),
        region: None,
        storage_class: "STANDARD".into(),
        prefix: String::new(),
        sse_key: None,
        sse_algorithm: "AES256".into(),
        credentials: None,
        swift,
    };

    let s3 = S3::new_s3s();
    let keys: Vec<String> = (0..1003).map(|i| format!("local_content/aa/bb/k{i:04}")).collect();
    for k in &keys {
        s3.put(k, b"x", &[]);
    }
    let store = open(&settings(&s3.bucket, Some(&s3.endpoint), None), media_dir.path()).unwrap();
    let mut refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    refs.push("local_content/aa/bb/never-there");
    let failed = store.delete_many(&refs);
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(s3.keys(), Vec::<String>::new());

    let sw = Swift::new();
    let env = test_env();
    let auth = SwiftAuth::V1 {
        auth_url: env.swift_auth.clone(),
        user: env.swift_user.clone(),
        key: Secret(env.swift_key.clone()),
    };
    let swift = SwiftSettings { auth, segment_size: Some(1000), source: "test".into() };
    let store = open(&settings(&sw.container, None, Some(swift)), media_dir.path()).unwrap();
    let big = content_for("slo", 2500);
    let part = store.part_size(big.len() as u64);
    assert_eq!(part, Some(1000));
    store.put("local_content/aa/bb/slo", &LocalData::from_bytes(big.clone(), part)).unwrap();
    for k in ["local_content/aa/bb/one", "remote_content/m.org/aa/bb/two w"] {
        store.put(k, &LocalData::from_bytes(b"plain".to_vec(), None)).unwrap();
    }
    assert_eq!(sw.get("local_content/aa/bb/slo"), Some(big));
    assert_eq!(sw.segments().keys().len(), 3);
    let failed = store.delete_many(&[
        "local_content/aa/bb/one",
        "remote_content/m.org/aa/bb/two w",
        "local_content/aa/bb/slo",
        "local_content/aa/bb/missing",
    ]);
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(sw.keys(), Vec::<String>::new());
    assert_eq!(sw.segments().keys(), Vec::<String>::new());
}
