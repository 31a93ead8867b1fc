#!/usr/bin/env bash
# Scaling study (issue 6): in-process ingest, batch latency, memory, refit and
# recovery from 10k to 10M customers at 2 shards, and 1 → 4 shards at 1M
# (benches/examples/scaling.rs says what each number is). Needs about 8 GiB
# of RAM (7.6 GB RSS at 10M customers) and took 5 min 33 s on 2 cores here.
#
#   benches/scaling.sh [customers,…] [shards,…]
#
# Writes bench-results/scaling/<UTC time>-<host>-<commit>.json (with a
# .meta.json beside it: machine, commit, command).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/patron-target}
cargo build --release -q -p patron-benches --example scaling
stamp=$(date -u +%Y%m%dT%H%M%S)-$(hostname -s)-$(git rev-parse --short HEAD)
out="bench-results/scaling/$stamp.json"
mkdir -p bench-results/scaling
"$CARGO_TARGET_DIR/release/examples/scaling" "$out" "$@"
python3 - "$out" "benches/scaling.sh $*" <<'PY'
import json, os, platform, subprocess, sys
out, command = sys.argv[1], sys.argv[2]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "")
mem = int(next(l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal"))) * 1024
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
fs = subprocess.run(["df", "-T", os.environ.get("TMPDIR", "/tmp")], capture_output=True, text=True).stdout.splitlines()[-1].split()[1]
meta = {"command": command, "commit": commit, "machine": {"host": platform.node(), "cores": os.cpu_count(), "memory_bytes": mem, "cpu": cpu, "data_dir_filesystem": fs}}
json.dump(meta, open(out.replace(".json", ".meta.json"), "w"), indent=1)
PY
echo "wrote $out"
