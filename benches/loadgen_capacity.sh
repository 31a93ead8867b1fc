#!/usr/bin/env bash
# Capacity run with `patron loadgen` against a release `patron serve` on a
# fresh data directory (durable acks on): first closed loop (as fast as the
# server accepts), then open loop at half the rate measured, for freshness
# at half of peak (DESIGN.md §6), then the same half-peak load again while
# an analyst runs the GROUP BY over all customers back to back
# (`--sql-every 0s`): freshness must hold while SQL runs, and the result
# also reports the query latency and the longest scan lock. After the closed
# loop the server is killed with SIGKILL (no shutdown snapshot) and started
# again on its directory, so the whole log is replayed: the recovery line it
# logs (events, replay time and rate) goes to <stamp>-recovery.txt. Each run
# writes its JSON under bench-results/loadgen/ and the index is regenerated.
#
#   benches/loadgen_capacity.sh [duration=30s] [customers=1000000]
#
# The load generator shares the machine with the server: on 2 cores the
# figures are a floor for what a separate client machine would measure.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/patron-target}
duration=${1:-30s}
customers=${2:-1000000}
cargo build --release -q -p patron-server
patron="$CARGO_TARGET_DIR/release/patron"
work=$(mktemp -d)
server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT
# start_server DIR [LOG]: a server on $work/DIR, its output in $work/LOG.{out,err} (LOG defaults to DIR).
start_server() {
  local log=${2:-$1}
  "$patron" serve --data-dir "$work/$1" --http 127.0.0.1:0 --pg 127.0.0.1:0 --flight 127.0.0.1:0 \
    --refit-interval 3600 --snapshot-interval 3600 > "$work/$log.out" 2> "$work/$log.err" &
  server=$!
  for _ in $(seq 600); do grep -q "listening on" "$work/$log.out" 2>/dev/null && break; sleep 0.1; done
  url=$(sed -n 's/^listening on //p' "$work/$log.out")
}
stamp=$(date -u +%Y%m%dT%H%M%S)-$(hostname -s)-$(git rev-parse --short HEAD)
start_server peak
"$patron" loadgen --url "$url" --rate 0 --duration "$duration" --connections 4 --batch 2000 \
  --customers "$customers" --server-pid "$server" --out "bench-results/loadgen/$stamp-closed-loop.json"
peak=$(python3 -c "import json,sys; print(int(json.load(open(sys.argv[1]))['events_per_s']))" "bench-results/loadgen/$stamp-closed-loop.json")
kill -9 "$server"; wait "$server" 2>/dev/null || true
start_server peak peak-restart
{ echo "# $patron serve on the closed loop's directory after SIGKILL (commit $(git rev-parse --short HEAD))"
  grep -o 'recovered .*' "$work/peak-restart.err" | sed 's/\x1b\[[0-9;]*m//g' || echo "no recovery line in the log"; } > "bench-results/loadgen/$stamp-recovery.txt"
cat "bench-results/loadgen/$stamp-recovery.txt"
kill "$server"; wait "$server" 2>/dev/null || true
start_server half
"$patron" loadgen --url "$url" --rate $((peak / 2)) --duration "$duration" --connections 4 --batch 1000 \
  --customers "$customers" --server-pid "$server" --out "bench-results/loadgen/$stamp-half-peak.json"
kill "$server"; wait "$server" 2>/dev/null || true
start_server half-sql
"$patron" loadgen --url "$url" --rate $((peak / 2)) --duration "$duration" --connections 4 --batch 1000 \
  --customers "$customers" --sql-every 0s --server-pid "$server" --out "bench-results/loadgen/$stamp-half-peak-with-sql.json"
kill "$server"; wait "$server" 2>/dev/null || true; server=""
python3 benches/summarize.py --index bench-results
