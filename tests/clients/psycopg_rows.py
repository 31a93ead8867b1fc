"""Runs SQL statements over the PostgreSQL wire protocol with psycopg 3 and
prints each result as one JSON line: {"columns": [...], "rows": [[...], ...]}.

Used by tests/e2e/sql.rs to check that a real Python client gets the same rows
as the HTTP endpoint. Both the extended protocol (psycopg's default, with a
bound parameter) and the simple protocol are exercised.

usage: psycopg_rows.py HOST PORT [PASSWORD] < statements (one per line; a
line may contain one %s placeholder followed by a TAB and its parameter)
"""
import json
import sys

import psycopg


def plain(value):
    if isinstance(value, float) or isinstance(value, int) or value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return value
    return str(value)


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    password = sys.argv[3] if len(sys.argv) > 3 else None
    with psycopg.connect(host=host, port=port, user="analyst", dbname="patron", password=password,
                         autocommit=True) as conn:
        for line in sys.stdin:
            line = line.rstrip("\n")
            if not line:
                continue
            sql, _, param = line.partition("\t")
            # A bound parameter goes through the extended protocol (Parse,
            # Bind, Execute); a ClientCursor sends the simple protocol.
            cursor = conn.cursor() if param else psycopg.ClientCursor(conn)
            with cursor as cur:
                if param:
                    cur.execute(sql, (param,))
                else:
                    cur.execute(sql)
                columns = [d.name for d in cur.description]
                rows = [[plain(v) for v in row] for row in cur.fetchall()]
            print(json.dumps({"columns": columns, "rows": rows}))


if __name__ == "__main__":
    main()
