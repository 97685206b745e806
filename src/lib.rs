//! media-offload: keep a Matrix homeserver's local media store small and
//! safe by offloading media to object storage, verified before delete.
//!
//! The binary (`main.rs`) only parses, sets up logging and dispatches;
//! everything else lives here, one module per concern.

pub mod cache;
pub mod cli;
pub mod commands;
pub mod config;
pub mod copy_state;
pub mod duration;
pub mod error;
pub mod faults;
pub mod homeserver_db;
pub mod lock;
pub mod manpage;
pub mod media_store;
pub mod report;
pub mod size;
pub mod store;
