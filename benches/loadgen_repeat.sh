#!/usr/bin/env bash
# Repeats the open-loop half-peak run N times, each against a fresh release
# server, to show how much the latency tail varies between runs (one run's
# p99 can hang on a single stall).
#
#   benches/loadgen_repeat.sh RATE [runs=3] [duration=20s] [customers=1000000]
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/patron-target}
rate=${1:?usage: benches/loadgen_repeat.sh RATE [runs] [duration] [customers]}
runs=${2:-3}; duration=${3:-20s}; customers=${4:-1000000}
cargo build --release -q -p patron-server
patron="$CARGO_TARGET_DIR/release/patron"
work=$(mktemp -d)
server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT
stamp=$(date -u +%Y%m%dT%H%M%S)-$(hostname -s)-$(git rev-parse --short HEAD)
for run in $(seq "$runs"); do
  "$patron" serve --data-dir "$work/$run" --http 127.0.0.1:0 --pg 127.0.0.1:0 --flight 127.0.0.1:0 \
    --refit-interval 3600 --snapshot-interval 3600 > "$work/$run.out" 2> "$work/$run.err" &
  server=$!
  for _ in $(seq 200); do grep -q "listening on" "$work/$run.out" 2>/dev/null && break; sleep 0.1; done
  url=$(sed -n 's/^listening on //p' "$work/$run.out")
  "$patron" loadgen --url "$url" --rate "$rate" --duration "$duration" --connections 4 --batch 1000 \
    --customers "$customers" --server-pid "$server" --out "bench-results/loadgen/$stamp-repeat$run-half-peak.json"
  kill "$server"; wait "$server" 2>/dev/null || true; server=""
done
