#!/usr/bin/env bash
# First HTTP capacity run: a release `patron serve` on a fresh data directory
# (ext4 or whatever $TMPDIR is on), fed by `patron replay` at full speed with
# NDJSON batches of 8,192 synthetic events, durable acks on. Files the result
# under bench-results/<date>-<host>-<commit>-http/.
#
#   benches/http_capacity.sh [events=1000000] [customers=200000]
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/patron-target}
events=${1:-1000000}
customers=${2:-200000}
cargo build --release -q -p patron-server -p patron-workload --examples --bins
bin="$CARGO_TARGET_DIR/release"
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
"$bin/examples/shop_events" "$events" "$customers" 7 > "$work/events.ndjson"
"$bin/patron" serve --data-dir "$work/data" --http 127.0.0.1:0 --refit-interval 3600 --snapshot-interval 3600 \
  > "$work/server.out" 2> "$work/server.err" &
server=$!
for _ in $(seq 100); do grep -q "listening on" "$work/server.out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$work/server.out")
commit=$(git rev-parse --short HEAD)
out="bench-results/$(date -u +%Y-%m-%d)-$(hostname -s)-$commit-http"
mkdir -p "$out"
cmd="patron replay --input events.ndjson --url $url --batch 2048 --connections 4   # $events events, $customers customers, shop_events seed 7"
echo "$cmd" > "$out/command.txt"
/usr/bin/time -v "$bin/patron" replay --input "$work/events.ndjson" --url "$url" --batch 2048 --connections 4 \
  2> "$work/replay.err" | tee "$out/replay.txt"
grep -E "Maximum resident|Elapsed" "$work/replay.err" > "$out/replay-time.txt" || true
grep -E "rejected" "$work/replay.err" | head -20 > "$out/rejections.txt" || true
# Freshness: at half the measured rate, with 1,000-event requests, each answer
# comes after its events are durable, applied and rescored, so request latency
# bounds event -> score visibility (a fresh data directory, so nothing is a duplicate).
rate=$(sed -n 's/.*(\([0-9]*\) events\/s).*/\1/p' "$out/replay.txt")
half=$(( ${rate:-100000} / 2 ))
kill "$server"; wait "$server" 2>/dev/null || true
"$bin/patron" serve --data-dir "$work/data2" --http 127.0.0.1:0 --refit-interval 3600 --snapshot-interval 3600 \
  > "$work/server2.out" 2> "$work/server2.err" &
server=$!
for _ in $(seq 100); do grep -q "listening on" "$work/server2.out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$work/server2.out")
echo "patron replay --input events.ndjson --url URL --rate $half --batch 1000   # half of the measured peak" >> "$out/command.txt"
"$bin/patron" replay --input "$work/events.ndjson" --url "$url" --rate "$half" --batch 1000 2>/dev/null | tee "$out/replay-half-rate.txt"
curl -s "$url/metrics" > "$out/metrics.txt"
server_rss_kb=$(awk '/VmHWM/{print $2}' "/proc/$server/status")
{
  echo "commit: $commit"; echo "date: $(date -u +%FT%TZ)"; rustc -V; echo "cores: $(nproc)"
  lscpu | grep -E '^(Model name|Hypervisor vendor)' || true
  echo "filesystem of the data directory: $(df -T "$work" | awk 'NR==2{print $1, $2}')"
  echo "server peak RSS (VmHWM): ${server_rss_kb} kB"
} > "$out/machine.txt"
python3 benches/summarize.py --index bench-results
echo "recorded in $out"
