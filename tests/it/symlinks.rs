//! Whoever can write the media store cannot make a run read or delete a
//! file outside it: a folder swapped for a symlink between the listing and
//! the delete (runs paused at `MEDIA_OFFLOAD_PAUSE_AT`, the swap made, the
//! run let go) changes nothing outside, in upload and in purge.

use std::path::Path;

use crate::common::*;

/// `local_content/ab/cd` of `m` replaced by a symlink to `target`; the real
/// folder moved to `moved`.
fn swap_for_symlink(hs: &Homeserver, m: &Media, target: &Path, moved: &Path) {
    let rel = m.original_rel();
    let folder = hs.path_of(rel.rsplit_once('/').unwrap().0);
    std::fs::rename(&folder, moved).unwrap();
    std::os::unix::fs::symlink(target, &folder).unwrap();
}

/// A folder outside the store holding a file of the same name as `m`'s
/// original: what a swapped-in symlink would point a path-based run at.
fn victim_beside(hs: &Homeserver, m: &Media) -> (std::path::PathBuf, std::path::PathBuf) {
    let outside = hs.cwd().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let name = m.original_rel().rsplit_once('/').unwrap().1.to_owned();
    let victim = outside.join(&name);
    std::fs::write(&victim, b"not the homeserver's: must survive").unwrap();
    (outside, victim)
}

#[test]
fn a_folder_swapped_for_a_symlink_after_verification_never_leads_the_delete_outside() {
    let mut hs = Homeserver::sqlite();
    let m = hs.add(Media::local(&hs.new_id()).size(4000));
    hs.update_db("30d");
    let s3 = S3::new();
    let (outside, victim) = victim_beside(&hs, &m);
    let media = hs.media_arg();
    let args = ["--json", "--no-progress", "upload", &media, &s3.bucket, "--endpoint-url", &s3.endpoint, "--delete"];
    // Verified, not yet deleted: now swap the folder.
    let paused = Paused::start(&args, hs.cwd(), "after-verify");
    let moved = hs.cwd().join("moved");
    swap_for_symlink(&hs, &m, &outside, &moved);
    let out = paused.resume().ok();
    assert_eq!(std::fs::read(&victim).unwrap(), b"not the homeserver's: must survive");
    assert_eq!(s3.get(&m.original_rel()).unwrap(), hs.content(&m.original_rel()), "the object is intact");
    // What went is the file that was verified, in the folder it was opened
    // in (moved away, with it); the symlink is left, and so the media open.
    let name = m.original_rel().rsplit_once('/').unwrap().1.to_owned();
    assert!(!moved.join(&name).exists(), "{}", out.describe());
    assert_eq!(cache_known_deleted(&hs.cache_db(), "", &m.media_id), Some(false));
    // A later run sees the symlink and refuses to follow it.
    let out = hs.upload(&s3, &["--delete"]);
    out.no_panic();
    out.stderr_line_with("not followed");
    assert!(victim.exists());
}

#[test]
fn a_folder_swapped_for_a_symlink_before_the_listing_is_reported_and_not_followed() {
    let mut hs = Homeserver::sqlite();
    let m = hs.add(Media::local(&hs.new_id()).size(4000));
    hs.update_db("30d");
    let (outside, victim) = victim_beside(&hs, &m);
    swap_for_symlink(&hs, &m, &outside, &hs.cwd().join("moved"));
    let s3 = S3::new();
    let out = hs.upload(&s3, &["--delete"]).status(3);
    out.stderr_line_with("a symlink on the way; not followed");
    assert!(victim.exists());
    assert!(s3.keys().is_empty(), "nothing outside the store was uploaded: {:?}", s3.keys());
    // check-deleted keeps it open (its files are not known to be gone).
    hs.mo(&["check-deleted", &hs.media_arg()]).ok();
    assert_eq!(cache_known_deleted(&hs.cache_db(), "", &m.media_id), Some(false));
}

#[test]
fn purge_never_deletes_through_a_folder_swapped_after_its_rows_went() {
    let mut hs = Homeserver::sqlite();
    let m = hs.add(Media::remote("remote.example", &hs.new_id(), &hs.new_id()).size(3000).with_thumbs());
    let (outside, victim) = victim_beside(&hs, &m);
    let thumb_victim = outside.join("32-32-image-png-crop");
    std::fs::write(&thumb_victim, b"also not ours").unwrap();
    let args = ["--json", "--no-progress", "purge", "--remote-older-than", "30d"];
    let paused = Paused::start(&args, hs.cwd(), "after-purge-commit");
    assert!(!hs.has_row(&m), "the rows go first");
    swap_for_symlink(&hs, &m, &outside, &hs.cwd().join("moved"));
    let thumbs = hs.path_of(&m.thumb_dir_rel());
    std::fs::rename(&thumbs, hs.cwd().join("moved-thumbs")).unwrap();
    std::os::unix::fs::symlink(&outside, &thumbs).unwrap();
    let out = paused.resume();
    out.no_panic();
    assert!(matches!(out.code(), 0 | 3), "{}", out.describe());
    assert!(victim.exists() && thumb_victim.exists(), "purge deleted outside the store: {}", out.describe());
}
