#!/usr/bin/env bash
# The purchase-model fits on UCI Online Retail (wholesale buyers, cancellations)
# beside lifetimes' fits of exactly the same customer summary (issue 18,
# item 5): where lifetimes converges and Patron does not, that is a bug; where
# both land on a bound, Patron says so. Two summaries: the calibration period
# of `benches/backtest.sh` (to 2011-09-10) and the whole file. Installs
# lifetimes into a virtualenv under ~/.cache (PyPI) on first use; not part of CI.
#
#   benches/compare/uci_fits_vs_lifetimes.sh
#
# Writes bench-results/compare/<date>-<host>-<commit>-uci-fits-<period>.json.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/patron-target}
venv=${PATRON_COMPARE_VENV:-$HOME/.cache/patron-compare-venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c "import lifetimes, pyarrow" 2>/dev/null || "$venv/bin/pip" install -q lifetimes pyarrow pandas
cargo build --release -q -p patron-server --bin patron
patron="$CARGO_TARGET_DIR/release/patron"
commit=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- crates Cargo.toml Cargo.lock || commit="$commit-dirty"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for period in calibration whole; do
  end=()
  [ "$period" = calibration ] && end=(--observation-end 2011-09-10)
  "$patron" score --input fixtures/online_retail/online_retail.csv.gz --currency GBP "${end[@]}" \
    --top 0 --out "$work/$period" > "$work/$period.txt"
  out="bench-results/compare/$(date -u +%Y-%m-%d)-$(hostname -s)-$commit-uci-fits-$period.json"
  "$venv/bin/python" benches/compare/uci_fits_vs_lifetimes.py "$work/$period/customers.parquet" \
    "$work/$period/model_params.json" "$out" "benches/compare/uci_fits_vs_lifetimes.sh ($period)"
  sed -n '/^Models/,/gamma_gamma/p' "$work/$period.txt"
  echo "$period: $out"
done
