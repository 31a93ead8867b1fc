#!/usr/bin/env bash
# The whole capacity run, then the report (bench-results/README.md):
#   1. criterion benches of the hot kernels (benches/record.sh);
#   2. HTTP load: closed loop, then open loop at half the peak (benches/loadgen_capacity.sh);
#   3. the scaling study, 10k → 10M customers and 1 → 4 shards (benches/scaling.sh);
#   4. the comparisons: Python lifetimes, PostgreSQL, DuckDB (benches/compare/);
#   5. plots and tables (benches/report.sh).
#
#   benches/capacity.sh            # everything: about 25 minutes on 2 cores (sum of the stages), 8 GiB RAM
#   benches/capacity.sh quick      # smaller sizes in a scratch clone, about 15 minutes: a smoke run, not for sizing
#
# Needs the Rust toolchain, python3 with venv, and for the comparisons network
# access to PyPI and Debian (lifetimes, duckdb, psycopg, PostgreSQL 15). The
# first run also builds everything in release (about 25 minutes, DESIGN.md §8).
# Run it on an otherwise idle machine: every number is wall-clock.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/patron-target}
if [ "${1:-}" = quick ]; then
  # Smoke run in a scratch clone of HEAD, so its small-size results never
  # replace the recorded ones; the report it writes stays in the clone.
  if [ -z "${PATRON_CAPACITY_SCRATCH:-}" ]; then
    scratch=$(mktemp -d)
    git clone -q . "$scratch"
    echo "quick run in $scratch (report: $scratch/bench-results/README.md)"
    cd "$scratch" && PATRON_CAPACITY_SCRATCH=1 exec benches/capacity.sh quick
  fi
  duration=10s; customers=100000; sizes=10000,100000,1000000; fit_customers=100000; sql_customers=1000000; pg_events=200000
  criterion=(engine wal)
else
  duration=30s; customers=1000000; sizes=10000,100000,1000000,10000000; fit_customers=1000000; sql_customers=10000000; pg_events=1000000
  criterion=(scoring engine wal recs sql)
fi
step() { echo; echo "== $* =="; }
step "criterion benches"
benches/record.sh "${criterion[@]}"
step "HTTP load"
benches/loadgen_capacity.sh "$duration" "$customers"
step "scaling study"
benches/scaling.sh "$sizes"
step "versus lifetimes"
benches/compare/fit_vs_lifetimes.sh "$fit_customers"
step "versus PostgreSQL"
benches/compare/ingest_vs_postgres.sh "$pg_events"
step "SQL at scale and versus DuckDB"
venv=${PATRON_COMPARE_VENV:-$HOME/.cache/patron-compare-venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q 'psycopg[binary]' duckdb pyarrow
PATH="$venv/bin:$PATH" cargo run --release -q -p patron-benches --features sql --example sql_capacity -- \
  "$sql_customers" "bench-results/sql/$(date -u +%Y%m%d)-$(hostname -s)-$(git rev-parse --short HEAD)-sql-capacity.json"
step "report"
benches/report.sh
