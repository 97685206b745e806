//! The command line: the clap definition (`args`) and its translation into
//! each command's plain options (`options`). Clap's types go no further.

mod args;
mod options;
pub mod swift_media_upload;

pub use args::*;

/// The program's arguments, rewritten when it was started as
/// `swift_media_upload` (see [`swift_media_upload`]).
pub fn argv() -> Vec<std::ffi::OsString> {
    let argv: Vec<_> = std::env::args_os().collect();
    match argv.first() {
        Some(first) if swift_media_upload::invoked_as(first) => swift_media_upload::rewrite(argv),
        _ => argv,
    }
}
