#!/usr/bin/env bash
# Installs and starts the services the integration tests need:
#   * a throwaway PostgreSQL cluster (unix socket + TCP on 127.0.0.1 with TLS),
#   * moto_server (a local S3 imitation) on 127.0.0.1,
#   * s3s-fs (an S3 server that checks Content-MD5, as AWS does and moto
#     does not) on 127.0.0.1, installed with cargo once per machine,
#   * a Python venv (.test-venv/) holding the reference tool s3_media_upload,
#   * an unprivileged user (mo-test-owner) that owns the media stores of the
#     tests about runs as root,
#   * a single-node OpenStack Swift from Debian's packages (proxy, account,
#     container and object servers, memcached) with TempAuth: two proxies
#     on the same rings, one whose tokens live for a few seconds; and
#     Keystone v3 (Debian's keystone on SQLite) with a third proxy that
#     takes its tokens.
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
    command -v swift-proxy-server >/dev/null 2>&1 || need+=(swift-proxy)
    command -v swift-account-server >/dev/null 2>&1 || need+=(swift-account)
    command -v swift-container-server >/dev/null 2>&1 || need+=(swift-container)
    command -v swift-object-server >/dev/null 2>&1 || need+=(swift-object)
    command -v memcached >/dev/null 2>&1 || need+=(memcached)
    command -v keystone-manage >/dev/null 2>&1 || need+=(keystone)
    [ -d /usr/lib/python3/dist-packages/keystonemiddleware ] || need+=(python3-keystonemiddleware)
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
    SWIFT_TMP="" SWIFT_PORT="" SWIFT_SHORT_PORT="" SWIFT_PIDS="" KS_PORT="" SWIFT_KS_PORT=""
    KS_APP_ID="" KS_APP_SECRET="" KS_PROJECT_ID=""
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

swift_alive() {
    local pid
    [ -n "${SWIFT_PIDS:-}" ] || return 1
    for pid in $SWIFT_PIDS; do kill -0 "$pid" 2>/dev/null || return 1; done
    swift_answers "$SWIFT_PORT"
}

swift_answers() {
    python3 - "$1" >/dev/null 2>&1 <<'PY'
import sys, urllib.request
urllib.request.urlopen("http://127.0.0.1:%s/healthcheck" % sys.argv[1], timeout=2).read()
PY
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
    stop_swift
    rm -f "$STATE_FILE" "$ENV_FILE"
}

stop_swift() {
    local pid
    [ -n "${SWIFT_PIDS:-}" ] && log "stopping Swift (pids $SWIFT_PIDS)"
    for pid in ${SWIFT_PIDS:-}; do
        # Each server was started in its own session: end its workers too.
        kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    done
    for pid in ${SWIFT_PIDS:-}; do
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 -- "-$pid" 2>/dev/null || true
    done
    case "${SWIFT_TMP:-}" in
        /tmp/mo-test-swift.*) rm -rf "$SWIFT_TMP" ;;
    esac
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

