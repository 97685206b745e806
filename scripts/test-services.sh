#!/usr/bin/env bash
# Installs and starts the services the integration tests need:
#   * a throwaway PostgreSQL cluster (unix socket + TCP on 127.0.0.1 with TLS),
#   * moto_server (a local S3 imitation) on 127.0.0.1,
#   * s3s-fs (an S3 server that checks Content-MD5, as AWS does and moto
#     does not) on 127.0.0.1, installed with cargo once per machine,
#   * a Python venv (.test-venv/) holding the reference tool s3_media_upload,
#   * an unprivileged user (mo-test-owner) that owns the media stores of the
#     tests about runs as root.
# Writes target/test-services/env, to be sourced before `cargo test`.
#
# Usage: scripts/test-services.sh [start|stop|env-path]
# Meant for a Debian 12 machine where it runs as root. Safe to run again:
# running services are reused, dead ones are cleaned up and started afresh.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE_DIR="$REPO_ROOT/target/test-services"
STATE_FILE="$STATE_DIR/state"
ENV_FILE="$STATE_DIR/env"
VENV="$REPO_ROOT/.test-venv"
REQUIREMENTS="$REPO_ROOT/scripts/test-requirements.txt"
PG_SUPERUSER=postgres
PG_SUPERPASS='mo-test-superpass'
S3S_FS_VERSION=0.14.1
TEST_OWNER=mo-test-owner

log() { echo "test-services: $*" >&2; }
die() { log "error: $*"; exit 1; }

pg_bin_dir() {
    local d
    d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    [ -n "$d" ] && [ -x "$d/initdb" ] || return 1
    echo "$d"
}

free_port() {
    python3 - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

as_postgres() { runuser -u postgres -- "$@"; }

# ---------------------------------------------------------------- install ---
install_system_packages() {
    local need=()
    command -v openssl >/dev/null 2>&1 || need+=(openssl)
    pg_bin_dir >/dev/null || need+=(postgresql)
    [ -f /usr/include/postgresql/libpq-fe.h ] || need+=(libpq-dev)
    command -v pg_config >/dev/null 2>&1 || need+=(libpq-dev)
    command -v gcc >/dev/null 2>&1 || need+=(gcc)
    command -v python3 >/dev/null 2>&1 || need+=(python3)
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
        python3 - >/dev/null 2>&1 <<'PY' || need+=(python3-dev)
import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)
PY
    fi
    command -v runuser >/dev/null 2>&1 || need+=(util-linux)
    if [ "${#need[@]}" -gt 0 ]; then
        [ "$(id -u)" = 0 ] || die "need root to install: ${need[*]}"
        log "installing Debian packages: ${need[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
    id postgres >/dev/null 2>&1 || die "the 'postgres' OS user is missing (package postgresql creates it)"
}

install_venv() {
    local stamp="$VENV/.requirements.sha256" want
    want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
    if [ -x "$VENV/bin/s3_media_upload" ] && [ -x "$VENV/bin/moto_server" ] \
        && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    log "creating Python venv at .test-venv (this takes a minute)"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-input \
        --no-binary psycopg2 -r "$REQUIREMENTS"
    "$VENV/bin/python" -c 'import psycopg2, boto3, moto, yaml, tqdm, humanize' \
        || die "venv is incomplete"
    echo "$want" >"$stamp"
}

# The S3 server s3s-fs: installed once per machine into cargo's own bin folder.
install_s3s_fs() {
    S3S_FS="$(command -v s3s-fs || echo "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs")"
    if [ ! -x "$S3S_FS" ] || [ "$("$S3S_FS" --version 2>/dev/null)" != "s3s-fs $S3S_FS_VERSION" ]; then
        log "installing s3s-fs $S3S_FS_VERSION (compiles for a few minutes, once)"
        cargo install --quiet --locked --features binary "s3s-fs@$S3S_FS_VERSION"
        S3S_FS="${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs"
    fi
}

install_test_owner() {
    if ! id "$TEST_OWNER" >/dev/null 2>&1; then
        [ "$(id -u)" = 0 ] || die "need root to create the user $TEST_OWNER"
        useradd --system --no-create-home --shell /usr/sbin/nologin "$TEST_OWNER"
    fi
}

# ------------------------------------------------------------------ state ---
load_state() {
    PG_TMP="" PG_PORT="" MOTO_PORT="" MOTO_PID="" PG_BIN="" S3S_PORT="" S3S_PID="" S3S_ROOT=""
    # shellcheck disable=SC1090
    [ -f "$STATE_FILE" ] && . "$STATE_FILE"
    return 0
}

