"""Seconds to read whole Iceberg tables with DuckDB's iceberg reader, from the moto server.

    uv run --no-project --with duckdb==1.4.4 --with duckdb-ext-iceberg==1.4.4.20260205 \
        --with duckdb-ext-httpfs==1.4.4.20260205 --with duckdb-ext-avro==1.4.4.20260205 \
        python benchmarks/duckdb_iceberg_read.py --endpoint URL NAME=METADATA_LOCATION ...

Runs in an environment of its own (benchmarks/qa.py starts it so): the extensions PyPI ships
(STACK-NOTES, 2026-12-06) are built for duckdb 1.4.4, the project pins another duckdb, and
DuckDB cannot download extensions here. They are loaded from the wheel's folder with
autoinstall off. Each table is read as `CREATE TEMP TABLE … AS SELECT * FROM iceberg_scan(…)`
(every column materialized, nothing sent to Python), timed from the statement to its end.
Prints JSON: name -> {rows, seconds}. Imports nothing from the project.
"""

import argparse
import json
import time
from pathlib import Path

import duckdb
import duckdb_ext

VERSION = "v1.4.4"
READS = 3
"""Reads of each table; its time is the fastest (as lake_tools.READS)."""


def extension_directory() -> str:
    for root in duckdb_ext.__path__:
        if (Path(root) / "extensions" / VERSION).is_dir():
            return str(Path(root) / "extensions")
    raise SystemExit(f"no DuckDB extensions for {VERSION} under {list(duckdb_ext.__path__)}")


def connect(endpoint: str) -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect(
        config={
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "extension_directory": extension_directory(),
        }
    )
    for name in ("httpfs", "avro", "iceberg"):
        connection.execute(f"LOAD {name}")
    host = endpoint.removeprefix("http://")
    connection.execute(
        "CREATE SECRET moto (TYPE s3, KEY_ID 'benchmark', SECRET 'benchmark', "
        f"REGION 'us-east-1', ENDPOINT '{host}', URL_STYLE 'path', USE_SSL false)"
    )
    return connection


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--endpoint", required=True, help="http://127.0.0.1:<port>")
    parser.add_argument("tables", nargs="+", help="NAME=s3://…/metadata/….metadata.json")
    args = parser.parse_args()
    connection = connect(args.endpoint)
    result = {}
    for number, item in enumerate(args.tables):
        name, _, location = item.partition("=")
        times = []
        for _ in range(READS):  # the fastest: the first read also sets up the connection
            started = time.perf_counter()
            connection.execute(
                f"CREATE TEMP TABLE read_{number} AS SELECT * FROM iceberg_scan('{location}')"
            )
            times.append(time.perf_counter() - started)
            rows = connection.execute(f"SELECT count(*) FROM read_{number}").fetchone()[0]
            connection.execute(f"DROP TABLE read_{number}")
        result[name] = {"rows": rows, "seconds": round(min(times), 3)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
