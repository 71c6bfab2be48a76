"""The qa benchmark's chores against its moto server, each run as a child process of its own:

    python -m benchmarks.lake_tools upload   --endpoint URL --root DIR --prefix P
    python -m benchmarks.lake_tools reexport --endpoint URL --root DIR --prefix P --run N
                                             --share F --expected FILE
    python -m benchmarks.lake_tools clear    --endpoint URL
    python -m benchmarks.lake_tools layout   --endpoint URL --tables a,b [--since JSON]
                                             [--database DB]
    python -m benchmarks.lake_tools read     --endpoint URL --tables a,b [--compacted]
    python -m benchmarks.lake_tools parquet-rows --endpoint URL --dir DIR --tables a,b

Children, so that the benchmark's parent stays small: a measured child's peak RSS (`wait4`)
starts from the parent's pages it was forked with. Every one prints one JSON object.

The lake is looked at only through Glue and pyiceberg's public API (snapshots, their summaries
and manifest lists, scans), never through the project's store, so that these numbers keep their
meaning whatever layout the store writes.
"""

import argparse
import hashlib
import json
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks import generate
from benchmarks.s3_files import KEYS

LANDING = "landing"
QA_LAKE = "ol-data-lake-raw-qa"
QA_DATABASE = "ol_warehouse_qa_raw"
BENCHMARK_LAKE = "benchmark-lake"
"""The naive baselines' tables and the compacted copies live here, in Glue databases of their
own (COMPACTED, naive_iceberg.DATABASES)."""
COMPACTED = "benchmark_compacted"
REGION = "us-east-1"
COMMANDS = ("upload", "reexport", "clear", "layout", "read", "parquet-rows")


def destination(table: str) -> str:
    return f"raw__edxorg__s3__tables__{table}"


def client(endpoint: str, service: str):
    import boto3

    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=KEYS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=KEYS["AWS_SECRET_ACCESS_KEY"],
    )


def catalog(endpoint: str):
    """pyiceberg's own Glue catalog and FileIO against the moto server."""
    from pyiceberg.catalog import load_catalog

    keys = {
        f"{service}.{name}": value
        for service in ("glue", "s3")
        for name, value in (
            ("endpoint", endpoint),
            ("region", REGION),
            ("access-key-id", KEYS["AWS_ACCESS_KEY_ID"]),
            ("secret-access-key", KEYS["AWS_SECRET_ACCESS_KEY"]),
        )
    }
    return load_catalog("benchmark", type="glue", **keys)


# -- the landing zone ----------------------------------------------------------------------------


def upload(endpoint: str, root: Path, prefix: str) -> dict:
    """Every file of a generated set (prod and edge) under s3://landing/<prefix>/."""
    s3 = client(endpoint, "s3")
    buckets = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    for bucket in (LANDING, QA_LAKE, BENCHMARK_LAKE):
        if bucket not in buckets:
            s3.create_bucket(Bucket=bucket)
    paths = sorted((root / "db_table").rglob("*.tsv"))

    def put(path: Path) -> int:
        key = f"{prefix}/{path.relative_to(root)}"
        s3.put_object(Bucket=LANDING, Key=key, Body=path.read_bytes())
        return path.stat().st_size

    with ThreadPoolExecutor(8) as pool:
        sizes = list(pool.map(put, paths))
    return {"files": len(paths), "bytes": sum(sizes)}


