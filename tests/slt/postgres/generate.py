"""Fills the expected answers of the .slt files in this directory from a real
PostgreSQL, so that Patron is checked against PostgreSQL's own answers, not
against values worked out by hand.

usage: .venv/bin/python3 tests/slt/postgres/generate.py 'host=127.0.0.1 port=55432 user=postgres'

For every `query` record it runs the SQL on PostgreSQL with psycopg and
rewrites the record's column types and expected rows in the form the
end-to-end runner prints Patron's Arrow answers (tests/e2e/sql.rs, `cell`):
NULL as `NULL`, booleans as `true`/`false`, numbers with at most 6 decimals
and no trailing zeros, timestamps as `2026-03-09T10:42:17`, empty text as
`(empty)`. Columns PostgreSQL types as integers are I, other numbers R, the
rest T. `statement`
records and comments are kept as written; a query PostgreSQL refuses stops
the script.
"""
import datetime
import decimal
import sys

import psycopg


def number_text(value):
    text = f"{float(value):.6f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def cell(value):
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (float, decimal.Decimal)):
        return number_text(value)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None or value.microsecond:
            raise ValueError(f"{value!r}: keep time zones and fractions out of these cases")
        return value.isoformat()
    if isinstance(value, datetime.date):
        return value.isoformat()
    text = str(value)
    return "(empty)" if text == "" else text.rstrip()


INTEGER_OIDS = {20, 21, 23}  # int8, int2, int4
NUMBER_OIDS = {700, 701, 1700}  # float4, float8, numeric


def type_letter(type_oid):
    if type_oid in INTEGER_OIDS:
        return "I"
    if type_oid in NUMBER_OIDS:
        return "R"
    return "T"


def regenerate(path, conn):
    lines = open(path).read().split("\n")
    out, i = [], 0
    while i < len(lines):
        line = lines[i]
        if not line.startswith("query "):
            out.append(line)
            i += 1
            continue
        options = line.split()[2:]
        sql_lines = []
        i += 1
        while i < len(lines) and lines[i] != "----":
            sql_lines.append(lines[i])
            i += 1
        i += 1  # ----
        while i < len(lines) and lines[i] != "":
            i += 1  # the old expected rows
        sql = "\n".join(sql_lines)
        with conn.cursor() as cur:
            cur.execute(sql)
            rows = cur.fetchall()
            types = "".join(type_letter(column.type_code) for column in cur.description)
        rendered = [" ".join(cell(v) for v in row) for row in rows]
        if "rowsort" in options:
            rendered.sort()
        out.append(" ".join(["query", types] + options))
        out.extend(sql_lines)
        out.append("----")
        out.extend(rendered)
    open(path, "w").write("\n".join(out))


def main():
    with psycopg.connect(sys.argv[1], autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.execute("SET TimeZone = 'UTC'")
            cur.execute("SELECT version()")
            print(cur.fetchone()[0], file=sys.stderr)
        for path in sys.argv[2:] or __import__("glob").glob(__file__.rsplit("/", 1)[0] + "/*.slt"):
            regenerate(path, conn)
            print(f"regenerated {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
