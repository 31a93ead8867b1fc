#!/usr/bin/env bash
# The "just use Postgres" baseline for ingest. The same synthetic events
# (`patron loadgen --dump`: purchases with line items, refunds, consent) are
# loaded twice:
#   - Patron: a release `patron serve` (durable acks, group commit) fed by
#     `patron replay` (4 connections × 2,048-event requests);
#   - PostgreSQL 15 (Debian package; started here on loopback in a temp dir,
#     fsync and synchronous_commit on): COPY in chunks of 50,000 events, each
#     chunk followed, in the same transaction, by an upsert that maintains
#     per-customer aggregates Patron also keeps (orders, purchase days,
#     revenue net of refunds, first and last purchase).
# Prints both rates and writes bench-results/compare/<date>-<host>-<commit>-ingest-vs-postgres.json.
#
#   benches/compare/ingest_vs_postgres.sh [events=1000000] [customers=100000]
#
# Not part of CI. Installs postgresql with apt-get if its binaries are missing.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/patron-target}
events=${1:-1000000}
customers=${2:-100000}
chunk=50000
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$pgbin" ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq postgresql
  pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi
cargo build --release -q -p patron-server
patron="$CARGO_TARGET_DIR/release/patron"
work=$(mktemp -d)
chmod 777 "$work"
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  [ -d "$work/pg" ] && runas "$pgbin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
# PostgreSQL refuses to run as root: use the postgres user when we are root.
runas() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

"$patron" loadgen --dump "$work/events.ndjson" --events "$events" --customers "$customers" --malformed 0 --duplicates 0
chmod 644 "$work/events.ndjson"

# --- Patron
"$patron" serve --data-dir "$work/data" --http 127.0.0.1:0 --pg 127.0.0.1:0 --flight 127.0.0.1:0 \
  --refit-interval 3600 --snapshot-interval 3600 > "$work/server.out" 2> "$work/server.err" &
server=$!
for _ in $(seq 200); do grep -q "listening on" "$work/server.out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$work/server.out")
"$patron" replay --input "$work/events.ndjson" --url "$url" --batch 2048 --connections 4 2>/dev/null | tee "$work/replay.txt"
patron_rate=$(sed -n 's/.*(\([0-9]*\) events\/s).*/\1/p' "$work/replay.txt")
kill "$server"; wait "$server" 2>/dev/null || true; server=""

# --- PostgreSQL
runas "$pgbin/initdb" -D "$work/pg" -A trust -U bench >/dev/null
runas "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -o "-h 127.0.0.1 -p 55432 -k $work -c fsync=on -c synchronous_commit=on" -w start >/dev/null
psql=(psql -h 127.0.0.1 -p 55432 -U bench -d postgres -v ON_ERROR_STOP=1 -q)
"${psql[@]}" <<'SQL'
CREATE UNLOGGED TABLE staging (doc jsonb);
CREATE TABLE events (doc jsonb);
CREATE TABLE customer_days (customer_id text, day date, PRIMARY KEY (customer_id, day));
CREATE TABLE customers (
  customer_id text PRIMARY KEY, orders bigint, purchase_days int, revenue numeric,
  first_purchase_at timestamptz, last_purchase_at timestamptz);
SQL
split -l "$chunk" "$work/events.ndjson" "$work/chunk-"
chmod 644 "$work"/chunk-*
start=$(date +%s.%N)
for f in "$work"/chunk-*; do
  "${psql[@]}" <<SQL
BEGIN;
TRUNCATE staging;
COPY staging FROM '$f' WITH (FORMAT csv, QUOTE E'\x01', DELIMITER E'\x02');
INSERT INTO events SELECT doc FROM staging;
CREATE TEMP TABLE e ON COMMIT DROP AS
  SELECT doc->>'customer_id' AS c, doc->>'type' AS t, to_timestamp((doc->>'timestamp')::bigint / 1000.0) AS at,
         CASE WHEN doc->>'type' = 'purchase' THEN
           (SELECT coalesce(sum((i->>'price')::numeric * coalesce((i->>'quantity')::numeric, 1)), 0) FROM jsonb_array_elements(doc->'items') i)
         WHEN doc->>'type' = 'refund' THEN -(doc->>'amount')::numeric ELSE 0 END AS amount
  FROM staging;
INSERT INTO customer_days SELECT DISTINCT c, at::date FROM e WHERE t = 'purchase' ON CONFLICT DO NOTHING;
INSERT INTO customers
SELECT c, count(*) FILTER (WHERE t = 'purchase'), 0, sum(amount),
       min(at) FILTER (WHERE t = 'purchase'), max(at) FILTER (WHERE t = 'purchase')
FROM e GROUP BY c
ON CONFLICT (customer_id) DO UPDATE SET
  orders = customers.orders + excluded.orders,
  revenue = customers.revenue + excluded.revenue,
  first_purchase_at = least(customers.first_purchase_at, excluded.first_purchase_at),
  last_purchase_at = greatest(customers.last_purchase_at, excluded.last_purchase_at);
UPDATE customers SET purchase_days = d.n
FROM (SELECT customer_id, count(*) AS n FROM customer_days WHERE customer_id IN (SELECT DISTINCT c FROM e) GROUP BY customer_id) d
WHERE customers.customer_id = d.customer_id;
COMMIT;
SQL
done
end=$(date +%s.%N)
pg_seconds=$(echo "$end - $start" | bc -l)
pg_rate=$(echo "$events / $pg_seconds" | bc -l)
pg_customers=$("${psql[@]}" -At -c "SELECT count(*) FROM customers")
printf 'PostgreSQL: %d events in %.1fs = %.0f events/s (%s customers)\n' "$events" "$pg_seconds" "$pg_rate" "$pg_customers"
printf 'Patron:     %s events/s\n' "$patron_rate"

commit=$(git rev-parse --short HEAD)
out="bench-results/compare/$(date -u +%Y-%m-%d)-$(hostname -s)-$commit-ingest-vs-postgres.json"
mkdir -p "$(dirname "$out")"
cat > "$out" <<JSON
{"command": "benches/compare/ingest_vs_postgres.sh $events $customers", "commit": "$commit", "when": "$(date -u +%FT%TZ)",
 "machine": {"cores": $(nproc), "cpu": "$(lscpu | sed -n 's/^Model name: *//p')", "memory_bytes": $(free -b | awk '/Mem:/{print $2}')},
 "events": $events, "customers": $customers, "postgres_version": "$("$pgbin/postgres" --version)",
 "patron_events_per_s": ${patron_rate:-0}, "postgres_events_per_s": $(printf '%.0f' "$pg_rate"),
 "postgres_chunk_events": $chunk, "ratio": $(echo "${patron_rate:-0} / $pg_rate" | bc -l)}
JSON
echo "wrote $out"