pg_alive() {
    [ -n "${PG_TMP:-}" ] && [ -d "$PG_TMP/data" ] && [ -n "${PG_BIN:-}" ] \
        && as_postgres "$PG_BIN/pg_ctl" -D "$PG_TMP/data" status >/dev/null 2>&1
}

moto_alive() {
    [ -n "${MOTO_PID:-}" ] && kill -0 "$MOTO_PID" 2>/dev/null && moto_answers "$MOTO_PORT"
}

s3s_alive() {
    [ -n "${S3S_PID:-}" ] && kill -0 "$S3S_PID" 2>/dev/null
}

moto_answers() {
    "$VENV/bin/python" - "$1" >/dev/null 2>&1 <<'PY'
import sys, urllib.request
urllib.request.urlopen("http://127.0.0.1:%s/" % sys.argv[1], timeout=2).read()
PY
}

stop_services() {
    load_state
    if [ -n "${PG_TMP:-}" ] && [ -d "$PG_TMP" ]; then
        if pg_alive; then
            log "stopping PostgreSQL"
            as_postgres "$PG_BIN/pg_ctl" -D "$PG_TMP/data" stop -m fast -w -t 60 >/dev/null 2>&1 \
                || as_postgres "$PG_BIN/pg_ctl" -D "$PG_TMP/data" stop -m immediate -w >/dev/null 2>&1 || true
        fi
        case "$PG_TMP" in
            /tmp/mo-test-pg.*) rm -rf "$PG_TMP" ;;
        esac
    fi
    if [ -n "${MOTO_PID:-}" ] && kill -0 "$MOTO_PID" 2>/dev/null; then
        log "stopping moto_server (pid $MOTO_PID)"
        kill "$MOTO_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$MOTO_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$MOTO_PID" 2>/dev/null || true
    fi
    if [ -n "${S3S_PID:-}" ] && kill -0 "$S3S_PID" 2>/dev/null; then
        log "stopping s3s-fs (pid $S3S_PID)"
        kill "$S3S_PID" 2>/dev/null || true
    fi
    case "${S3S_ROOT:-}" in
        /tmp/mo-test-s3s.*) rm -rf "$S3S_ROOT" ;;
    esac
    rm -f "$STATE_FILE" "$ENV_FILE"
}

# ------------------------------------------------------------------ start ---
start_postgres() {
    PG_BIN="$(pg_bin_dir)" || die "PostgreSQL server binaries not found"
    PG_TMP="$(mktemp -d /tmp/mo-test-pg.XXXXXX)"
    PG_PORT="$(free_port)"
    mkdir -p "$PG_TMP/sock"
    printf '%s\n' "$PG_SUPERPASS" >"$PG_TMP/pwfile"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 \
        -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$PG_TMP/server.key" -out "$PG_TMP/server.crt" >/dev/null 2>&1 \
        || die "openssl could not make the server certificate"
    chown -R postgres:postgres "$PG_TMP"
    chmod 755 "$PG_TMP" "$PG_TMP/sock"
    chmod 600 "$PG_TMP/server.key" "$PG_TMP/pwfile"
    chmod 644 "$PG_TMP/server.crt"
    log "initdb in $PG_TMP/data"
    as_postgres "$PG_BIN/initdb" -D "$PG_TMP/data" -U "$PG_SUPERUSER" --pwfile="$PG_TMP/pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C >"$PG_TMP/initdb.log" 2>&1 \
        || { cat "$PG_TMP/initdb.log" >&2; die "initdb failed"; }
    # Members of mo_ssl_required may only log in over TLS: tests use it to
    # prove that sslmode=require really negotiates TLS.
    { echo "hostnossl all +mo_ssl_required 127.0.0.1/32 reject"; cat "$PG_TMP/data/pg_hba.conf"; } \
        >"$PG_TMP/data/pg_hba.conf.new"
    mv "$PG_TMP/data/pg_hba.conf.new" "$PG_TMP/data/pg_hba.conf"
    chown postgres:postgres "$PG_TMP/data/pg_hba.conf"
    cat >>"$PG_TMP/data/postgresql.conf" <<CONF

# --- media-offload test cluster ---
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_TMP/sock'
ssl = on
ssl_cert_file = '$PG_TMP/server.crt'
ssl_key_file = '$PG_TMP/server.key'
password_encryption = 'scram-sha-256'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
    log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    as_postgres "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -l "$PG_TMP/postgres.log" -w -t 60 start >/dev/null \
        || { cat "$PG_TMP/postgres.log" >&2; die "PostgreSQL did not start"; }
    "$PG_BIN/psql" -h "$PG_TMP/sock" -p "$PG_PORT" -U "$PG_SUPERUSER" -d postgres -qAt \
        -c "CREATE ROLE mo_ssl_required NOLOGIN" >/dev/null \
        || die "could not create the role mo_ssl_required"
}

