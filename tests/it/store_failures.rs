//! Systematic failures stop the run at once with one line naming the
//! cause, instead of one error per file (a daily timer would flood the
//! journal): credentials a real S3 server refuses, no credentials at all.

use crate::common::*;

fn store_with_media(n: usize) -> Homeserver {
    let mut hs = Homeserver::sqlite();
    hs.add_all((0..n).map(|_| Media::local(&hs.new_id()).with_thumbs()).collect());
    hs.update_db("30d");
    hs
}

#[test]
fn refused_credentials_stop_the_run_at_once_with_one_line() {
    let hs = store_with_media(40);
    let s3 = S3::new_s3s();
    let wrong = [("AWS_ACCESS_KEY_ID", "not-the-key"), ("AWS_SECRET_ACCESS_KEY", "not-the-secret")];
    let media = hs.media_arg();
    let args = ["--no-progress", "upload", &media, &s3.bucket, "--endpoint-url", &s3.endpoint, "--delete"];
    let out = hs.mo_env(&args, &wrong);
    let line = out.clean_error(1, &["refused"]);
    assert!(line.contains("403") || line.to_lowercase().contains("denied"), "{line}");
    let errors = out.stderr.lines().filter(|l| l.contains("ERROR")).count();
    assert_eq!(errors, 0, "one line, not one per file: {}", out.describe());
    assert!(hs.local_files() == *hs.generated(), "nothing was deleted");
    assert!(s3.keys().is_empty());
    // The same through migrate's settings.
    let out = hs.mo_env(&["migrate", "--bucket", &s3.bucket, "--endpoint-url", &s3.endpoint], &wrong);
    out.clean_error(1, &["refused"]);
}

#[test]
fn no_credentials_at_all_is_one_line_saying_where_they_were_looked_for() {
    let hs = store_with_media(3);
    let s3 = S3::new();
    let none = [("AWS_ACCESS_KEY_ID", ""), ("AWS_SECRET_ACCESS_KEY", ""), ("AWS_PROFILE", "")];
    let media = hs.media_arg();
    let out = hs.mo_env(&["upload", &media, &s3.bucket, "--endpoint-url", &s3.endpoint, "--delete"], &none);
    out.clean_error(1, &["no S3 credentials found", "AWS_ACCESS_KEY_ID"]);
    assert!(hs.local_files() == *hs.generated());
}
