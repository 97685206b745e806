//! The clap definition: the command line as `s3_media_upload` 1.7.0 spells
//! it, plus our additions.
//!
//! This file is also compiled on its own by `build.rs`, to render the man
//! page and the completions for the package: it may use nothing of the
//! crate but the value parsers in `duration` and `size` and
//! `store::STORAGE_CLASSES` (build.rs stands in for them).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::duration::{parse_duration, parse_short_duration};
use crate::size::parse_size;

pub use crate::store::STORAGE_CLASSES;

const GLOBAL: &str = "Global options";
const WHERE: &str = "Homeserver and store";

/// Offload a Matrix homeserver's media store to S3-compatible object storage,
/// deleting local copies only once the stored copy is proven identical.
///
/// A drop-in replacement for `s3_media_upload` (synapse-s3-storage-provider):
/// same subcommands, same flags, same cache.db.
#[derive(Debug, Parser)]
#[command(name = "media-offload", version, max_term_width = 100)]
pub struct Cli {
    /// Do not show progress bars (plain periodic log lines instead).
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub no_progress: bool,

    /// The state file shared with s3_media_upload [default: cache_db from
    /// --config, else ./cache.db].
    #[arg(long, global = true, env = "MEDIA_OFFLOAD_CACHE_DB", value_name = "PATH", help_heading = GLOBAL)]
    pub cache_db: Option<PathBuf>,

    /// media-offload's own YAML config file (see docs/operations.md); keys it
    /// leaves out come from homeserver.yaml.
    #[arg(long, global = true, env = "MEDIA_OFFLOAD_CONFIG", value_name = "PATH", help_heading = GLOBAL)]
    pub config: Option<PathBuf>,

    /// If another run holds the lock, wait for it instead of exiting with code 75.
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub wait: bool,

    /// Print the end-of-run summary as one JSON object on stdout.
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,

    /// More log output (-v: debug, -vv: trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = GLOBAL)]
    pub verbose: u8,

    /// Less output (-q: warnings, errors and summaries that say something;
    /// a run that did nothing prints nothing. -qq: errors only).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "verbose", help_heading = GLOBAL)]
    pub quiet: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sync rows from the homeserver database into cache.db.
    UpdateDb(UpdateDbArgs),
    /// Check whether media in cache.db still exist under BASE_PATH.
    CheckDeleted(CheckDeletedArgs),
    /// update-db followed by check-deleted.
    Update(UpdateArgs),
    /// Print the paths of media that may still exist locally.
    Write(WriteArgs),
    /// Upload media to the object store; with --delete, remove local copies
    /// once the stored copy is proven identical.
    Upload(UploadArgs),
    /// The daily job: update-db, check-deleted and upload --delete in one
    /// locked run, with settings from homeserver.yaml.
    Migrate(MigrateArgs),
    /// Remove media past a retention period from the database, the disk and
    /// the object store (never avatars, quarantined or protected media).
    Purge(PurgeArgs),
    /// Find inconsistencies between the database, the disk and the store;
    /// with --fix, remove the orphans.
    Check(CheckArgs),
    /// Copy the media between stores (S3, Swift, a directory, the media
    /// store itself), driven by the homeserver database, verified, resumable.
    Copy(CopyArgs),
    /// Generate a demo homeserver (SQLite + media store) and offload it to a local directory.
    Demo(DemoArgs),
    /// Print a shell completion script.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}

#[derive(Debug, Args)]
pub struct DbSelection {
    /// Select media not accessed for this long: a number and s, h, d, m (30 days) or y (365 days).
    #[arg(value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Duration,

    /// The homeserver config to read the database settings from (unless
    /// ./database.yaml exists). Repeat it for several files or folders of
    /// *.yaml files, as Synapse's --config-path; a file alone brings the
    /// conf.d/ folder beside it.
    #[arg(long, default_value = "homeserver.yaml", value_name = "PATH", action = clap::ArgAction::Append)]
    pub homeserver_config_path: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UpdateDbArgs {
    #[command(flatten)]
    pub selection: DbSelection,
}

#[derive(Debug, Args)]
pub struct CheckDeletedArgs {
    /// Base path of the media store directory.
    pub base_path: PathBuf,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Base path of the media store directory.
    pub base_path: PathBuf,
    #[command(flatten)]
    pub selection: DbSelection,
}

#[derive(Debug, Args)]
pub struct WriteArgs {
    /// File to write the list to, or '-' for stdout.
    #[arg(default_value = "-", value_name = "OUT")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// Base path of the media store directory.
    pub base_path: PathBuf,

