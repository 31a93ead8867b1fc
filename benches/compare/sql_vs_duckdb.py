"""Client side of benches/examples/sql_capacity.rs: over Patron's PostgreSQL
wire protocol (psycopg 3), times the GROUP BY aggregate and point lookups by
customer_id (extended protocol with a bound parameter, as a backend or BI
tool sends them); then times the same aggregate in DuckDB over the same rows
exported to Parquet. Prints one JSON object with p50/p90/p99/max in ms.

usage: sql_vs_duckdb.py PG_HOST PG_PORT PARQUET_FILE CUSTOMERS
"""
import json
import random
import sys
import time

import duckdb
import psycopg

AGGREGATE = "SELECT rfm_segment, count(*), avg(clv) FROM customers GROUP BY 1"


def summary(ms):
    ms = sorted(ms)
    pick = lambda p: ms[min(len(ms) - 1, round((len(ms) - 1) * p))]
    return {"runs": len(ms), "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": ms[-1]}


def timed(fn, runs):
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return out


def main():
    host, port, parquet, customers = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    rng = random.Random(20261123)
    with psycopg.connect(host=host, port=port, user="bench", dbname="patron", autocommit=True) as conn:
        cur = conn.cursor()
        # Warm-up, then the measured runs.
        cur.execute(AGGREGATE)
        cur.fetchall()
        aggregate = timed(lambda: (cur.execute(AGGREGATE), cur.fetchall()), 10)
        lookup_sql = "SELECT customer_id, clv, p_alive, rfm_segment FROM customers WHERE customer_id = %s"
        for _ in range(50):
            cur.execute(lookup_sql, (f"c{rng.randrange(customers)}",), prepare=True)
            cur.fetchall()
        keys = [f"c{rng.randrange(customers)}" for _ in range(5000)]
        lookups = []
        for key in keys:
            t = time.perf_counter()
            cur.execute(lookup_sql, (key,), prepare=True)
            rows = cur.fetchall()
            lookups.append((time.perf_counter() - t) * 1e3)
            assert len(rows) == 1, key
    db = duckdb.connect()
    db.execute(f"CREATE VIEW customers AS SELECT * FROM read_parquet('{parquet}')")
    db.execute(AGGREGATE).fetchall()
    duck = timed(lambda: db.execute(AGGREGATE).fetchall(), 10)
    # DuckDB with the rows already in its own memory, its best case.
    db.execute(f"CREATE TABLE customers_mem AS SELECT * FROM read_parquet('{parquet}')")
    duck_mem = timed(lambda: db.execute(AGGREGATE.replace("customers", "customers_mem")).fetchall(), 10)
    print(json.dumps({
        "client": f"psycopg {psycopg.__version__}",
        "duckdb_version": duckdb.__version__,
        "aggregate_over_pgwire_ms": summary(aggregate),
        "point_lookup_over_pgwire_ms": summary(lookups),
        "duckdb_aggregate_ms": summary(duck),
        "duckdb_aggregate_in_memory_table_ms": summary(duck_mem),
    }))


if __name__ == "__main__":
    main()
