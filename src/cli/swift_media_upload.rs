//! Invoked as `swift_media_upload` (a symlink to the binary), media-offload
//! takes that script's command lines: its global `--cloud NAME` and
//! `--container NAME` before the subcommand, and
//! `upload BASE_PATH CONTAINER [--delete]` for a Swift container. They are
//! rewritten into media-offload's own (`upload ... --swift --swift-cloud
//! NAME`); the other subcommands are the same as s3_media_upload's.

use std::ffi::{OsStr, OsString};
use std::path::Path;

/// The name the symlink has.
pub const NAME: &str = "swift_media_upload";

/// Whether the program was started as `swift_media_upload`.
pub fn invoked_as(argv0: &OsStr) -> bool {
    Path::new(argv0).file_name().is_some_and(|n| n == NAME)
}

/// The command line rewritten: `--cloud`/`--container` taken out from
/// before the subcommand, and `upload` told that its store is Swift (with
/// the cloud, when one was given).
pub fn rewrite(argv: Vec<OsString>) -> Vec<OsString> {
    let mut out = Vec::with_capacity(argv.len() + 3);
    let mut cloud: Option<OsString> = None;
    let mut args = argv.into_iter();
    out.extend(args.next());
    let mut subcommand = None;
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy().into_owned();
        if subcommand.is_none() {
            match text.as_str() {
                "--cloud" => {
                    cloud = args.next();
                    continue;
                }
                "--container" => {
                    // The script's upload takes the container as its own
                    // argument, which wins; elsewhere it is unused.
                    args.next();
                    continue;
                }
                t if t.starts_with("--cloud=") => {
                    cloud = Some(OsString::from(&t["--cloud=".len()..]));
                    continue;
                }
                t if t.starts_with("--container=") => continue,
                t if !t.starts_with('-') => subcommand = Some(text.clone()),
                _ => {}
            }
        }
        out.push(arg);
        if subcommand.as_deref() == Some("upload") && text == "upload" {
            out.push("--swift".into());
            if let Some(c) = cloud.take() {
                out.push("--swift-cloud".into());
                out.push(c);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_scripts_command_lines() {
        assert!(invoked_as(OsStr::new("/usr/local/bin/swift_media_upload")));
        assert!(!invoked_as(OsStr::new("media-offload")));
        assert_eq!(
            rewrite(words(&[
                "swift_media_upload",
                "--cloud",
                "c1",
                "--container",
                "x",
                "upload",
                "/m",
                "cont",
                "--delete"
            ])),
            words(&["swift_media_upload", "upload", "--swift", "--swift-cloud", "c1", "/m", "cont", "--delete"])
        );
        assert_eq!(
            rewrite(words(&["swift_media_upload", "--cloud=c1", "--container=x", "update", "/m", "2m"])),
            words(&["swift_media_upload", "update", "/m", "2m"])
        );
        assert_eq!(
            rewrite(words(&["swift_media_upload", "upload", "/m", "cont"])),
            words(&["swift_media_upload", "upload", "--swift", "/m", "cont"])
        );
    }
}
