#!/usr/bin/env bash
# Checks the deployment parts of the repository: systemd/ and ansible/.
#
#   ci/check-deploy.sh [PATH-TO-BINARY]
#
# The binary defaults to $MEDIA_OFFLOAD_BINARY, else target/release/media-offload;
# when none is built, a stub stands in (systemd-analyze only needs an executable).
# With MEDIA_OFFLOAD_DEB=PATH-TO-.deb (as .ci/run sets it), the molecule
# scenario also installs that package with the role, for real, and purges it.
# Installs what it needs (Debian's systemd for systemd-analyze; ansible-core,
# ansible-lint and molecule, pinned in ci/deploy-requirements.txt, into
# .deploy-venv/) and skips installs that are already done.
#
# DEPLOY_CHECKS=REGEX runs only the checks whose names match (setup always runs),
# e.g. DEPLOY_CHECKS=systemd for the quick ones.
#
# Prints one PASS/FAIL line per check, the log tail of a failed one, and ends
# with "deploy: N passed, M failed"; exits non-zero on any failure.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
VENV="$ROOT/.deploy-venv"
REQS="$ROOT/ci/deploy-requirements.txt"
BINARY=${1:-${MEDIA_OFFLOAD_BINARY:-$ROOT/target/release/media-offload}}
# A relative path is taken from the repository root, not from the role
# folder that molecule later resolves it in.
case "$BINARY" in /*) ;; *) BINARY="$PWD/$BINARY" ;; esac
MAX_EXPOSURE=2.0
SCHEDULE='*-*-* 05:00:00'

export NO_COLOR=1 PY_COLORS=0 ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
export DEBIAN_FRONTEND=noninteractive

CHECK_FILTER=${DEPLOY_CHECKS:-}
# shellcheck source=ci/checks.sh
. "$ROOT/ci/checks.sh"
begin_checks deploy

# --- setup ---------------------------------------------------------------------

setup_systemd() {
    if ! command -v systemd-analyze >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq --no-install-recommends systemd || return 1
    fi
    echo "DETAIL: $(systemd-analyze --version | head -n1)"
}

setup_venv() {
    local stamp="$VENV/.requirements.sha256" want
    want=$(sha256sum "$REQS" | cut -d' ' -f1)
    if [ -x "$VENV/bin/molecule" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        echo "DETAIL: already installed"
        return 0
    fi
    if ! python3 -m venv "$VENV" 2>/dev/null; then
        apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv || return 1
        python3 -m venv "$VENV" || return 1
    fi
    "$VENV/bin/pip" install -q -r "$REQS" || return 1
    echo "$want" >"$stamp"
    echo "DETAIL: $("$VENV/bin/ansible" --version | head -n1 | tr -d '[]')"
}

setup_deb() {
    if [ -z "${MEDIA_OFFLOAD_DEB:-}" ]; then
        echo "DETAIL: no MEDIA_OFFLOAD_DEB; the role's package install is not exercised"
        return 0
    fi
    case "$MEDIA_OFFLOAD_DEB" in /*) ;; *) MEDIA_OFFLOAD_DEB="$ROOT/$MEDIA_OFFLOAD_DEB" ;; esac
    [ -f "$MEDIA_OFFLOAD_DEB" ] || { echo "$MEDIA_OFFLOAD_DEB: no such file"; return 1; }
    export MEDIA_OFFLOAD_DEB
    # Ansible's apt module needs the system Python's apt bindings.
    if ! /usr/bin/python3 -c 'import apt' 2>/dev/null; then
        apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-apt || return 1
    fi
    echo "DETAIL: $MEDIA_OFFLOAD_DEB"
}

setup_binary() {
    if [ -x "$BINARY" ]; then
        echo "DETAIL: $BINARY"
    else
        BINARY="$WORK/stub/media-offload"
        mkdir -p "$WORK/stub"
        printf '#!/bin/sh\necho "media-offload stub" >&2\n' >"$BINARY"
        chmod 0755 "$BINARY"
        echo "DETAIL: no binary built; using a stub"
    fi
}

# --- systemd/ ------------------------------------------------------------------

UNITS=(media-offload.service media-offload.timer media-offload-purge.service media-offload-purge.timer)

# systemd/ must be exactly what the role renders with its defaults.
check_units_match_role() {
    local out="$WORK/rendered"
    mkdir -p "$out"
    (cd ansible && MEDIA_OFFLOAD_RENDER_DEST="$out" "$VENV/bin/ansible-playbook" tests/render-units.yml) || return 1
    local u rc=0
    for u in "${UNITS[@]}"; do
        diff -u "systemd/$u" "$out/$u" || rc=1
    done
    [ "$(ls systemd/*.service systemd/*.timer | wc -l)" -eq "${#UNITS[@]}" ] || { echo "unexpected unit files in systemd/"; rc=1; }
    [ $rc -eq 0 ] && echo "DETAIL: ${#UNITS[@]} units identical"
    return $rc
}

# Directives the issue asks for; a cheap guard against losing one.
check_unit_directives() {
    local rc=0 s f
    for s in media-offload.service media-offload-purge.service; do
        f=systemd/$s
        for d in '^Type=oneshot$' '^SuccessExitStatus=75$' '^TimeoutStartSec=[0-9]' '^StateDirectory=media-offload$' \
                 '^LoadCredential=config.yaml:/etc/media-offload/config.yaml$' \
                 '^LoadCredential=access_key_id:' '^LoadCredential=secret_access_key:' \
                 '^LoadCredential=session_token:' '^LoadCredential=sse_customer_key:' \
                 '^EnvironmentFile=-/etc/media-offload/environment$' '^Nice=19$' '^IOSchedulingPriority=7$' \
                 '^ProtectSystem=strict$' '^ReadWritePaths=/' '^NoNewPrivileges=yes$' '^CapabilityBoundingSet=$' \
                 '^PrivateTmp=yes$' '^SystemCallFilter=@system-service$' '^RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6$' \
                 '^User=matrix-synapse$'; do
            grep -Eq "$d" "$f" || { echo "$f: no line matching $d"; rc=1; }
        done
        grep -Eq '^ExecStart=/usr/bin/media-offload .* (migrate|purge)$' "$f" || { echo "$f: ExecStart"; rc=1; }
    done
    grep -q ' migrate$' systemd/media-offload.service || { echo "media-offload.service does not run migrate"; rc=1; }
    grep -q ' purge$' systemd/media-offload-purge.service || { echo "media-offload-purge.service does not run purge"; rc=1; }
    for f in systemd/media-offload.timer systemd/media-offload-purge.timer; do
        for d in '^Persistent=true$' '^RandomizedDelaySec=0$' '^WantedBy=timers.target$'; do
            grep -Eq "$d" "$f" || { echo "$f: no line matching $d"; rc=1; }
        done
    done
    return $rc
}

# systemd-analyze verify exits 0 on unknown keys, so any output is a failure.
# It runs against a root holding the binary at the ExecStart path and the
# distribution's units (for sysinit.target and friends).
check_verify() {
    local r="$WORK/verify-root" u out
    mkdir -p "$r/etc/systemd/system" "$r/usr/bin" "$r/usr/lib/systemd"
    cp -a /lib/systemd/system "$r/usr/lib/systemd/" || return 1
    cp "$BINARY" "$r/usr/bin/media-offload" && chmod 0755 "$r/usr/bin/media-offload" || return 1
    for u in "${UNITS[@]}"; do cp "systemd/$u" "$r/etc/systemd/system/$u" || return 1; done
    out=$(systemd-analyze verify --root="$r" "${UNITS[@]}" 2>&1)
    local rc=$?
    echo "$out"
    [ $rc -eq 0 ] && [ -z "$out" ] || return 1
    # Make sure the check can fail: an unknown key must be reported.
    echo 'NoSuchKey=1' >>"$r/etc/systemd/system/media-offload.service"
    out=$(systemd-analyze verify --root="$r" media-offload.service 2>&1)
    if [ -z "$out" ]; then echo "systemd-analyze verify did not report an unknown key"; return 1; fi
    echo "DETAIL: ${#UNITS[@]} units, no output"
}

check_calendar() {
    local rc=0 t cal norm
    for t in media-offload.timer media-offload-purge.timer; do
        cal=$(sed -n 's/^OnCalendar=//p' "systemd/$t")
        systemd-analyze calendar "$cal" || { rc=1; continue; }
        norm=$(systemd-analyze calendar "$cal" | sed -n 's/^ *Normalized form: //p')
        echo "$t: $norm"
        if [ "$t" = media-offload.timer ] && [ "$norm" != "$SCHEDULE" ]; then
            echo "media-offload.timer runs at '$norm', not '$SCHEDULE'"; rc=1
        fi
    done
    [ $rc -eq 0 ] && echo "DETAIL: $(sed -n 's/^OnCalendar=//p' systemd/media-offload.timer) daily"
    return $rc
}

check_security() {
    local rc=0 s line score all=""
    for s in media-offload.service media-offload-purge.service; do
        systemd-analyze security --offline=true --no-pager "systemd/$s" >"$WORK/security-$s.txt" 2>&1
        cat "$WORK/security-$s.txt"
        line=$(grep 'Overall exposure level' "$WORK/security-$s.txt")
        score=$(echo "$line" | sed -n 's/.*: \([0-9.]*\) .*/\1/p')
        if [ -z "$score" ]; then echo "$s: no score"; rc=1; continue; fi
        awk -v a="$score" -v b="$MAX_EXPOSURE" 'BEGIN { exit !(a <= b) }' || { echo "$s: exposure $score > $MAX_EXPOSURE"; rc=1; }
        all="$all $s $score"
    done
    echo "DETAIL: exposure (<= $MAX_EXPOSURE):$all"
    return $rc
}

