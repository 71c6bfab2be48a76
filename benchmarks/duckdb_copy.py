"""DuckDB's plain TSV → Parquet copy of the same prod files, as the speed reference.

    python -m benchmarks.duckdb_copy --bucket-url DIR --out DIR --tables a,b

One `COPY (SELECT * FROM read_csv(...)) TO '<out>/<table>.parquet'` per table, on all cores.
All strings, `NULL` as null, quoted fields as the SPEC §2 dialect has them, columns matched by
name across files (`union_by_name`). No escape decoding, no lineage, no rejects, no state: the
least work a TSV → Parquet copy of these files can do. Prints the rows per table as JSON.
"""

import argparse
import json
from pathlib import Path

import duckdb


def copy_sql(bucket_url: str, table: str, target: Path) -> str:
    glob = f"{bucket_url.rstrip('/')}/db_table/{table}/prod/*/*.tsv"
    return (
        f"COPY (SELECT * FROM read_csv('{glob}', delim='\\t', header=true, all_varchar=true, "
        "quote='\"', escape='\"', nullstr='NULL', union_by_name=true)) "
        f"TO '{target}' (FORMAT parquet)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bucket-url", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--tables", required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = {}
    with duckdb.connect() as connection:
        for table in args.tables.split(","):
            target = args.out / f"{table}.parquet"
            rows[table] = connection.execute(copy_sql(args.bucket_url, table, target)).fetchone()[0]
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
