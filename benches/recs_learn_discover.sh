#!/bin/bash
# Learns the discover list's two weights on the tuning period only (UCI Online
# Retail cut at 2011-07-01): a grid over the neighbours' trend exponent and the
# weight of category-weighted popularity, keeping the pair with the best
# NDCG@10 of the discover list (ties: the lower weight). Prints the choice;
# the defaults in patron-recs (DiscoverWeights) are set from it by hand.
#
# Usage: benches/recs_learn_discover.sh [OUT_DIR]   (release build of `patron` first)
set -euo pipefail
cd "$(dirname "$0")/.."
patron=${PATRON:-${CARGO_TARGET_DIR:-target}/release/patron}
out=${1:-bench-results/recs/$(date -u +%Y%m%d)-$(hostname -s)-$(git rev-parse --short HEAD)-learn-discover}
mkdir -p "$out"
uci=(--input fixtures/online_retail/online_retail.csv.gz --currency GBP --customer-col CustomerID
     --time-col InvoiceDate --order-col InvoiceNo --product-col StockCode --quantity-col Quantity --price-col UnitPrice)
for trend in 0 0.5 1 1.5; do
  for weight in 0 0.001 0.003 0.01 0.03 0.1; do
    "$patron" eval-recs "${uci[@]}" --data-until 2011-07-01 --discover-trend-exponent "$trend" \
      --discover-popular-weight "$weight" --out "$out/trend$trend-popular$weight.json" > /dev/null 2>&1
    echo "trend $trend, popular weight $weight done"
  done
done
python3 - "$out" <<'PY'
import json, pathlib, sys
rows = []
for path in sorted(pathlib.Path(sys.argv[1]).glob("trend*.json")):
    r = json.loads(path.read_text())
    c, m = r["config"], {x["method"]: x for x in r["result"]["methods"]}
    e = m["patron"]["explore"]
    rows.append((e["ndcg"], -c["discover_popular_weight"], e["hit_rate"], c["discover_trend_exponent"], c["discover_popular_weight"]))
rows.sort(reverse=True)
lines = ["| discover trend exponent | popular weight | explore HR@10 | explore NDCG@10 |", "|---|---|---|---|"]
lines += [f"| {t} | {w} | {hr:.4f} | {ndcg:.4f} |" for ndcg, _, hr, t, w in rows]
best = rows[0]
lines.append(f"\nchosen (best NDCG@10 of the discover list on the tuning period): trend exponent {best[3]}, popular weight {best[4]}")
text = "\n".join(lines)
(pathlib.Path(sys.argv[1]) / "summary.md").write_text(text + "\n")
print(text)
PY
