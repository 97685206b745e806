//! The command line: the clap definition (`args`) and its translation into
//! each command's plain options (`options`). Clap's types go no further.

mod args;
mod options;

pub use args::*;
