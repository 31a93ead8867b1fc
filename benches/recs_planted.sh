#!/bin/bash
# Recommendations on a shop no default was tuned on: the synthetic shop with
# planted tastes (a home category per customer, a complement per product;
# `patron loadgen --planted-tastes`), dumped to NDJSON and evaluated whole.
#
# Usage: benches/recs_planted.sh [OUT_DIR]   (release build of `patron` first)
set -euo pipefail
cd "$(dirname "$0")/.."
patron=${PATRON:-${CARGO_TARGET_DIR:-target}/release/patron}
out=${1:-bench-results/recs/$(date -u +%Y%m%d)-$(hostname -s)-$(git rev-parse --short HEAD)-planted-shop}
mkdir -p "$out"
events=$(mktemp --suffix .ndjson)
trap 'rm -f "$events"' EXIT
"$patron" loadgen --dump "$events" --events 400000 --customers 20000 --products 2000 --planted-tastes --seed 42 \
  > "$out/dump.txt" 2>&1
"$patron" eval-recs --input "$events" --currency EUR --out "$out/eval.json" > "$out/eval.txt" 2>&1
echo "wrote $out"