    /// The S3 bucket's name. A value starting with /, ./, ../ or file://
    /// (e.g. /srv/archive, file:///srv/archive) is a local directory with the
    /// media store's layout instead; any other value with a / or a scheme
    /// (s3://bucket, bucket/prefix) is refused: give the name alone, and
    /// --prefix and --endpoint-url. With --swift, a Swift container.
    #[arg(value_name = "BUCKET|CONTAINER")]
    pub bucket: String,

    #[command(flatten)]
    pub swift: SwiftArgs,

    /// Prefix of the object keys (prepended as-is, like the storage provider does).
    #[arg(long, default_value = "")]
    pub prefix: String,

    /// S3 storage class for new objects.
    #[arg(long, default_value = "STANDARD", num_args = 0..=1, default_missing_value = "STANDARD",
          value_parser = clap::builder::PossibleValuesParser::new(STORAGE_CLASSES))]
    pub storage_class: String,

    /// SSE-C key (visible in the process list: prefer --sse-customer-key-file
    /// or the MEDIA_OFFLOAD_SSE_CUSTOMER_KEY environment variable).
    #[arg(long, value_name = "KEY")]
    pub sse_customer_key: Option<String>,

    /// Read the SSE-C key from this file (trailing newline ignored).
    #[arg(long, value_name = "PATH", conflicts_with = "sse_customer_key")]
    pub sse_customer_key_file: Option<PathBuf>,

    /// Algorithm for SSE-C, only used if a key is given.
    #[arg(long, default_value = "AES256", value_name = "ALGO")]
    pub sse_customer_algo: String,

    /// Delete the local copy once the stored copy is proven identical.
    #[arg(long)]
    pub delete: bool,

    /// S3 endpoint URL, with http:// or https:// (path-style addressing is used with it).
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,

    /// How many media to process at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=512))]
    pub concurrency: u16,

    /// Leave files modified less than this long ago (being written, or
    /// being fetched back by Synapse) for the next run: s, min, h or d.
    #[arg(long, value_parser = parse_short_duration, default_value = "10min", value_name = "DURATION")]
    pub settle_time: Duration,

    /// Replace an existing object that differs from the local file with the
    /// local file. Without it both are kept and reported (exit 3): without
    /// the homeserver's record nothing tells which copy is right, and
    /// Synapse writes fetched-back files in place, so a local file can be
    /// truncated. `migrate` decides from that record instead.
    #[arg(long)]
    pub overwrite_mismatched: bool,

    /// Allow --delete with GLACIER or DEEP_ARCHIVE, whose objects Synapse
    /// cannot read back without a restore.
    #[arg(long)]
    pub allow_archive_storage_class: bool,

    /// Show what would be uploaded and deleted; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// OpenStack Swift instead of S3. Credentials as python-swiftclient takes
/// them (ST_AUTH, ST_USER, ST_KEY) or from clouds.yaml (see docs/operations.md).
#[derive(Debug, Args, Default, Clone)]
pub struct SwiftArgs {
    /// The store is an OpenStack Swift container, not an S3 bucket.
    #[arg(long)]
    pub swift: bool,

    /// Log in to Swift as this cloud of clouds.yaml says (implies --swift)
    /// [default: OS_CLOUD, else ST_AUTH/ST_USER/ST_KEY].
    #[arg(long, value_name = "NAME")]
    pub swift_cloud: Option<String>,

