#!/usr/bin/env bash
# `patron backtest` on the real data sets, filed with provenance under
# bench-results/backtest/<date>-<host>-<commit>-<data>/: the report, both
# plots, the printed table and the command. Not part of CI (tests/e2e/backtest.rs
# checks the CDNOW numbers against lifetimes there).
#
#   benches/backtest.sh            # CDNOW (Fader, Hardie & Lee's split) and UCI Online Retail
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/patron-target}
cargo build --release -q -p patron-server --bin patron
patron="$CARGO_TARGET_DIR/release/patron"
commit=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- crates Cargo.toml Cargo.lock || commit="$commit-dirty"
run() {
  local name=$1
  shift
  local out="bench-results/backtest/$(date -u +%Y-%m-%d)-$(hostname -s)-$commit-$name"
  mkdir -p "$out"
  echo "patron backtest $* --out $out" > "$out/command.txt"
  {
    echo "commit: $commit"
    echo "date: $(date -u +%FT%TZ)"
    echo "cores: $(nproc)"
    free -b | awk '/Mem:/{print "memory_bytes: " $2}'
    lscpu | grep -E '^Model name' || true
  } > "$out/machine.txt"
  # The customers file is large and derived; keep the report, plots and transcript.
  local status=0
  "$patron" backtest "$@" --out "$out" > "$out/transcript.txt" 2>&1 || status=$?
  rm -f "$out/customers.parquet"
  echo "exit status: $status" >> "$out/transcript.txt"
  echo "$name: exit $status, in $out"
}
run cdnow --input fixtures/cdnow/cdnow_transactions.csv --currency USD \
  --calibration-end 1997-09-30 --holdout-end 1998-06-30 --time-unit weeks --model bgnbd
run uci --input fixtures/online_retail/online_retail.csv.gz --currency GBP \
  --calibration-end 2011-09-10 --holdout-end 2011-12-09
