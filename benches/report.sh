#!/usr/bin/env bash
# Regenerates the capacity report, bench-results/README.md: the SVG plots from
# the newest results (benches/examples/plots.rs), then the tables
# (benches/summarize.py --index, with benches/capacity_report.py). Only reads
# results already recorded; benches/capacity.sh records new ones first.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/patron-target}
cargo run --release -q -p patron-benches --example plots -- bench-results
python3 benches/summarize.py --index bench-results
echo "wrote bench-results/README.md"
