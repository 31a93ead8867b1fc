#!/usr/bin/env bash
# Do HTTP handlers wait while ingest saturates the machine? Latency of the
# read endpoints (benches/probe/read_probe.py) on an idle server, then beside
# a closed-loop `patron loadgen` run (4 connections, batches of 2,000), each
# on a fresh release `patron serve`. Results: OUT-idle.json, OUT-load.json
# and the printed table.
#
#   benches/probe/read_probe.sh [patron binary] OUT
set -u
cd "$(git rev-parse --show-toplevel)"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/patron-target}
bin=${1:-$CARGO_TARGET_DIR/release/patron}; out=$2
lg=$CARGO_TARGET_DIR/release/patron
probe=benches/probe/read_probe.py
work=$(mktemp -d)
$bin serve --data-dir $work/d --http 127.0.0.1:0 --pg 127.0.0.1:0 --flight 127.0.0.1:0 --refit-interval 3600 --snapshot-interval 3600 > $work/out 2> $work/err &
srv=$!
for _ in $(seq 200); do grep -q "listening on" $work/out 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' $work/out)
# Some customers first (and a refreshed recommendation model) so that every probe has something to read.
$lg loadgen --url "$url" --rate 20000 --duration 5s --customers 100000 --prebuild-mb 16 --out $work/seed.json > /dev/null 2>&1
curl -s -X POST $url/v1/admin/recommendations/refresh > /dev/null
echo "== idle"; python3 $probe $url 10 $out-idle.json
$lg loadgen --url "$url" --rate 0 --duration 25s --connections 4 --batch 2000 --customers 1000000 --server-pid $srv --out $work/lg.json > $work/lg.out 2>&1 &
lgp=$!
sleep 20   # the bodies are built first (about 16 s)
echo "== under closed-loop ingest"; python3 $probe $url 15 $out-load.json
wait $lgp
python3 -c "import json;d=json.load(open('$work/lg.json'));print('ingest during the probe:', int(d['events_per_s']), 'ev/s', round(d['server_cpu_us_per_event'],2), 'us/event')"
kill $srv; wait $srv 2>/dev/null; rm -rf $work