    /// Upload files larger than this as Swift Static Large Objects in
    /// segments of this size: bytes, or e.g. 100M, 1GiB [default: only
    /// above the cluster's maximum object size].
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub swift_segment_size: Option<u64>,
}

/// Where the homeserver, its media and the object store are. Unset values
/// come from the environment (MEDIA_OFFLOAD_<NAME>), the --config file, and
/// homeserver.yaml (media_store_path and the S3 storage provider's config),
/// in that order. Secrets never go on the command line: see
/// docs/operations.md.
#[derive(Debug, Args, Default, Clone)]
#[command(next_help_heading = WHERE)]
pub struct StoreLocation {
    /// The homeserver config [default: homeserver.yaml]. Repeat it for
    /// several files or folders of *.yaml files, as Synapse's
    /// --config-path; a file alone brings the conf.d/ folder beside it.
    #[arg(long, value_name = "PATH", action = clap::ArgAction::Append)]
    pub homeserver_config_path: Option<Vec<PathBuf>>,

    /// The media store directory [default: media_store_path in homeserver.yaml].
    #[arg(long, value_name = "PATH")]
    pub media_store_path: Option<PathBuf>,

    /// The S3 bucket's name, or a local directory store (/path, ./path,
    /// ../path or file:///path); with --swift, the Swift container.
    #[arg(long, visible_alias = "container")]
    pub bucket: Option<String>,

    #[command(flatten)]
    pub swift: SwiftArgs,

    /// S3 endpoint URL, with http:// or https:// (path-style addressing is used with it).
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,

    /// S3 region.
    #[arg(long)]
    pub region: Option<String>,

    /// Prefix of the object keys.
    #[arg(long)]
    pub prefix: Option<String>,
}

/// A Dendrite homeserver instead of Synapse (`purge` and `check`).
#[derive(Debug, Args, Default, Clone)]
#[command(next_help_heading = WHERE)]
pub struct DendriteLocation {
    /// Work on a Dendrite homeserver: its dendrite.yaml gives the media
    /// folder (media_api.base_path), the media database and the databases
    /// holding avatars. Dendrite reads no object store, so no store options.
    #[arg(long, env = "MEDIA_OFFLOAD_DENDRITE_CONFIG", value_name = "PATH")]
    pub dendrite_config: Option<PathBuf>,

    /// The folder Dendrite runs in: relative paths in dendrite.yaml
    /// (base_path, file: databases) start there, as Dendrite resolves them.
    #[arg(long, env = "MEDIA_OFFLOAD_DENDRITE_WORKING_DIR", value_name = "PATH")]
    pub dendrite_working_dir: Option<PathBuf>,
}

/// How new objects are written (`migrate` only).
#[derive(Debug, Args, Default, Clone)]
#[command(next_help_heading = WHERE)]
pub struct UploadSettings {
    /// S3 storage class for new objects [default: STANDARD].
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(STORAGE_CLASSES))]
    pub storage_class: Option<String>,

    /// Read the SSE-C key from this file.
    #[arg(long, value_name = "PATH")]
    pub sse_customer_key_file: Option<PathBuf>,

    /// Algorithm for SSE-C [default: AES256].
    #[arg(long, value_name = "ALGO")]
    pub sse_customer_algo: Option<String>,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Offload media not accessed for this long [default: duration from
    /// --config, else 30d].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,

    /// Show what would be uploaded and deleted; change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Leave files modified less than this long ago for the next run: s,
    /// min, h or d [default: settle_time from --config, else 10min].
    #[arg(long, value_parser = parse_short_duration, value_name = "DURATION")]
    pub settle_time: Option<Duration>,

    /// Allow GLACIER or DEEP_ARCHIVE, whose objects Synapse cannot read
    /// back without a restore.
    #[arg(long)]
    pub allow_archive_storage_class: bool,

    /// How many media to process at once [default: 16].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=512))]
    pub concurrency: Option<u16>,

    #[command(flatten)]
    pub location: StoreLocation,

    #[command(flatten)]
    pub upload: UploadSettings,
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Purge cached remote media not accessed for this long. Without any
    /// duration flag, the policy is the --config purge section, else
    /// media_retention from homeserver.yaml.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub remote_older_than: Option<Duration>,

    /// Also purge local media not accessed for this long (never avatars,
    /// quarantined, protected or pending media).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub local_older_than: Option<Duration>,

    /// Only local media larger than this: bytes, or e.g. 10M, 100MiB, 1G.
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub size_gt: Option<u64>,

    /// List every row, file and object that would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Purge even when the database does not look like the live one (its
    /// newest activity is much older than files in the media store).
    #[arg(long)]
    pub force: bool,

    /// How many media to delete at once [default: 16].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=512))]
    pub concurrency: Option<u16>,

    #[command(flatten)]
    pub location: StoreLocation,

    #[command(flatten)]
    pub dendrite: DendriteLocation,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Remove orphans: thumbnails without media, unknown files and unknown
    /// objects older than the grace period. Lost media are only reported.
    #[arg(long)]
    pub fix: bool,

    /// With --fix: remove the orphans even when most of what check sees is
    /// unknown (e.g. after a purge of most of the store was interrupted), or
    /// the database does not look like the live one. Make sure the
    /// database, media store and prefix are the right ones.
    #[arg(long, requires = "fix")]
    pub force: bool,

    /// Ignore files and objects younger than this (Synapse writes a file
    /// before its row) [default: check.grace_period from --config, else 1h].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub grace_period: Option<Duration>,

    /// How many examples of each finding to print.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub samples: usize,

    #[command(flatten)]
    pub location: StoreLocation,

    #[command(flatten)]
    pub dendrite: DendriteLocation,
}