# --- ansible/ --------------------------------------------------------------------

check_lint() {
    (cd ansible && PATH="$VENV/bin:$PATH" "$VENV/bin/ansible-lint" --profile production --offline --nocolor) || return 1
    echo "DETAIL: profile production"
}

# The example inventory leaves the timer off on a first deploy (the admin
# looks at a dry run first) and installs the package.
check_example_inventory() {
    local vars
    vars=$(cd ansible && "$VENV/bin/ansible-inventory" -i inventory/hosts.yml --host matrix.example.org) || return 1
    echo "$vars"
    python3 -c 'import json, sys
v = json.load(sys.stdin)
assert v.get("media_offload_timer_enabled") is False, "media_offload_timer_enabled is not false"
assert v.get("media_offload_binary_source") == "deb", "media_offload_binary_source is not deb"' <<<"$vars" || return 1
    echo "DETAIL: timer disarmed, installs the .deb"
}

MOLECULE_LOG="$WORK/molecule-output.log"
check_molecule() {
    (cd ansible/roles/media_offload &&
        PATH="$VENV/bin:$PATH" MEDIA_OFFLOAD_BINARY="$BINARY" "$VENV/bin/molecule" test) >"$MOLECULE_LOG" 2>&1
    local rc=$?
    sed 's/\x1b\[[0-9;]*m//g' "$MOLECULE_LOG" | grep -E 'Executed|changed=|fatal|ERROR' | tail -n 60
    [ $rc -eq 0 ] || return 1
    local seq
    # "[default > converge] Executed: Successful" (or "default ➜ converge: ..." with colours)
    seq=$(sed 's/\x1b\[[0-9;]*m//g' "$MOLECULE_LOG" |
        sed -n 's/.*default \(>\|➜\) \([a-z_]*\)\]\{0,1\}:\{0,1\} Executed: Successful.*/\2/p' | sort -u | tr '\n' ' ')
    for step in converge idempotence check side_effect verify; do
        case " $seq " in *" $step "*) ;; *) echo "molecule step $step did not run"; return 1 ;; esac
    done
    echo "DETAIL: converge, idempotence, check (fresh and converged), verify"
}

