#!/usr/bin/env bash
# Model fit and CLV versus the Python `lifetimes` package on the same customer
# summary (DESIGN.md §6): time ratios and parameter agreement. Installs
# lifetimes into a virtualenv under ~/.cache (PyPI) on first use; not part of CI.
#
#   benches/compare/fit_vs_lifetimes.sh [customers=1000000] [runs=5]
#
# Writes bench-results/compare/<date>-<host>-<commit>-fit-vs-lifetimes.json.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/patron-target}
customers=${1:-1000000}
runs=${2:-5}
venv=${PATRON_COMPARE_VENV:-$HOME/.cache/patron-compare-venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c "import lifetimes" 2>/dev/null || "$venv/bin/pip" install -q lifetimes
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo run --release -q -p patron-benches --example fit_vs_lifetimes -- "$work" "$customers" "$runs"
out="bench-results/compare/$(date -u +%Y-%m-%d)-$(hostname -s)-$(git rev-parse --short HEAD)-fit-vs-lifetimes.json"
"$venv/bin/python" benches/compare/fit_vs_lifetimes.py "$work" "$out" "benches/compare/fit_vs_lifetimes.sh $*"
