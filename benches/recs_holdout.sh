#!/bin/bash
# The recommendation defaults' temporal hold-out on UCI Online Retail.
#
# 1. Tuning period: the data cut at 2011-07-01 (nothing later is replayed).
#    Each default is swept one at a time around its value; the defaults are
#    whatever this period favours (by NDCG@10 of the main list).
# 2. Held-out period: the whole file, scoring only customers whose last
#    basket falls on or after 2011-07-01. Run once, with the defaults.
# 3. For reference, the whole file in sample (the README's older table).
#
# Usage: benches/recs_holdout.sh [OUT_DIR]   (release build of `patron` first)
set -euo pipefail
cd "$(dirname "$0")/.."
patron=${PATRON:-${CARGO_TARGET_DIR:-target}/release/patron}
out=${1:-bench-results/recs/$(date -u +%Y%m%d)-$(hostname -s)-$(git rev-parse --short HEAD)-holdout}
mkdir -p "$out/tuning"
uci=(--input fixtures/online_retail/online_retail.csv.gz --currency GBP --customer-col CustomerID
     --time-col InvoiceDate --order-col InvoiceNo --product-col StockCode --quantity-col Quantity --price-col UnitPrice)
while read -r name flags; do
  # shellcheck disable=SC2086
  "$patron" eval-recs "${uci[@]}" --data-until 2011-07-01 $flags --out "$out/tuning/$name.json" > "$out/tuning/$name.txt" 2>&1
  echo "tuning $name done"
done <<'LIST'
default
bias0.25 --repurchase-bias 0.25
bias1 --repurchase-bias 1.0
bw0.02 --bought-with-weight 0.02
bw0.1 --bought-with-weight 0.1
trend0 --trend-exponent 0
trend1 --trend-exponent 1.0
rhl4 --repeat-half-life 4
rhl16 --repeat-half-life 16
hist32 --history 32
hist128 --history 128
shrink2 --shrinkage 2
shrink10 --shrinkage 10
LIST
"$patron" eval-recs "${uci[@]}" --test-from 2011-07-01 --out "$out/heldout-2011H2.json" > "$out/heldout-2011H2.txt" 2>&1
"$patron" eval-recs "${uci[@]}" --out "$out/in-sample-whole-file.json" > "$out/in-sample-whole-file.txt" 2>&1
echo "wrote $out"
