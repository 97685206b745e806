//! Writes the man page and the shell completions at build time, from the
//! same clap definition the binary parses with, for the Debian package
//! (`cargo deb` takes them from `target/<profile>/share/`, see Cargo.toml):
//!
//!   share/man/man1/media-offload.1.gz
//!   share/bash-completion/completions/media-offload
//!   share/zsh/vendor-completions/_media-offload
//!   share/fish/vendor_completions.d/media-offload.fish
//!
//! It compiles `src/cli/args.rs` and `src/manpage.rs` on their own, so those
//! files may use nothing else of the crate but the stand-ins below for the
//! value parsers the CLI names (rendering never parses a value) and the
//! storage classes (`src/store/classes.rs`, compiled here too). The
//! binary's `man` and `completions` subcommands print the same bytes.

// The CLI's argument structs are only built here, never read.
#![allow(dead_code)]

#[path = "src/cli/args.rs"]
mod cli;
mod duration {
    pub fn parse_duration(_: &str) -> Result<std::time::Duration, String> {
        unreachable!("the man page and completions parse no values")
    }
    pub fn parse_short_duration(_: &str) -> Result<std::time::Duration, String> {
        unreachable!("the man page and completions parse no values")
    }
}
mod size {
    pub fn parse_size(_: &str) -> Result<u64, String> {
        unreachable!("the man page and completions parse no values")
    }
}
// The real list: completions offer these for --storage-class.
#[path = "src/store/classes.rs"]
mod store_classes;
mod store {
    pub use super::store_classes::STORAGE_CLASSES;
}
#[path = "src/manpage.rs"]
mod manpage;

use std::io::Write;
use std::path::{Path, PathBuf};

use clap_complete::Shell;

fn main() {
    for f in ["build.rs", "src/cli/args.rs", "src/manpage.rs", "src/store/classes.rs"] {
        println!("cargo::rerun-if-changed={f}");
    }
    // OUT_DIR is <target>/<profile>/build/<package>-<hash>/out: the files go
    // beside the binary, where `cargo deb` finds the target/release/ paths.
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let profile_dir = out_dir.ancestors().nth(3).expect("OUT_DIR is <profile>/build/<pkg>/out");
    let share = profile_dir.join("share");

    let mut gz = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::best());
    gz.write_all(&manpage::man_page()).expect("compressing in memory");
    write(&share.join("man/man1/media-offload.1.gz"), &gz.finish().expect("compressing in memory"));
    for (shell, path) in [
        (Shell::Bash, "bash-completion/completions/media-offload"),
        (Shell::Zsh, "zsh/vendor-completions/_media-offload"),
        (Shell::Fish, "fish/vendor_completions.d/media-offload.fish"),
    ] {
        write(&share.join(path), &manpage::completions(shell));
    }
}

/// Writes `bytes` unless the file already holds them (keeps mtimes stable).
fn write(path: &Path, bytes: &[u8]) {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return;
    }
    std::fs::create_dir_all(path.parent().expect("a file in a folder"))
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("renaming to {}: {e}", path.display()));
}
