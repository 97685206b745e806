# Shared by ci/check-package.sh and ci/check-deploy.sh: one PASS/FAIL line
# per check, and the closing count. The caller may set CHECK_FILTER (a
# regex: only checks whose names match run; setup checks always run).

# begin_checks NAME: a scratch folder in $WORK (removed on exit), the counters.
begin_checks() {
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/check-$1.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
    START=$(date +%s)
    passed=0
    failed=0
}

# end_checks NAME: "NAME checks took Ns", "NAME: N passed, M failed"; fails if any did.
end_checks() {
    echo "$1 checks took $(( $(date +%s) - START ))s"
    echo "$1: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}

# run NAME COMMAND...: runs COMMAND with its output in a log; one line of result.
run() {
    local name=$1; shift
    case "$name" in
        setup:*) ;;
        *) if [ -n "${CHECK_FILTER:-}" ] && ! [[ "$name" =~ $CHECK_FILTER ]]; then return 0; fi ;;
    esac
    local log t0
    log="$WORK/$(echo "$name" | tr -c 'A-Za-z0-9_-' '_').log"
    t0=$(date +%s)
    if "$@" >"$log" 2>&1; then
        passed=$((passed + 1))
        printf 'PASS  %-44s (%ss)%s\n' "$name" "$(( $(date +%s) - t0 ))" "$(detail "$log")"
    else
        failed=$((failed + 1))
        printf 'FAIL  %-44s (%ss)%s\n' "$name" "$(( $(date +%s) - t0 ))" "$(detail "$log")"
        sed 's/\x1b\[[0-9;]*m//g' "$log" | tail -n 40 | sed 's/^/      | /'
    fi
}

# A check may leave a one-line summary in the log as "DETAIL: ...".
detail() { local d; d=$(grep -m1 '^DETAIL: ' "$1" | sed 's/^DETAIL: /  /'); printf '%s' "$d"; }
