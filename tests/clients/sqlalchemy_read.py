"""Connects to Patron with SQLAlchemy's psycopg dialect, unmodified, and reads
a query with pandas.read_sql through it; prints one JSON object:
{"server_version_info": [...], "version": "...", "columns": [...], "rows": [[...], ...]}.

Used by tests/e2e/sql.rs: SQLAlchemy parses the server's version() at
connect time, so this is what every SQLAlchemy-based tool (pandas, Superset)
needs to work.

usage: sqlalchemy_read.py HOST PORT QUERY [PASSWORD]
"""
import json
import sys

import pandas
import sqlalchemy


def main():
    host, port, query = sys.argv[1], sys.argv[2], sys.argv[3]
    password = sys.argv[4] if len(sys.argv) > 4 else ""
    url = sqlalchemy.URL.create(
        "postgresql+psycopg", username="analyst", password=password or None, host=host, port=int(port),
        database="patron",
    )
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as conn:
        version = conn.execute(sqlalchemy.text("SELECT version()")).scalar_one()
        frame = pandas.read_sql(sqlalchemy.text(query), conn)
    rows = json.loads(frame.to_json(orient="values", date_format="iso"))
    print(json.dumps({
        "server_version_info": list(engine.dialect.server_version_info),
        "version": version,
        "columns": list(frame.columns),
        "rows": rows,
    }))


if __name__ == "__main__":
    main()