# A single-node Swift: one replica, every server with its own config in a
# scratch folder, the device a folder under it (ext4 under /tmp has user
# xattrs, which the object server needs), TempAuth with memcached for its
# tokens. The servers read their constraints (max_file_size) from
# /etc/swift/swift.conf whatever swift_dir says, so the cluster's maximum
# stays Swift's 5 GiB: the tests reach SLO sizes with a small segment size.
SWIFT_SHORT_TOKEN_LIFE=3
start_swift() {
    local started tmp user ports=() server port
    started=$(date +%s.%N)
    tmp="$(mktemp -d /tmp/mo-test-swift.XXXXXX)"
    SWIFT_TMP="$tmp"
    user="$(id -un)"
    mkdir -p "$tmp/node/d1" "$tmp/run" "$tmp/cache"
    setfattr -n user.mo-test -v 1 "$tmp/node/d1" 2>/dev/null \
        || python3 -c 'import os,sys; os.setxattr(sys.argv[1], "user.mo-test", b"1")' "$tmp/node/d1" \
        || die "$tmp has no user xattrs, which Swift's object server needs"
    for server in account container object memcached proxy short; do ports+=("$(free_port)"); done
    local account_port=${ports[0]} container_port=${ports[1]} object_port=${ports[2]} memcached_port=${ports[3]}
    SWIFT_MEMCACHED="127.0.0.1:$memcached_port"
    SWIFT_PORT=${ports[4]}
    SWIFT_SHORT_PORT=${ports[5]}
    cat >"$tmp/swift.conf" <<CONF
[swift-hash]
swift_hash_path_suffix = mo-test
swift_hash_path_prefix = mo-test

[storage-policy:0]
name = gold
default = yes
CONF
    for server in account container object; do
        port="${server}_port"
        (cd "$tmp" && swift-ring-builder "$server.builder" create 4 1 1 >/dev/null \
            && swift-ring-builder "$server.builder" add "r1z1-127.0.0.1:${!port}/d1" 1 >/dev/null \
            && swift-ring-builder "$server.builder" rebalance >/dev/null) \
            || die "swift-ring-builder could not build the $server ring"
        cat >"$tmp/$server-server.conf" <<CONF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = ${!port}
workers = 0
user = $user
swift_dir = $tmp
devices = $tmp/node
mount_check = false
log_name = $server-server
log_level = WARNING

[pipeline:main]
pipeline = $server-server

[app:$server-server]
use = egg:swift#$server
CONF
    done
    # The proxies share memcached, where TempAuth keeps a user's token and
    # hands it out again: the short-lived tokens belong to a user that only
    # the short proxy knows.
    for proxy in proxy short; do
        port=$SWIFT_PORT life=86400 users="user_test_tester = testing .admin"
        [ "$proxy" = short ] && port=$SWIFT_SHORT_PORT life=$SWIFT_SHORT_TOKEN_LIFE \
            users="user_test_expiring = expiring .admin"
        cat >"$tmp/$proxy-server.conf" <<CONF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $port
workers = 0
user = $user
swift_dir = $tmp
log_name = $proxy-server
log_level = WARNING

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk slo tempauth proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
allow_account_management = true

[filter:tempauth]
use = egg:swift#tempauth
$users
token_life = $life
storage_url_scheme = default

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:$memcached_port
CONF
        # The other filters of the pipeline, as name:entry point.
        for filter in catch_errors:catch_errors gatekeeper:gatekeeper healthcheck:healthcheck \
            proxy-logging:proxy_logging listing_formats:listing_formats bulk:bulk slo:slo; do
            printf '\n[filter:%s]\nuse = egg:swift#%s\n' "${filter%%:*}" "${filter#*:}" >>"$tmp/$proxy-server.conf"
        done
    done
    SWIFT_PIDS=""
    setsid memcached -l 127.0.0.1 -p "$memcached_port" -U 0 -m 16 -u "$user" \
        </dev/null >"$tmp/run/memcached.log" 2>&1 &
    SWIFT_PIDS="$SWIFT_PIDS $!"
    for server in account container object proxy short; do
        local bin="swift-$server-server"
        [ "$server" = short ] && bin=swift-proxy-server
        setsid "$bin" "$tmp/$server-server.conf" </dev/null >"$tmp/run/$server.log" 2>&1 &
        SWIFT_PIDS="$SWIFT_PIDS $!"
    done
    SWIFT_PIDS="${SWIFT_PIDS# }"
    log "starting Swift (proxy on 127.0.0.1:$SWIFT_PORT, short-lived tokens on :$SWIFT_SHORT_PORT)"
    for _ in $(seq 1 300); do
        if swift_answers "$SWIFT_PORT" && swift_answers "$SWIFT_SHORT_PORT" \
            && (echo >"/dev/tcp/127.0.0.1/$object_port") 2>/dev/null \
            && (echo >"/dev/tcp/127.0.0.1/$container_port") 2>/dev/null \
            && (echo >"/dev/tcp/127.0.0.1/$account_port") 2>/dev/null; then
            log "Swift is up in $(python3 -c "import sys; print('%.1f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$started" "$(date +%s.%N)")s"
            return 0
        fi
        for pid in $SWIFT_PIDS; do kill -0 "$pid" 2>/dev/null || break 2; done
        sleep 0.1
    done
    tail -n 20 "$tmp"/run/*.log >&2 || true
    die "Swift did not come up"
}

# Keystone v3 from Debian's package on SQLite (keystone-wsgi-public's own
# test server), with a project, a user, an application credential, and an
# object-store endpoint: a third Swift proxy that takes Keystone tokens.
KS_PASS='mo-test-keystone-pass'
start_keystone() {
    local started tmp
    started=$(date +%s)
    tmp="$SWIFT_TMP/keystone"
    mkdir -p "$tmp/fernet" "$tmp/credential"
    KS_PORT="$(free_port)"
    SWIFT_KS_PORT="$(free_port)"
    cat >"$tmp/keystone.conf" <<CONF
[DEFAULT]
log_file = $tmp/keystone.log
[database]
connection = sqlite:///$tmp/keystone.db
[token]
provider = fernet
[fernet_tokens]
key_repository = $tmp/fernet
[fernet_receipts]
key_repository = $tmp/fernet
[credential]
key_repository = $tmp/credential
CONF
    log "setting up Keystone (SQLite) in $tmp"
    local manage=(keystone-manage --config-file "$tmp/keystone.conf")
    { "${manage[@]}" db_sync \
        && "${manage[@]}" fernet_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)" \
        && "${manage[@]}" credential_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)" \
        && "${manage[@]}" bootstrap --bootstrap-password "$KS_PASS" --bootstrap-region-id RegionOne \
            --bootstrap-public-url "http://127.0.0.1:$KS_PORT/v3/" \
            --bootstrap-internal-url "http://127.0.0.1:$KS_PORT/v3/"; } >"$tmp/setup.log" 2>&1 \
        || { tail -n 20 "$tmp/setup.log" >&2; die "keystone-manage failed"; }
    OS_KEYSTONE_CONFIG_FILES="$tmp/keystone.conf" setsid keystone-wsgi-public --host 127.0.0.1 --port "$KS_PORT" \
        </dev/null >"$tmp/server.log" 2>&1 &
    SWIFT_PIDS="$SWIFT_PIDS $!"
    # The project, user, role, application credential and endpoint.
    /usr/bin/python3 - "$KS_PORT" "$KS_PASS" "$SWIFT_KS_PORT" >"$tmp/ids" 2>"$tmp/provision.log" <<'PY' \
        || { cat "$tmp/provision.log" >&2; die "could not provision Keystone"; }
import json, sys, time, urllib.error, urllib.request
port, password, swift_port = sys.argv[1], sys.argv[2], sys.argv[3]
base = "http://127.0.0.1:%s/v3" % port
def call(method, path, body=None, token=None):
    req = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body else None)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("X-Auth-Token", token)
    for attempt in range(30):
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.headers, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            # SQLite under load: "database is locked" comes back as a 500.
            if e.code != 500 or attempt == 29:
                raise
            time.sleep(0.5)
def login(user, pw, project):
    auth = {"identity": {"methods": ["password"], "password": {"user": {"name": user, "domain": {"id": "default"}, "password": pw}}},
            "scope": {"project": {"name": project, "domain": {"id": "default"}}}}
    return call("POST", "/auth/tokens", {"auth": auth})[0]["X-Subject-Token"]
for _ in range(600):
    try:
        admin = login("admin", password, "admin")
        break
    except Exception:
        time.sleep(0.2)
else:
    sys.exit("Keystone did not come up")
project = call("POST", "/projects", {"project": {"name": "media", "domain_id": "default"}}, admin)[1]["project"]["id"]
user = call("POST", "/users", {"user": {"name": "mo-user", "password": "mo-user-pass", "domain_id": "default"}}, admin)[1]["user"]["id"]
roles = call("GET", "/roles?name=member", None, admin)[1]["roles"]
call("PUT", "/projects/%s/users/%s/roles/%s" % (project, user, roles[0]["id"]), None, admin)
service = call("POST", "/services", {"service": {"type": "object-store", "name": "swift"}}, admin)[1]["service"]["id"]
for interface in ("public", "internal"):
    call("POST", "/endpoints", {"endpoint": {"service_id": service, "interface": interface, "region_id": "RegionOne",
         "url": "http://127.0.0.1:%s/v1/AUTH_%%(tenant_id)s" % swift_port}}, admin)
mine = login("mo-user", "mo-user-pass", "media")
cred = call("POST", "/users/%s/application_credentials" % user, {"application_credential": {"name": "mo-test"}}, mine)[1]
print(cred["application_credential"]["id"], cred["application_credential"]["secret"], project)
PY
    read -r KS_APP_ID KS_APP_SECRET KS_PROJECT_ID <"$tmp/ids"
    sed -e "s/^bind_port = .*/bind_port = $SWIFT_KS_PORT/" -e "s/^log_name = .*/log_name = keystone-proxy-server/" \
        -e "s/ tempauth / authtoken keystoneauth /" -e '/^\[filter:tempauth\]/,/^$/d' \
        "$SWIFT_TMP/proxy-server.conf" >"$SWIFT_TMP/keystone-proxy-server.conf"
    cat >>"$SWIFT_TMP/keystone-proxy-server.conf" <<CONF

[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
www_authenticate_uri = http://127.0.0.1:$KS_PORT
auth_url = http://127.0.0.1:$KS_PORT
auth_type = password
project_domain_id = default
user_domain_id = default
project_name = admin
username = admin
password = $KS_PASS
delay_auth_decision = True
memcached_servers = $SWIFT_MEMCACHED

[filter:keystoneauth]
use = egg:swift#keystoneauth
operator_roles = admin, member
CONF
    setsid swift-proxy-server "$SWIFT_TMP/keystone-proxy-server.conf" </dev/null >"$SWIFT_TMP/run/keystone-proxy.log" 2>&1 &
    SWIFT_PIDS="$SWIFT_PIDS $!"
    for _ in $(seq 1 300); do
        if swift_answers "$SWIFT_KS_PORT"; then
            log "Keystone and its Swift proxy are up in $(( $(date +%s) - started ))s"
            return 0
        fi
        sleep 0.2
    done
    tail -n 20 "$SWIFT_TMP/run/keystone-proxy.log" >&2 || true
    die "the Keystone Swift proxy did not come up"
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
        printf 'SWIFT_TMP=%q\n' "$SWIFT_TMP"
        printf 'SWIFT_PORT=%q\n' "$SWIFT_PORT"
        printf 'SWIFT_SHORT_PORT=%q\n' "$SWIFT_SHORT_PORT"
        printf 'SWIFT_PIDS=%q\n' "$SWIFT_PIDS"
        printf 'KS_PORT=%q\n' "$KS_PORT"
        printf 'SWIFT_KS_PORT=%q\n' "$SWIFT_KS_PORT"
        printf 'KS_APP_ID=%q\n' "$KS_APP_ID"
        printf 'KS_APP_SECRET=%q\n' "$KS_APP_SECRET"
        printf 'KS_PROJECT_ID=%q\n' "$KS_PROJECT_ID"
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
        # TempAuth: account AUTH_test, user test:tester (admin); test:expiring
        # (admin) on the proxy whose tokens expire after a few seconds.
        printf 'export MO_TEST_SWIFT_AUTH=%q\n' "http://127.0.0.1:$SWIFT_PORT/auth/v1.0"
        printf 'export MO_TEST_SWIFT_SHORT_AUTH=%q\n' "http://127.0.0.1:$SWIFT_SHORT_PORT/auth/v1.0"
        printf 'export MO_TEST_SWIFT_SHORT_TOKEN_LIFE=%q\n' "$SWIFT_SHORT_TOKEN_LIFE"
        printf 'export MO_TEST_SWIFT_SHORT_USER=%q\n' "test:expiring"
        printf 'export MO_TEST_SWIFT_SHORT_KEY=%q\n' "expiring"
        # Keystone v3: user mo-user (member of project media, domain
        # default), its application credential; Swift behind it.
        printf 'export MO_TEST_KEYSTONE_URL=%q\n' "http://127.0.0.1:$KS_PORT/v3"
        printf 'export MO_TEST_KEYSTONE_APP_ID=%q\n' "$KS_APP_ID"
        printf 'export MO_TEST_KEYSTONE_APP_SECRET=%q\n' "$KS_APP_SECRET"
        printf 'export MO_TEST_KEYSTONE_PROJECT_ID=%q\n' "$KS_PROJECT_ID"
        printf 'export MO_TEST_SWIFT_USER=%q\n' "test:tester"
        printf 'export MO_TEST_SWIFT_KEY=%q\n' "testing"
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
    if pg_alive && moto_alive && s3s_alive && swift_alive; then
        log "reusing running services (PostgreSQL :$PG_PORT, moto :$MOTO_PORT, s3s-fs :$S3S_PORT, Swift :$SWIFT_PORT)"
    else
        stop_services
        # A start that fails half-way still leaves a state file, so that
        # `stop` ends what did start.
        trap write_state_and_env EXIT
        start_postgres
        start_moto
        start_s3s
        start_swift
        start_keystone
        trap - EXIT
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
