#!/usr/bin/env bash
# Runs criterion benches in release and files the results with their provenance
# under bench-results/<date>-<host>-<commit>/: command, machine, raw criterion
# JSON and a summary table against the DESIGN.md §6 targets.
#
#   benches/record.sh            # the scoring benches
#   benches/record.sh scoring    # same, explicit
#   benches/record.sh sql        # Arrow batch build, SQL scan, aggregate, point lookup (DataFusion)
#   benches/record.sh http       # POST /v1/events against a release `patron serve` (crates/patron-server/benches)
#
# Run it on an otherwise idle machine: the numbers are wall-clock.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/patron-target}
benches=("${@:-scoring}")
commit=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- crates benches Cargo.toml Cargo.lock || commit="$commit-dirty"
out="bench-results/$(date -u +%Y-%m-%d)-$(hostname -s)-$commit"
mkdir -p "$out"
rm -rf "$CARGO_TARGET_DIR/criterion"
for bench in "${benches[@]}"; do
  features=""
  package=patron-benches
  [ "$bench" = sql ] && features=" --features sql" # DataFusion: about 20 minutes of release build the first time
  [ "$bench" = http ] && package=patron-server # against the built `patron` binary (it builds the server in release)
  cmd="cargo bench -p $package$features --bench $bench"
  echo "$cmd" >> "$out/command.txt"
  $cmd 2>&1 | tee "$out/$bench.log"
done
{
  echo "commit: $commit"
  echo "date: $(date -u +%FT%TZ)"
  rustc -V
  cargo -V
  echo "cores: $(nproc)"
  free -b | awk '/Mem:/{print "memory_bytes: " $2}'
  lscpu | grep -E '^(Model name|CPU\(s\)|Thread\(s\) per core|CPU max MHz|Hypervisor vendor)' || true
  echo "filesystem of \$TMPDIR (where the WAL bench writes): $(df -T "${TMPDIR:-/tmp}" | awk 'NR==2{print $1, $2}')"
} > "$out/machine.txt"
python3 benches/summarize.py "$CARGO_TARGET_DIR/criterion" "$out"
echo "recorded in $out"
