"""Runs SQL statements over Arrow Flight SQL with the ADBC Flight SQL driver
and prints each result as one JSON line: {"columns": [...], "rows": [[...], ...]}.

Each statement runs twice: as a plain statement (GetFlightInfo on
CommandStatementQuery, then DoGet) and as a prepared statement
(CreatePreparedStatement, GetFlightInfo, DoGet); both results must agree.

usage: adbc_rows.py HOST PORT [TOKEN] < statements (one per line)
env: PATRON_FLIGHT_TLS_ROOT=cert.pem connects over TLS, trusting that file
"""
import json
import os
import sys

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flightsql


def main():
    host, port = sys.argv[1], sys.argv[2]
    token = sys.argv[3] if len(sys.argv) > 3 else None
    kwargs = {}
    if token:
        kwargs[adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value] = f"Bearer {token}"
    scheme = "grpc"
    root = os.environ.get("PATRON_FLIGHT_TLS_ROOT")
    if root:
        # TLS, trusting only this CA (or self-signed certificate) file.
        scheme = "grpc+tls"
        with open(root) as f:
            kwargs[adbc_driver_flightsql.DatabaseOptions.TLS_ROOT_CERTS.value] = f.read()
    with flightsql.connect(f"{scheme}://{host}:{port}", db_kwargs=kwargs) as conn:
        for line in sys.stdin:
            sql = line.strip()
            if not sql:
                continue
            with conn.cursor() as cur:
                cur.execute(sql)
                table = cur.fetch_arrow_table()
            with conn.cursor() as cur:
                cur.adbc_prepare(sql)
                cur.execute(sql)
                prepared = cur.fetch_arrow_table()
            if table.to_pylist() != prepared.to_pylist():
                sys.exit(f"prepared and plain results differ for {sql}")
            columns = table.column_names
            rows = [[row[c] for c in columns] for row in table.to_pylist()]
            print(json.dumps({"columns": columns, "rows": rows}, default=str))


if __name__ == "__main__":
    main()