start_moto() {
    MOTO_PORT="$(free_port)"
    log "starting moto_server on 127.0.0.1:$MOTO_PORT"
    setsid "$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" \
        </dev/null >"$STATE_DIR/moto.log" 2>&1 &
    MOTO_PID=$!
    for _ in $(seq 1 300); do
        moto_answers "$MOTO_PORT" && return 0
        kill -0 "$MOTO_PID" 2>/dev/null || break
        sleep 0.2
    done
    cat "$STATE_DIR/moto.log" >&2 || true
    die "moto_server did not come up"
}

start_s3s() {
    S3S_PORT="$(free_port)"
    S3S_ROOT="$(mktemp -d /tmp/mo-test-s3s.XXXXXX)"
    log "starting s3s-fs on 127.0.0.1:$S3S_PORT"
    setsid "$S3S_FS" --host 127.0.0.1 --port "$S3S_PORT" --access-key testing --secret-key testing "$S3S_ROOT" \
        </dev/null >"$STATE_DIR/s3s.log" 2>&1 &
    S3S_PID=$!
    for _ in $(seq 1 100); do
        (echo >"/dev/tcp/127.0.0.1/$S3S_PORT") 2>/dev/null && return 0
        kill -0 "$S3S_PID" 2>/dev/null || break
        sleep 0.1
    done
    cat "$STATE_DIR/s3s.log" >&2 || true
    die "s3s-fs did not come up"
}

write_state_and_env() {
    {
        printf 'PG_BIN=%q\n' "$PG_BIN"
        printf 'PG_TMP=%q\n' "$PG_TMP"
        printf 'PG_PORT=%q\n' "$PG_PORT"
        printf 'MOTO_PORT=%q\n' "$MOTO_PORT"
        printf 'MOTO_PID=%q\n' "$MOTO_PID"
        printf 'S3S_PORT=%q\n' "$S3S_PORT"
        printf 'S3S_PID=%q\n' "$S3S_PID"
        printf 'S3S_ROOT=%q\n' "$S3S_ROOT"
    } >"$STATE_FILE"
    {
        echo "# written by scripts/test-services.sh; source it before cargo test"
        printf 'export MO_TEST_PG_SOCKET=%q\n' "$PG_TMP/sock"
        printf 'export MO_TEST_PG_PORT=%q\n' "$PG_PORT"
        printf 'export MO_TEST_PG_SUPERUSER=%q\n' "$PG_SUPERUSER"
        printf 'export MO_TEST_PG_SUPERPASS=%q\n' "$PG_SUPERPASS"
        printf 'export MO_TEST_PG_CA=%q\n' "$PG_TMP/server.crt"
        printf 'export MO_TEST_S3_ENDPOINT=%q\n' "http://127.0.0.1:$MOTO_PORT"
        printf 'export MO_TEST_PYTHON_TOOL=%q\n' "$VENV/bin/s3_media_upload"
        printf 'export MO_TEST_S3S_ENDPOINT=%q\n' "http://127.0.0.1:$S3S_PORT"
        printf 'export MO_TEST_OWNER=%q\n' "$TEST_OWNER"
        echo 'export AWS_ACCESS_KEY_ID=testing'
        echo 'export AWS_SECRET_ACCESS_KEY=testing'
        echo 'export AWS_DEFAULT_REGION=us-east-1'
    } >"$ENV_FILE"
}

start_services() {
    install_system_packages
    install_venv
    install_s3s_fs
    install_test_owner
    mkdir -p "$STATE_DIR"
    load_state
    if pg_alive && moto_alive && s3s_alive; then
        log "reusing running services (PostgreSQL :$PG_PORT, moto :$MOTO_PORT, s3s-fs :$S3S_PORT)"
    else
        stop_services
        start_postgres
        start_moto
        start_s3s
    fi
    write_state_and_env
    log "ready; environment in ${ENV_FILE#"$REPO_ROOT"/}"
}

case "${1:-start}" in
    start) start_services ;;
    stop) stop_services ;;
    env-path) echo "$ENV_FILE" ;;
    *) die "usage: $0 [start|stop|env-path]" ;;
esac
