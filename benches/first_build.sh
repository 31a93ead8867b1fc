#!/usr/bin/env bash
# Times the README's two quick-start commands as a newcomer meets them: a fresh
# clone of HEAD, an empty cargo home (so crate downloads count) and an empty
# target directory, nothing else warm. Writes the result with its machine and
# commit to bench-results/first-build/<date>-<host>-<commit>.txt.
#
#   benches/first_build.sh            # both commands
#   benches/first_build.sh main       # only `cargo run -p patron-server -- demo`
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

seconds() { # run "$@", print the wall-clock seconds it took, fail if it failed
    local start end
    start=$(date +%s.%N)
    "$@" >"$work/$label.log" 2>&1 || { echo "$label failed, log in $work/$label.log" >&2; tail -30 "$work/$label.log" >&2; exit 1; }
    end=$(date +%s.%N)
    awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f\n", b - a }'
}

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
} >"$out.tmp"

label=main
# The demo run from a script exits after its 30 s stream and final summary.
main_s=$(seconds cargo run -p patron-server -- demo)
build_line=$(grep -m1 'Finished' "$work/main.log" || true)
{
    echo
    echo "command: cargo run -p patron-server -- demo"
    echo "wall_seconds_to_demo_end: $main_s (the demo itself streams for 30 s)"
    echo "cargo: $build_line"
} >>"$out.tmp"

if [ "$which" = both ]; then
    label=tests
    tests_s=$(seconds tests/run)
    {
        echo
        echo "command: tests/run   (right after the command above, same target directory)"
        echo "wall_seconds: $tests_s"
        echo "cargo: $(grep -m1 'Finished' "$work/tests.log" || true)"
        echo "test results: $(grep -E '^test result:' "$work/tests.log" | awk '{p+=$4; f+=$6} END {print p " passed, " f " failed"}')"
    } >>"$out.tmp"
fi
mv "$out.tmp" "$out"
cat "$out"
echo "logs in $work (remove it when done: it holds a full target directory)"
