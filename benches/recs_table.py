#!/usr/bin/env python3
"""Prints the Markdown table of the eval-recs runs in bench-results/recs/.

    python3 benches/recs_table.py [bench-results/recs]
"""
import json
import pathlib
import sys

folder = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "bench-results/recs")
print("| run | config | Patron HR@10 | NDCG@10 | explore HR@10 | explore NDCG@10 | buy again HR / NDCG | item-kNN explore HR / NDCG |")
print("|---|---|---|---|---|---|---|---|")
for path in sorted(folder.glob("*.json")):
    run = json.loads(path.read_text())
    methods = {m["method"]: m for m in run["result"]["methods"]}
    p, b, k = methods["patron"], methods["buy_again"], methods["item_knn"]
    c = run["config"]
    config = (f'{c["similarity"]}, history {c["history"]}, {c["counters_per_product"]} counters, '
              f'{c["neighbours"]} neighbours, trend^{c.get("trend_exponent")}, cross {c["cross_basket_weight"]}')
    print(f'| {path.stem} | {config} | {p["all"]["hit_rate"]:.4f} | {p["all"]["ndcg"]:.4f} | '
          f'{p["explore"]["hit_rate"]:.4f} | {p["explore"]["ndcg"]:.4f} | '
          f'{b["all"]["hit_rate"]:.4f} / {b["all"]["ndcg"]:.4f} | {k["explore"]["hit_rate"]:.4f} / {k["explore"]["ndcg"]:.4f} |')
