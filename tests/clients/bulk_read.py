"""Reads a large answer over the PostgreSQL wire protocol the two streaming
ways, and prints what arrived as one JSON line: {"rows": n, "bytes": b,
"first": [...], "last": [...]}.

usage: bulk_read.py HOST PORT copy|cursor SQL

- copy: psycopg's cursor.copy("COPY (SQL) TO STDOUT"), counting lines;
- cursor: a named (server-side) psycopg cursor, DECLARE/FETCH inside a
  transaction, 10,000 rows a fetch.
Used by tests/e2e/sql.rs, which watches the server's memory meanwhile.
"""
import json
import sys

import psycopg


def main():
    host, port, mode, sql = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    rows, size, first, last = 0, 0, None, None
    with psycopg.connect(host=host, port=port, user="analyst", dbname="patron") as conn:
        if mode == "copy":
            with conn.cursor() as cur:
                with cur.copy(f"COPY ({sql}) TO STDOUT") as copy:
                    pending = b""
                    for block in copy:
                        size += len(block)
                        pending += bytes(block)
                        lines = pending.split(b"\n")
                        pending = lines.pop()
                        for line in lines:
                            fields = line.decode().split("\t")
                            first = first or fields
                            last = fields
                            rows += 1
        else:
            with conn.cursor(name="bulk") as cur:
                cur.itersize = 10_000
                cur.execute(sql)
                for row in cur:
                    values = [str(v) for v in row]
                    size += sum(len(v) for v in values)
                    first = first or values
                    last = values
                    rows += 1
    print(json.dumps({"rows": rows, "bytes": size, "first": first, "last": last}))


if __name__ == "__main__":
    main()