/// `--from` and `--to`: media-store (the live media store), store (the
/// store the homeserver is configured with), a directory (/path, ./path,
/// file:///path), s3:BUCKET or swift:CONTAINER. S3 keys per side come from
/// --from-credentials-file / --to-credentials-file (YAML: access_key_id,
/// secret_access_key), else MEDIA_OFFLOAD_FROM_ACCESS_KEY_ID and
/// MEDIA_OFFLOAD_FROM_SECRET_ACCESS_KEY (TO likewise), else the AWS chain.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Where the media are now.
    #[arg(long, value_name = "SIDE")]
    pub from: String,

    /// Where they go.
    #[arg(long, value_name = "SIDE")]
    pub to: String,

    /// S3 endpoint URL of the source.
    #[arg(long, value_name = "URL")]
    pub from_endpoint_url: Option<String>,
    /// S3 region of the source.
    #[arg(long, value_name = "REGION")]
    pub from_region: Option<String>,
    /// Key prefix at the source (prepended as-is).
    #[arg(long, value_name = "PREFIX")]
    pub from_prefix: Option<String>,
    /// The source's SSE-C key, from this file.
    #[arg(long, value_name = "PATH")]
    pub from_sse_customer_key_file: Option<PathBuf>,
    /// The source's S3 keys, from this YAML file (mode 0600).
    #[arg(long, value_name = "PATH")]
    pub from_credentials_file: Option<PathBuf>,
    /// The source's Swift login: this cloud of clouds.yaml [default: OS_CLOUD, else ST_AUTH/ST_USER/ST_KEY].
    #[arg(long, value_name = "NAME")]
    pub from_swift_cloud: Option<String>,

    /// S3 endpoint URL of the destination.
    #[arg(long, value_name = "URL")]
    pub to_endpoint_url: Option<String>,
    /// S3 region of the destination.
    #[arg(long, value_name = "REGION")]
    pub to_region: Option<String>,
    /// Key prefix at the destination (prepended as-is).
    #[arg(long, value_name = "PREFIX")]
    pub to_prefix: Option<String>,
    /// The destination's SSE-C key, from this file.
    #[arg(long, value_name = "PATH")]
    pub to_sse_customer_key_file: Option<PathBuf>,
    /// The destination's S3 keys, from this YAML file (mode 0600).
    #[arg(long, value_name = "PATH")]
    pub to_credentials_file: Option<PathBuf>,
    /// The destination's Swift login: this cloud of clouds.yaml.
    #[arg(long, value_name = "NAME")]
    pub to_swift_cloud: Option<String>,
    /// S3 storage class of the new objects [default: STANDARD].
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(STORAGE_CLASSES))]
    pub to_storage_class: Option<String>,

    /// The copy's state file [default: copy-state.db beside cache.db]: what
    /// is verified at the destination, so a rerun copies only the rest.
    #[arg(long, value_name = "PATH")]
    pub state: Option<PathBuf>,

    /// Copy every object listed at the source, not only what the homeserver
    /// database names.
    #[arg(long)]
    pub all_objects: bool,

    /// Delete each source object once its copy is verified.
    #[arg(long)]
    pub delete_source: bool,

    /// Replace a destination object that differs from the source (without
    /// it: kept, reported, exit 3).
    #[arg(long)]
    pub overwrite_mismatched: bool,

    /// Show what would be copied; change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// How many keys to copy at once [default: 16].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=512))]
    pub concurrency: Option<u16>,

    /// The homeserver config [default: homeserver.yaml]; repeatable.
    #[arg(long, value_name = "PATH", action = clap::ArgAction::Append, help_heading = WHERE)]
    pub homeserver_config_path: Option<Vec<PathBuf>>,

    /// The media store directory [default: media_store_path in homeserver.yaml].
    #[arg(long, value_name = "PATH", help_heading = WHERE)]
    pub media_store_path: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to create the demo homeserver (must not exist yet, or be an earlier demo).
    #[arg(long, default_value = "media-offload-demo", value_name = "DIR")]
    pub dir: PathBuf,

    /// How many media to generate.
    #[arg(long, default_value_t = 2000)]
    pub files: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn accepts_the_python_tools_command_lines() {
        let lines: &[&[&str]] = &[
            &["x", "--no-progress", "update-db", "2m"],
            &["x", "update-db", "0d", "--homeserver-config-path", "/etc/synapse/homeserver.yaml"],
            &["x", "check-deleted", "/var/lib/synapse/media"],
            &["x", "update", "/media", "1y", "--homeserver-config-path", "hs.yaml"],
            &["x", "write"],
            &["x", "write", "-"],
            &["x", "write", "out.txt"],
            &[
                "x",
                "upload",
                "/media",
                "bucket",
                "--delete",
                "--storage-class",
                "STANDARD_IA",
                "--endpoint-url",
                "https://s3.example",
                "--prefix",
                "media/",
                "--sse-customer-key",
                "k",
                "--sse-customer-algo",
                "AES256",
            ],
            &["x", "--no-progress", "upload", "/media", "bucket", "--storage-class"],
            &["x", "--config", "c.yaml", "migrate"],
            &["x", "migrate", "--duration", "30d", "--bucket", "b", "--concurrency", "4", "--dry-run"],
            &["x", "purge", "--remote-older-than", "30d", "--local-older-than", "1y", "--size-gt", "1000"],
            &["x", "purge", "--local-older-than", "1y", "--size-gt", "10M"],
            &["x", "check", "--fix", "--grace-period", "2h", "--json"],
            &["x", "upload", "/media", "container", "--delete", "--swift", "--swift-cloud", "c"],
            &["x", "check", "--swift", "--container", "media", "--swift-segment-size", "1G"],
            &["x", "purge", "--dendrite-config", "/etc/dendrite/dendrite.yaml", "--remote-older-than", "30d"],
            &["x", "check", "--dendrite-config", "d.yaml", "--dendrite-working-dir", "/var/lib/dendrite", "--fix"],
            &[
                "x",
                "copy",
                "--from",
                "store",
                "--to",
                "s3:new",
                "--to-endpoint-url",
                "https://s3.example",
                "--to-prefix",
                "m/",
            ],
            &["x", "copy", "--from", "swift:media", "--to", "media-store", "--dry-run"],
        ];
        for line in lines {
            Cli::try_parse_from(*line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        }
    }

    #[test]
    fn subcommands_take_only_the_options_they_use() {
        for (line, unknown) in [
            (&["x", "check", "--storage-class", "STANDARD"][..], "--storage-class"),
            (&["x", "purge", "--sse-customer-key-file", "k"][..], "--sse-customer-key-file"),
            (&["x", "check", "--concurrency", "4"][..], "--concurrency"),
        ] {
            let err = Cli::try_parse_from(line).unwrap_err().to_string();
            assert!(err.contains(unknown), "{err}");
        }
    }

    #[test]
    fn rejects_an_invalid_duration_naming_it() {
        let err = Cli::try_parse_from(["x", "update-db", "5x"]).unwrap_err();
        assert!(err.to_string().contains("\"5x\""), "{err}");
    }
}
