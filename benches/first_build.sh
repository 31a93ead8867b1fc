#!/usr/bin/env bash
# Times the README's two quick-start commands as a newcomer meets them: a fresh
# clone of HEAD, an empty cargo home (so crate downloads count) and an empty
# target directory, nothing else warm. Writes the result with its machine and
# commit to bench-results/first-build/<date>-<host>-<commit>.txt.
#
#   benches/first_build.sh            # both commands, then an incremental build
#   benches/first_build.sh main       # only `cargo run -p patron-server -- demo` (and the incremental build)
#
# Run it on an otherwise idle machine: it is wall-clock, and a concurrent build
# steals one of the two cores. It takes 30 minutes or more.
set -euo pipefail
repo="$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)"
which="${1:-both}"
commit=$(git -C "$repo" rev-parse --short HEAD)
work="$(mktemp -d /tmp/patron-first-build.XXXXXX)"
out="$repo/bench-results/first-build/$(date -u +%Y-%m-%d)-$(hostname -s)-$commit.txt"
mkdir -p "$(dirname "$out")"

git clone --quiet --no-local "$repo" "$work/clone"
export CARGO_HOME="$work/cargo-home"
export CARGO_TARGET_DIR="$work/target"
export CARGO_TERM_COLOR=never
unset RUSTFLAGS
cd "$work/clone"

# Runs "$@" with every output line stamped with the seconds since the start
# (into $work/$label.log), prints the total seconds, records the exit status.
seconds() {
    local start_us now_us tenths status
    start_us=${EPOCHREALTIME/./}
    set +e
    "$@" 2>&1 | while IFS= read -r line; do
        now_us=${EPOCHREALTIME/./}
        tenths=$(( (now_us - start_us) / 100000 ))
        printf '%6d.%d %s\n' $((tenths / 10)) $((tenths % 10)) "$line"
    done >"$work/$label.log"
    status=${PIPESTATUS[0]}
    set -e
    tenths=$(( (${EPOCHREALTIME/./} - start_us) / 100000 ))
    echo "$status" >"$work/$label.status"
    if [ "$status" -ne 0 ]; then
        echo "$label failed ($status), log in $work/$label.log" >&2; tail -30 "$work/$label.log" >&2
    fi
    printf '%d.%d\n' $((tenths / 10)) $((tenths % 10))
}

# "passed" or "FAILED (exit N)" for the last run of $label.
outcome() { local s; s=$(cat "$work/$label.status"); [ "$s" -eq 0 ] && echo passed || echo "FAILED (exit $s)"; }

# Seconds (from the log's stamps) at the first line matching $1.
stamp_of() { grep -m1 -E "^ *[0-9.]+ .*$1" "$work/$label.log" | awk '{print $1}'; }

{
    echo "# First build from a fresh clone (benches/first_build.sh)"
    echo "commit: $commit"
    echo "date: $(date -u +%FT%TZ)"
    echo "host: $(hostname -s)"
    rustc -V
    echo "cores: $(nproc)"
    free -b | awk '/Mem:/{print "memory_bytes: " $2}'
    lscpu | grep -E '^(Model name|Hypervisor vendor)' || true
    echo "cargo home and target directory: empty at the start"
    for tool in psql chromium; do
        command -v "$tool" >/dev/null && echo "already installed: $tool (tests/run skips its apt install)"
    done
} >"$out.tmp"

label=main
# The demo run from a script exits after its 30 s stream and final summary.
main_s=$(seconds cargo run -p patron-server -- demo)
{
    echo
    echo "command: cargo run -p patron-server -- demo"
    echo "seconds_to_serving: $(stamp_of 'listening on http') (the demo's API answers from here)"
    echo "seconds_to_demo_end: $main_s (the demo streams for 30 s after it starts serving)"
    echo "outcome: $(outcome)"
    echo "cargo: $(grep -m1 'Finished' "$work/main.log" | sed 's/^ *[0-9.]* *//')"
    echo "crates downloaded: $(grep -c 'Downloaded ' "$work/main.log")"
} >>"$out.tmp"

if [ "$which" = both ]; then
    label=tests
    tests_s=$(seconds tests/run)
    {
        echo
        echo "command: tests/run   (right after the command above, same target directory)"
        echo "wall_seconds: $tests_s"
        echo "outcome: $(outcome)"
        echo "seconds_to_cargo_test: $(stamp_of 'Compiling|Finished') (setup: apt and pip installs before it)"
        echo "cargo: $(grep -m1 'Finished' "$work/tests.log" | sed 's/^ *[0-9.]* *//')"
        echo "test results: $(grep -E '^ *[0-9.]+ test result:' "$work/tests.log" | awk '{p+=$5; f+=$7} END {print p " passed, " f " failed"}')"
    } >>"$out.tmp"
fi
# A code change deep in the stack: everything above patron-state recompiles and relinks.
label=incremental
sed -i 's/pub const DEFAULT_HISTORY: usize = \([0-9]*\);/pub const DEFAULT_HISTORY: usize = \1 + 1;/' crates/patron-state/src/record.rs
git diff --quiet crates/patron-state/src/record.rs && { echo "the incremental change did not apply" >&2; exit 1; }
incremental_s=$(seconds cargo build -p patron-server)
git checkout --quiet crates/patron-state/src/record.rs
{
    echo
    echo "command: cargo build -p patron-server   (after changing DEFAULT_HISTORY in crates/patron-state/src/record.rs from N to N + 1)"
    echo "wall_seconds: $incremental_s"
    echo "outcome: $(outcome)"
} >>"$out.tmp"
mv "$out.tmp" "$out"
cat "$out"
echo "logs in $work (remove it when done: it holds a full target directory)"
