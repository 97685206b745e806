//! Deterministic crash and pause points, for the tests that prove a run
//! killed at any moment is completed by running it again.
//!
//! Off unless the environment asks (nothing is read from it otherwise):
//!
//! * `MEDIA_OFFLOAD_CRASH_AT=<point>[:<n>]` kills the process with SIGKILL
//!   (as `kill -9` would: no destructor, no flush) the `n`-th time (default
//!   the first) it reaches `<point>`.
//! * `MEDIA_OFFLOAD_PAUSE_AT=<point>` with `MEDIA_OFFLOAD_PAUSE_DIR=<dir>`
//!   stops the first time `<point>` is reached: writes `<dir>/paused` and
//!   waits until `<dir>/resume` exists, so a test can change the world at
//!   exactly that moment (swap a folder for a symlink, say).
//!
//! The points, in the order a file meets them: `after-put` (the object is
//! stored, nothing verified), `after-verify` (proven identical, the local
//! file still there), `after-unlink` (a local file deleted, its media not
//! yet recorded), `before-mark` (a media's files all gone, cache.db not yet
//! written); for purge `after-purge-commit` (a batch's rows deleted,
//! nothing else yet), `after-purge-files` (a media's files deleted, its
//! objects not) and `after-purge-object` (a batch delete of object keys
//! done, the next batch's rows not yet deleted); for update-db `update-db-batch`
//! and `update-db-commit`, for check-deleted `check-deleted-page` (cache.db
//! written but not committed); for copy `copy-after-put` (an object stored,
//! not verified), `copy-after-verify`, `copy-after-source-delete` and
//! `copy-state-commit` (a page of statuses about to be committed).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

struct Plan {
    crash: Option<(String, u64)>,
    pause: Option<(String, std::path::PathBuf)>,
}

static PLAN: OnceLock<Plan> = OnceLock::new();
static CRASH_HITS: AtomicU64 = AtomicU64::new(0);
static PAUSED: AtomicU64 = AtomicU64::new(0);

fn plan() -> &'static Plan {
    PLAN.get_or_init(|| {
        let crash =
            std::env::var("MEDIA_OFFLOAD_CRASH_AT").ok().filter(|v| !v.is_empty()).map(|v| match v.split_once(':') {
                Some((name, n)) => (name.to_owned(), n.parse().unwrap_or(1).max(1)),
                None => (v, 1),
            });
        let pause = std::env::var("MEDIA_OFFLOAD_PAUSE_AT")
            .ok()
            .filter(|v| !v.is_empty())
            .zip(std::env::var_os("MEDIA_OFFLOAD_PAUSE_DIR").map(std::path::PathBuf::from));
        Plan { crash, pause }
    })
}

/// A named point in a run; see the module docs.
pub fn point(name: &str) {
    let plan = plan();
    if let Some((at, n)) = &plan.crash
        && at == name
        && CRASH_HITS.fetch_add(1, Ordering::SeqCst) + 1 == *n
    {
        let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        std::process::abort();
    }
    if let Some((at, dir)) = &plan.pause
        && at == name
        && PAUSED.fetch_add(1, Ordering::SeqCst) == 0
    {
        let _ = std::fs::write(dir.join("paused"), name);
        while !dir.join("resume").exists() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