def reexport(endpoint: str, root: Path, prefix: str, run: int, share: float, expected: Path):
    """Run `run` of the many-courses scenario: `share` of each table's courses exported again
    with new content (so a new key, SPEC §2), uploaded after everything before it. Each run takes
    courses no earlier run took, so a course's newest file is never decided by a tie of
    modification times. `expected` (JSON, table -> course -> rows of its newest file) is read,
    updated and written back."""
    rows_of = json.loads(expected.read_text()) if expected.exists() else None
    files = generate.prod_files(root)
    if rows_of is None:
        rows_of = {}
        for entry in files:
            rows_of.setdefault(entry["table"], {})[entry["course"]] = entry["rows"]
    s3 = client(endpoint, "s3")
    done = {"run": run, "courses": {}, "rows": {}, "bytes": {}}
    for table in generate.TABLES:
        exports = sorted((f for f in files if f["table"] == table), key=lambda f: f["course"])
        random.Random(f"{generate.SEED}:reexport:{table}").shuffle(exports)
        count = max(1, round(len(exports) * share))
        chosen = exports[(run - 1) * count : run * count]
        if len(chosen) < count:
            raise SystemExit(f"run {run}: only {len(exports)} courses in {table}, share {share}")
        new_rows = new_bytes = 0
        for entry in chosen:
            seed = random.Random(f"{generate.SEED}:{table}:{entry['course']}:{run}").getrandbits(64)
            content, rows = generate.export_bytes(
                table, entry["course"], entry["bytes"], seed, 1, entry["quoted"]
            )
            digest = hashlib.sha256(content).hexdigest()
            key = f"{prefix}/db_table/{table}/prod/{entry['course']}/{digest}.tsv"
            s3.put_object(Bucket=LANDING, Key=key, Body=content)
            rows_of[table][entry["course"]] = rows
            new_rows += rows
            new_bytes += len(content)
        done["courses"][table] = len(chosen)
        done["rows"][table] = new_rows
        done["bytes"][table] = new_bytes
    expected.write_text(json.dumps(rows_of))
    done["table_rows"] = {table: sum(courses.values()) for table, courses in rows_of.items()}
    return done


def clear(endpoint: str) -> dict:
    """Forgets every Glue database and every object of the lake buckets (not the landing zone):
    a fresh lake for the next repeat."""
    glue, s3 = client(endpoint, "glue"), client(endpoint, "s3")
    for database in glue.get_databases()["DatabaseList"]:
        name = database["Name"]
        for table in glue.get_tables(DatabaseName=name)["TableList"]:
            glue.delete_table(DatabaseName=name, Name=table["Name"])
        glue.delete_database(Name=name)
    removed = 0
    buckets = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    for bucket in (QA_LAKE, BENCHMARK_LAKE):
        if bucket not in buckets:  # nothing uploaded yet (--skip-full-load)
            continue
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
                removed += len(keys)
    return {"objects_removed": removed}


# -- the lake, through pyiceberg ------------------------------------------------------------------


def _number(summary, key: str) -> int:
    return int(summary.get(key, 0) or 0) if summary is not None else 0


def layout(endpoint: str, tables: list[str], since: dict, database: str = QA_DATABASE) -> dict:
    """Per table of `database` (the project's table names in the qa database): what the
    snapshots committed after `since[table]` (a snapshot id) added and removed, and the current
    snapshot's manifests, data files and bytes."""
    lake = catalog(endpoint)
    result = {}
    for table_name in tables:
        name = destination(table_name) if database == QA_DATABASE else table_name
        table = lake.load_table((database, name))
        current = table.current_snapshot()
        new, snapshot = [], current
        while snapshot is not None and snapshot.snapshot_id != since.get(table_name):
            new.append(snapshot)
            parent = snapshot.parent_snapshot_id
            snapshot = table.snapshot_by_id(parent) if parent is not None else None
        manifests = current.manifests(table.io)
        summary = current.summary
        added = {
            key: sum(_number(s.summary, key) for s in new)
            for key in (
                "added-data-files",
                "deleted-data-files",
                "added-delete-files",
                "added-files-size",
                "removed-files-size",
                "added-records",
                "deleted-records",
            )
        }
        result[table_name] = {
            "snapshot_id": current.snapshot_id,
            "snapshots_added": len(new),
            **{key.replace("-", "_"): value for key, value in added.items()},
            "manifests": len(manifests),
            "manifest_bytes": sum(m.manifest_length for m in manifests),
            "data_files": _number(summary, "total-data-files"),
            "delete_files": _number(summary, "total-delete-files"),
            "table_bytes": _number(summary, "total-files-size"),
            "table_rows": _number(summary, "total-records"),
            "snapshots": len(table.metadata.snapshots),
            "metadata_location": table.metadata_location,
        }
    return result


