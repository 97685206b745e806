//! Shared harness for the end-to-end tests.
//!
//! The tests drive the real `media-offload` binary (and the real Python
//! `s3_media_upload` 1.7.0) against real services: a throwaway PostgreSQL
//! cluster, moto_server and s3s-fs (S3) and a single-node Swift, all started
//! by `scripts/test-services.sh`,
//! which writes the `MO_TEST_*` variables this harness reads.
//! `scripts/test.sh` does all of that and runs `cargo test`.
//!
//! Tests never skip when the services are missing: they fail and say how to
//! run them.
#![allow(dead_code, unused_imports)]

pub mod cache;
pub mod dendrite;
pub mod deny_proxy;
pub mod env;
pub mod fault_proxy;
pub mod flows;
pub mod http;
pub mod owner;
pub mod pg;
pub mod run;
pub mod s3;
pub mod ssec_proxy;
pub mod store;
pub mod swift;
pub mod synapse_schema;
pub mod yaml;

pub use cache::*;
pub use dendrite::*;
pub use deny_proxy::*;
pub use env::*;
pub use fault_proxy::*;
pub use flows::*;
pub use owner::*;
pub use pg::*;
pub use run::*;
pub use s3::*;
pub use ssec_proxy::*;
pub use store::*;
pub use swift::*;
pub use yaml::*;

use std::sync::atomic::{AtomicU64, Ordering};

/// Two tests, `$sqlite` and `$postgres`, each calling `$scenario` with a
/// fresh homeserver on that database.
#[macro_export]
macro_rules! on_sqlite_and_postgres {
    ($sqlite:ident, $postgres:ident, $scenario:path) => {
        #[test]
        fn $sqlite() {
            $scenario($crate::common::Homeserver::sqlite());
        }

        #[test]
        fn $postgres() {
            $scenario($crate::common::Homeserver::postgres());
        }
    };
}

/// A name unique across this test process and others running at the same
/// time (pid + counter + a clock-derived salt), lowercase `[a-z0-9]`.
pub fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{}x{}x{:x}", std::process::id(), n, nanos % 0xfffff)
}

/// Lowercase hex MD5 of `data`.
pub fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(data))
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

pub const DAY_MS: i64 = 24 * 3600 * 1000;
pub const HOUR_MS: i64 = 3600 * 1000;

/// Deterministic pseudo-random content of `size` bytes derived from `seed`.
pub fn content_for(seed: &str, size: usize) -> Vec<u8> {
    // FNV-1a of the seed, then xorshift64*.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in seed.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    let mut x = h | 1;
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545F4914F6CDD1D).to_le_bytes());
    }
    out.truncate(size);
    out
}
