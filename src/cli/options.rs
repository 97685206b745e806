//! Each subcommand's arguments turned into the plain options struct its
//! command takes: clap's types stop in this module, so nothing below knows
//! how a setting was spelled on the command line.

use super::args::*;
use crate::commands::{check, copy, migrate, purge, update_db, upload};
use crate::config::copy::SideOptions;
use crate::config::dendrite::DendriteOptions;
use crate::config::settings::StoreOptions;

impl DbSelection {
    pub fn into_options(&self) -> update_db::Options {
        update_db::Options { duration: self.duration, homeserver_config_path: self.homeserver_config_path.clone() }
    }
}

impl UploadArgs {
    pub fn into_options(&self) -> upload::Options {
        upload::Options {
            base_path: self.base_path.clone(),
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
            storage_class: self.storage_class.clone(),
            sse_customer_key: self.sse_customer_key.clone(),
            sse_customer_key_file: self.sse_customer_key_file.clone(),
            sse_customer_algo: self.sse_customer_algo.clone(),
            delete: self.delete,
            endpoint_url: self.endpoint_url.clone(),
            concurrency: self.concurrency.into(),
            settle_time: self.settle_time,
            overwrite_mismatched: self.overwrite_mismatched,
            allow_archive_storage_class: self.allow_archive_storage_class,
            dry_run: self.dry_run,
            swift: self.swift.swift || self.swift.swift_cloud.is_some(),
            swift_cloud: self.swift.swift_cloud.clone(),
            swift_segment_size: self.swift.swift_segment_size,
        }
    }
}

impl StoreLocation {
    pub(super) fn options(&self, upload: Option<&UploadSettings>, concurrency: Option<u16>) -> StoreOptions {
        StoreOptions {
            homeserver_config_path: self.homeserver_config_path.clone(),
            media_store_path: self.media_store_path.clone(),
            bucket: self.bucket.clone(),
            endpoint_url: self.endpoint_url.clone(),
            region: self.region.clone(),
            prefix: self.prefix.clone(),
            storage_class: upload.and_then(|u| u.storage_class.clone()),
            sse_customer_key_file: upload.and_then(|u| u.sse_customer_key_file.clone()),
            sse_customer_algo: upload.and_then(|u| u.sse_customer_algo.clone()),
            concurrency,
            swift: self.swift.swift,
            swift_cloud: self.swift.swift_cloud.clone(),
            swift_segment_size: self.swift.swift_segment_size,
        }
    }
}

impl DendriteLocation {
    fn options(&self) -> DendriteOptions {
        DendriteOptions { config: self.dendrite_config.clone(), working_dir: self.dendrite_working_dir.clone() }
    }
}

impl MigrateArgs {
    pub fn into_options(&self) -> migrate::Options {
        migrate::Options {
            duration: self.duration,
            dry_run: self.dry_run,
            settle_time: self.settle_time,
            allow_archive_storage_class: self.allow_archive_storage_class,
            store: self.location.options(Some(&self.upload), self.concurrency),
        }
    }
}

impl PurgeArgs {
    pub fn into_options(&self) -> purge::Options {
        purge::Options {
            remote_older_than: self.remote_older_than,
            local_older_than: self.local_older_than,
            size_gt: self.size_gt,
            dry_run: self.dry_run,
            force: self.force,
            store: self.location.options(None, self.concurrency),
            dendrite: self.dendrite.options(),
        }
    }
}

impl CheckArgs {
    pub fn into_options(&self) -> check::Options {
        check::Options {
            fix: self.fix,
            force: self.force,
            grace_period: self.grace_period,
            samples: self.samples,
            store: self.location.options(None, None),
            dendrite: self.dendrite.options(),
        }
    }
}

impl CopyArgs {
    pub fn into_options(&self) -> copy::Options {
        copy::Options {
            from: SideOptions {
                spec: self.from.clone(),
                endpoint_url: self.from_endpoint_url.clone(),
                region: self.from_region.clone(),
                prefix: self.from_prefix.clone(),
                sse_customer_key_file: self.from_sse_customer_key_file.clone(),
                credentials_file: self.from_credentials_file.clone(),
                swift_cloud: self.from_swift_cloud.clone(),
                storage_class: None,
            },
            to: SideOptions {
                spec: self.to.clone(),
                endpoint_url: self.to_endpoint_url.clone(),
                region: self.to_region.clone(),
                prefix: self.to_prefix.clone(),
                sse_customer_key_file: self.to_sse_customer_key_file.clone(),
                credentials_file: self.to_credentials_file.clone(),
                swift_cloud: self.to_swift_cloud.clone(),
                storage_class: self.to_storage_class.clone(),
            },
            store: StoreOptions {
                homeserver_config_path: self.homeserver_config_path.clone(),
                media_store_path: self.media_store_path.clone(),
                concurrency: self.concurrency,
                ..StoreOptions::default()
            },
            state: self.state.clone(),
            all_objects: self.all_objects,
            delete_source: self.delete_source,
            overwrite_mismatched: self.overwrite_mismatched,
            dry_run: self.dry_run,
        }
    }
}
