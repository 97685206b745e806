//! The unprivileged test user that owns the media stores of the tests about
//! runs as root, and the file ownership those tests check.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::env::test_env;

/// The test owner's (uid, gid), from /etc/passwd.
pub fn owner() -> (u32, u32) {
    let name = &test_env().owner;
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd.lines().find(|l| l.split(':').next() == Some(name)).unwrap_or_else(|| panic!("no user {name}"));
    let f: Vec<&str> = line.split(':').collect();
    (f[2].parse().unwrap(), f[3].parse().unwrap())
}

/// Gives `path` and everything under it to (`uid`, `gid`), symlinks themselves.
pub fn chown_tree(path: &Path, (uid, gid): (u32, u32)) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
    if path.is_dir() && !path.is_symlink() {
        for e in std::fs::read_dir(path).unwrap() {
            chown_tree(&e.unwrap().path(), (uid, gid));
        }
    }
}

/// The uid that owns `path`.
pub fn owned_by(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).uid()
}

/// Whether this test process runs as root (CI does).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"))
}
