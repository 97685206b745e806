#!/usr/bin/env bash
# Builds the Debian package and checks it the way an admin meets it: lintian,
# install with dpkg, run the demo with /usr/bin/media-offload, the man page
# and bash completion as installed, systemd-analyze verify on the installed
# units, nothing enabled by the install, then remove and purge, leaving
# nothing behind.
#
#   ci/check-package.sh
#
# Installs what it needs (cargo-deb, pinned below; lintian, bash-completion,
# man-db and systemd from Debian) and skips what is already there. Runs as
# root, and installs and purges the package on this machine: a
# media-offload package already installed is purged first.
#
# Prints one PASS/FAIL line per check, the log tail of a failed one, the
# path of the .deb, and ends with "package: N passed, M failed"; exits
# non-zero on any failure.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
CARGO_DEB_VERSION=3.8.0
PKG=media-offload
UNITS=(media-offload.service media-offload.timer media-offload-purge.service media-offload-purge.timer)
export DEBIAN_FRONTEND=noninteractive

DEB=""

# shellcheck source=ci/checks.sh
. "$ROOT/ci/checks.sh"
begin_checks package

# --- setup ---------------------------------------------------------------------

setup_tools() {
    local missing=() cmd pkg
    for cmd_pkg in lintian:lintian systemd-analyze:systemd man:man-db gzip:gzip; do
        cmd=${cmd_pkg%%:*}; pkg=${cmd_pkg#*:}
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ -f /usr/share/bash-completion/bash_completion ] || missing+=(bash-completion)
    if [ ${#missing[@]} -gt 0 ]; then
        apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" || return 1
    fi
    if [ "$(cargo deb --version 2>/dev/null)" != "$CARGO_DEB_VERSION" ]; then
        cargo install --locked --quiet cargo-deb --version "$CARGO_DEB_VERSION" || return 1
    fi
    echo "DETAIL: cargo-deb $(cargo deb --version), $(lintian --version)"
}

# --- build ---------------------------------------------------------------------

build_deb() {
    local out
    out=$(cargo deb --locked 2>&1) || { echo "$out"; return 1; }
    echo "$out"
    DEB=$(echo "$out" | tail -n 1)
    case "$DEB" in /*.deb) ;; *) echo "cargo deb printed no .deb path"; return 1 ;; esac
    echo "DETAIL: ${DEB#"$ROOT"/} ($(stat -c %s "$DEB") bytes)"
}

# The lean binary (docs/design.md): under 15 MB, one HTTP/TLS stack for S3,
# no SSO clients, no regex engine. A dependency change that brings one back
# fails here.
# 15.8 MB with the Swift backend (ureq) and the Dendrite databases.
MAX_BINARY_BYTES=17000000
check_lean() {
    local x="$WORK/lean" size tree bad
    mkdir -p "$x" && dpkg-deb --fsys-tarfile "$DEB" | tar -x -C "$x" ./usr/bin/media-offload || return 1
    size=$(stat -c %s "$x/usr/bin/media-offload")
    [ "$size" -lt "$MAX_BINARY_BYTES" ] || { echo "/usr/bin/media-offload is $size bytes, not under $MAX_BINARY_BYTES"; return 1; }
    tree=$(cargo tree --locked -e normal --target x86_64-unknown-linux-gnu --prefix none) || return 1
    bad=$(grep -E '^(hyper v0\.|h2 v0\.3|rustls v0\.21|ring v|aws-sdk-sso|aws-sdk-ssooidc|regex v)' <<<"$tree" | sort -u)
    if [ -n "$bad" ]; then echo "linked again: $bad"; return 1; fi
    echo "DETAIL: $size bytes; no hyper 0.x, rustls 0.21, ring, SSO or regex"
}

# The files an admin expects, and the units exactly as in systemd/ (which are
# the Ansible role's rendering with its defaults: ci/check-deploy.sh).
check_contents() {
    local x="$WORK/extract" rc=0 f u
    dpkg-deb -c "$DEB" || return 1
    dpkg-deb -I "$DEB" || return 1
    dpkg-deb -x "$DEB" "$x" || return 1
    for f in usr/bin/media-offload usr/share/man/man1/media-offload.1.gz \
             usr/share/bash-completion/completions/media-offload \
             usr/share/zsh/vendor-completions/_media-offload \
             usr/share/fish/vendor_completions.d/media-offload.fish \
             usr/share/doc/media-offload/README.md usr/share/doc/media-offload/copyright \
             usr/share/doc/media-offload/changelog.Debian.gz \
             usr/share/doc/media-offload/docs/operations.md usr/share/doc/media-offload/docs/design.md \
             usr/share/doc/media-offload/examples/config.yaml.example; do
        [ -f "$x/$f" ] || { echo "missing: /$f"; rc=1; }
    done
    for u in "${UNITS[@]}"; do
        cmp "systemd/$u" "$x/lib/systemd/system/$u" || { echo "lib/systemd/system/$u differs from systemd/$u"; rc=1; }
        grep -q '^ExecStart=/usr/bin/media-offload ' "$x/lib/systemd/system/$u" 2>/dev/null ||
            case "$u" in *.service) echo "$u: ExecStart is not /usr/bin/media-offload"; rc=1 ;; esac
    done
    # Nothing in /etc: the package ships no configuration, so nothing is
    # enabled or configured behind the admin's back.
    if [ -d "$x/etc" ]; then echo "the package ships files in /etc"; rc=1; fi
    [ $rc -eq 0 ] && echo "DETAIL: binary, man page, 3 completions, ${#UNITS[@]} units (= systemd/), docs"
    return $rc
}

check_lintian() {
    local out
    # --fail-on error,warning: any E: or W: tag fails; I: tags are shown.
    out=$(lintian --info --display-info --fail-on error,warning "$DEB" 2>&1)
    local rc=$?
    echo "$out"
    [ $rc -eq 0 ] || return 1
    echo "DETAIL: $(echo "$out" | grep -c '^[EW]:') errors/warnings, $(echo "$out" | grep -c '^I:') info"
}

# --- install, use, remove -------------------------------------------------------------

# Every path a package (or its maintainer scripts) could leave behind.
snapshot() {
    find /usr /etc /var /opt /srv -xdev \
        \( -path /var/log -o -path /var/lib/dpkg -o -path /var/lib/apt -o -path /var/cache/apt \
           -o -path /var/cache/debconf -o -path /var/cache/man -o -path /var/tmp -o -path /var/lib/systemd/timers \) -prune \
        -o -print 2>/dev/null | LC_ALL=C sort
}

check_install() {
    dpkg --purge "$PKG" >/dev/null 2>&1 || true
    snapshot >"$WORK/before.txt"
    # dpkg -i, as an admin would; if a dependency the .deb declares is
    # missing, apt brings it and dpkg configures the package.
    if ! dpkg -i "$DEB"; then
        apt-get update -qq && apt-get install -f -y -qq --no-install-recommends || return 1
    fi
    dpkg-query -W -f='${Status} ${Version}\n' "$PKG" | tee "$WORK/status" | grep -q '^install ok installed ' || return 1
    # Installing enables and starts nothing: no timer symlinks anywhere.
    local enabled
    enabled=$(find /etc/systemd -name 'media-offload*' 2>/dev/null)
    if [ -n "$enabled" ]; then echo "the install enabled units: $enabled"; return 1; fi
    echo "DETAIL: $(cat "$WORK/status"), no unit enabled"
}

check_demo() {
    local d="$WORK/demo"
    /usr/bin/media-offload --version || return 1
    (cd "$WORK" && /usr/bin/media-offload --no-progress demo --dir "$d" --files 200) || return 1
    echo "DETAIL: /usr/bin/media-offload demo: migrate and check on 200 media"
}

# The first-run dry run the docs give (docs/operations.md, README.md), with
# the installed example config pointed at the demo: it runs, and changes
# nothing of the homeserver, its media or the store.
check_dry_run() {
    local d="$WORK/demo" cfg="$WORK/config.yaml"
    sed -e "s|^homeserver_config_path: .*|homeserver_config_path: $d/homeserver.yaml|" \
        -e "s|^cache_db: .*|cache_db: $d/cache.db|" \
        -e "s|^# bucket: .*|bucket: $d/object-store|" \
        /usr/share/doc/media-offload/examples/config.yaml.example >"$cfg" || return 1
    (cd "$d" && find . -type f ! -name cache.db.lock -exec sha256sum {} + | LC_ALL=C sort) >"$WORK/demo-before" || return 1
    /usr/bin/media-offload --config "$cfg" --cache-db "$WORK/dry-run.db" migrate --dry-run || return 1
    (cd "$d" && find . -type f ! -name cache.db.lock -exec sha256sum {} + | LC_ALL=C sort) >"$WORK/demo-after" || return 1
    diff -u "$WORK/demo-before" "$WORK/demo-after" || { echo "the dry run changed the demo"; return 1; }
    echo "DETAIL: migrate --dry-run with the example config; $(wc -l <"$WORK/demo-after") files unchanged"
}

check_man_installed() {
    local page text
    page=$(man -w media-offload) || return 1
    [ "$page" = /usr/share/man/man1/media-offload.1.gz ] || { echo "man -w: $page"; return 1; }
    # Rendered with man's default groff warnings (what lintian checks): any
    # warning is a broken page.
    text=$(MANWIDTH=80 man --warnings media-offload 2>"$WORK/man-warnings") || return 1
    if [ -s "$WORK/man-warnings" ]; then cat "$WORK/man-warnings"; return 1; fi
    local s
    for s in NAME SYNOPSIS COMMANDS 'EXIT STATUS' ENVIRONMENT FILES EXAMPLES; do
        grep -q "^$s\$" <<<"$text" || { echo "no $s section"; return 1; }
    done
    whatis media-offload 2>/dev/null || true
    echo "DETAIL: man media-offload: $page, no groff warnings"
}

# bash-completion loads the installed file on first TAB, by command name.
check_bash_completion() {
    local out
    out=$(bash --norc -c '
        source /usr/share/bash-completion/bash_completion
        _completion_loader media-offload
        spec=$(complete -p media-offload) || exit 1
        func=$(sed -n "s/.* -F \([^ ]*\) .*/\1/p" <<<"$spec")
        complete_words() {
            COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMPREPLY=()
            COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
            "$func" media-offload "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
            echo "${COMPREPLY[*]}"
        }
        complete_words media-offload purge --re
        complete_words media-offload upload /srv/media bucket --storage-class ""
    ') || { echo "$out"; return 1; }
    echo "$out"
    [ "$(sed -n 1p <<<"$out")" = "--remote-older-than --region" ] || { echo "purge --re<TAB> did not complete"; return 1; }
    grep -q '^STANDARD .*GLACIER_IR' <<<"$(sed -n 2p <<<"$out")" || { echo "--storage-class <TAB>: no classes"; return 1; }
    echo "DETAIL: purge --re<TAB>, upload --storage-class <TAB>"
}

# The units as installed, against the real root: the binary at ExecStart
# exists and any output (unknown keys, missing man pages) is a failure.
check_verify_installed() {
    local out u paths=()
    for u in "${UNITS[@]}"; do paths+=("/lib/systemd/system/$u"); done
    out=$(systemd-analyze verify "${paths[@]}" 2>&1)
    local rc=$?
    echo "$out"
    # Complaints about other packages' units on this machine (the test
    # services install keystone, whose unit orders itself after itself)
    # are not ours; anything else is.
    local ours
    ours=$(grep -v -E '^[A-Za-z0-9@_.:-]+\.(service|socket|target|timer|mount|path|slice): ' <<<"$out" \
        | cat - <(grep -E '^media-offload' <<<"$out") | sed '/^$/d' || true)
    [ $rc -eq 0 ] && [ -z "$ours" ] || return 1
    echo "DETAIL: ${#UNITS[@]} installed units, nothing said of them"
}

# Remove, then purge, after an admin enabled the timer: nothing may be left,
# not even the enablement symlinks.
check_remove_purge() {
    systemctl enable media-offload.timer 2>&1 || return 1
    [ -L /etc/systemd/system/timers.target.wants/media-offload.timer ] || { echo "the timer did not get enabled"; return 1; }
    dpkg --remove "$PKG" || return 1
    [ ! -e /usr/bin/media-offload ] || { echo "/usr/bin/media-offload left after remove"; return 1; }
    dpkg --purge "$PKG" || return 1
    if dpkg-query -W -f='${Status}\n' "$PKG" 2>/dev/null | grep -q 'installed\|config-files'; then
        dpkg-query -W -f='${Status}\n' "$PKG"; echo "still known to dpkg"; return 1
    fi
    snapshot >"$WORK/after.txt"
    if ! diff -u "$WORK/before.txt" "$WORK/after.txt"; then
        echo "files left behind (or removed) by install and purge"; return 1
    fi
    echo "DETAIL: removed and purged; $(wc -l <"$WORK/after.txt") paths as before"
}

# --- run -------------------------------------------------------------------------

run "setup: tools" setup_tools
run "build: cargo deb" build_deb   # sets DEB (run() calls it in this shell)
if [ -n "$DEB" ]; then
    run "package: contents" check_contents
    run "package: lean binary" check_lean
    run "package: lintian" check_lintian
    run "install: dpkg -i" check_install
    if dpkg-query -W -f='${Status}' "$PKG" 2>/dev/null | grep -q 'ok installed'; then
        run "installed: demo with /usr/bin/media-offload" check_demo
        run "installed: the documented dry run" check_dry_run
        run "installed: man media-offload" check_man_installed
        run "installed: bash completion" check_bash_completion
        run "installed: systemd-analyze verify" check_verify_installed
        run "remove and purge: nothing left" check_remove_purge
    fi
fi

[ -n "$DEB" ] && echo "deb: $DEB"
end_checks package
