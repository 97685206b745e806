#!/usr/bin/env bash
# The project's one test command: starts the test services (PostgreSQL,
# moto_server, the Python reference tool; installing what is missing), runs
# every unit and integration test against them, and stops the services.
# Extra arguments go to `cargo test` (e.g. scripts/test.sh -- upload:: runs the upload tests).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

cleanup() { "$REPO_ROOT/scripts/test-services.sh" stop || true; }
trap cleanup EXIT

"$REPO_ROOT/scripts/test-services.sh" start
# shellcheck disable=SC1091
. "$REPO_ROOT/target/test-services/env"

status=0
# The test-release profile (Cargo.toml): optimised, without the release
# profile's LTO, which would make every test build minutes longer.
cargo test --profile test-release --locked --no-fail-fast "$@" || status=$?
exit "$status"