READS = 3
"""Each table is read this many times; its time is the fastest. The process's first read also
pays its catalog's, FileIO's and connections' set-up (auth_user, read first, took 6x the time
of the same rows in one file that way), which is no property of the table's layout."""


def _timed_read(lake, identifier: tuple[str, str]):
    best = None
    for _ in range(READS):
        started = time.perf_counter()
        rows = lake.load_table(identifier).scan().to_arrow()
        seconds = time.perf_counter() - started
        best = seconds if best is None else min(best, seconds)
    return rows, round(best, 3)


def read(endpoint: str, tables: list[str], compacted: bool) -> dict:
    """Seconds to read each whole table with pyiceberg (`load_table(...).scan().to_arrow()`,
    the fastest of READS);
    with `compacted`, the same rows are then written once into a fresh table (one append: one
    data file at these sizes) and read back the same way."""
    lake = catalog(endpoint)
    result = {}
    for table_name in tables:
        name = destination(table_name)
        rows, seconds = _timed_read(lake, (QA_DATABASE, name))
        entry = {"rows": rows.num_rows, "pyiceberg_s": seconds}
        if compacted:
            lake.create_namespace_if_not_exists(COMPACTED)
            if lake.table_exists((COMPACTED, name)):
                lake.purge_table((COMPACTED, name))
            copy = lake.create_table(
                (COMPACTED, name),
                rows.schema,
                location=f"s3://{BENCHMARK_LAKE}/{COMPACTED}/{name}-{time.time_ns()}",
            )
            copy.append(rows)
            del rows
            copied, seconds = _timed_read(lake, (COMPACTED, name))
            copy = lake.load_table((COMPACTED, name))
            entry.update(
                compacted_rows=copied.num_rows,
                compacted_pyiceberg_s=seconds,
                compacted_data_files=_number(copy.current_snapshot().summary, "total-data-files"),
                compacted_metadata_location=copy.metadata_location,
            )
        result[table_name] = entry
    return result


def parquet_rows(folder: Path, tables: list[str]) -> dict:
    """Rows of the dev path's Parquet output, per table, from the files' footers."""
    import pyarrow.parquet as pq

    return {
        table: sum(
            pq.ParquetFile(path).metadata.num_rows
            for path in (folder / destination(table)).rglob("*.parquet")
        )
        for table in tables
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--root", type=Path)
    parser.add_argument("--prefix")
    parser.add_argument("--run", type=int)
    parser.add_argument("--share", type=float)
    parser.add_argument("--expected", type=Path)
    parser.add_argument("--tables", default=",".join(generate.TABLES))
    parser.add_argument("--since", default="{}", help="JSON: table -> snapshot id")
    parser.add_argument("--compacted", action="store_true")
    parser.add_argument("--database", default=QA_DATABASE)
    parser.add_argument("--dir", type=Path, help="parquet-rows: the dev path's --data-dir")
    args = parser.parse_args(argv)
    tables = args.tables.split(",")
    if args.command == "upload":
        result = upload(args.endpoint, args.root, args.prefix)
    elif args.command == "reexport":
        result = reexport(
            args.endpoint, args.root, args.prefix, args.run, args.share, args.expected
        )
    elif args.command == "clear":
        result = clear(args.endpoint)
    elif args.command == "layout":
        result = layout(args.endpoint, tables, json.loads(args.since), args.database)
    elif args.command == "parquet-rows":
        result = parquet_rows(args.dir, tables)
    else:
        result = read(args.endpoint, tables, args.compacted)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
