//! The integration tests, compiled into one test binary (as ripgrep and
//! cargo do): one link instead of one per file, which matters on two cores.
//!
//! Each module drives the real `media-offload` binary against real services
//! (PostgreSQL, S3 servers, the Python reference tool) that
//! `scripts/test-services.sh` starts; `common` is the shared harness.

#[macro_use]
mod common;

mod bad_input;
mod check;
mod cli;
mod compat;
mod conflicts;
mod copy;
mod crash;
mod dendrite;
mod faults;
mod fuzz_parsers;
mod harness;
mod homeserver_config;
mod homeserver_db;
mod migrate;
mod ownership;
mod postgres;
mod purge;
mod purge_crash;
mod reporting;
mod safety;
mod selection;
mod store_failures;
mod swift;
mod symlinks;
mod upload;