# The units' ExecStart command lines, run for real by the built binary with
# the shipped config.yaml.example (pointed at a demo homeserver and a
# directory store): the units, the example and the CLI must agree.
check_unit_command_lines() {
    if grep -q 'media-offload stub' "$BINARY" 2>/dev/null; then echo "needs the real binary"; return 1; fi
    local d="$WORK/contract" unit args rc=0
    "$BINARY" --no-progress -q demo --dir "$d/hs" --files 60 >/dev/null || return 1
    mkdir -p "$d/creds" "$d/state" "$d/store"
    # The example with its paths pointed at the demo; a purge policy added.
    sed -e "s|^homeserver_config_path: .*|homeserver_config_path: $d/hs/homeserver.yaml|" \
        -e "s|^cache_db: .*|cache_db: $d/state/cache.db|" \
        -e "s|^# bucket: .*|bucket: $d/store|" systemd/config.yaml.example >"$d/creds/config.yaml"
    printf 'purge:\n  remote_older_than: 90d\n' >>"$d/creds/config.yaml"
    for unit in media-offload.service media-offload-purge.service; do
        args=$(sed -n 's|^ExecStart=/usr/bin/media-offload ||p' "systemd/$unit" | sed "s|%d|$d/creds|g")
        echo "+ media-offload $args"
        # shellcheck disable=SC2086
        (cd "$d/state" && env -u MEDIA_OFFLOAD_CACHE_DB CREDENTIALS_DIRECTORY="$d/creds" "$BINARY" $args) || { echo "$unit: exit $?"; rc=1; }
    done
    [ $rc -eq 0 ] && echo "DETAIL: migrate and purge ran with the example config"
}

# The molecule inventory's fake secrets all contain MOLECULE-SECRET.
check_no_secret_in_output() {
    [ -s "$MOLECULE_LOG" ] || { echo "no molecule output to search"; return 1; }
    if grep -n 'MOLECULE-SECRET' "$MOLECULE_LOG"; then
        echo "a secret appears in the ansible output"
        return 1
    fi
    echo "DETAIL: $(wc -l <"$MOLECULE_LOG") lines searched"
}

# --- run -------------------------------------------------------------------------

run "setup: systemd-analyze" setup_systemd
run "setup: venv (ci/deploy-requirements.txt)" setup_venv
run "setup: binary" setup_binary   # (run() calls it in this shell: BINARY sticks)
run "setup: package" setup_deb

run "systemd: units match the role's rendering" check_units_match_role
run "systemd: required directives" check_unit_directives
run "systemd: ExecStart with the example config" check_unit_command_lines
run "systemd: systemd-analyze verify" check_verify
run "systemd: systemd-analyze calendar" check_calendar
run "systemd: systemd-analyze security" check_security
run "ansible: ansible-lint --profile production" check_lint
run "ansible: example inventory disarms the timer" check_example_inventory
run "ansible: molecule test" check_molecule
run "ansible: no secret in molecule output" check_no_secret_in_output

end_checks deploy
