"""Metadata growth of a lake table over many small loads, without and with table upkeep.

    uv run python -m benchmarks.upkeep [--loads 30] [--courses 200] [--replaced 10]
        [--every 5] [--json OUT.json]

Starts `python -m moto.server` (S3 + Glue) on a free 127.0.0.1 port, stopped by its PID at the
end. Two tables get the same loads through the lake store's own commit (IcebergStore.commit:
one snapshot per load, its state object beside it): a first load of `--courses` courses, then
`--loads` loads each replacing `--replaced` random courses (a re-export). The second table also
gets the upkeep (stores/iceberg_upkeep.py) after every `--every` loads, with a retention of 0
days (every snapshot but the current one expires: the steady state a 7-day retention reaches
once loads are older than that). Prints, per table: manifests of the current snapshot (count
and bytes), snapshots in the metadata, the metadata.json's bytes, data files, and the seconds
pyiceberg takes to plan a scan of the whole table; and that both tables hold the same rows.
"""

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.s3_files import aws_env, start_moto, stop

LAKE_BUCKET = "ol-data-lake-raw-qa"
DATABASE = "ol_warehouse_qa_raw"


def staged(path: Path, course: str, load_id: str, rows: int) -> Path:
    """A normalized Parquet file of one course, as dlt hands it to the store."""
    table = pa.table(
        {
            "name": pa.array([f"{course} {load_id} {i}" for i in range(rows)], pa.string()),
            "_source_line": pa.array(range(2, rows + 2), pa.int64()),
            "_course_id": pa.array([course] * rows, pa.string()),
            "_dlt_file_path": pa.array([f"s3://landing/{course}/{load_id}.tsv"] * rows),
            "_dlt_file_modified": pa.array([0] * rows, pa.timestamp("us", tz="UTC")),
            "_dlt_load_id": pa.array([load_id] * rows, pa.string()),
        }
    )
    pq.write_table(table, path)
    return path


def loads(name: str, args, work: Path, upkeep: bool) -> None:
    from edxorg_s3_ingest.stores import LoadCommit
    from edxorg_s3_ingest.stores.iceberg_store import IcebergStore
    from edxorg_s3_ingest.stores.iceberg_upkeep import UpkeepPolicy, upkeep_table

    store = IcebergStore(f"s3://{LAKE_BUCKET}/edxorg", DATABASE)
    policy = UpkeepPolicy(retention_days=0)
    draw = random.Random(7)  # both tables get the same loads
    courses = [f"course-{n:04d}" for n in range(args.courses)]
    base = None
    for n in range(args.loads + 1):
        chosen = courses if n == 0 else draw.sample(courses, args.replaced)
        load_id = f"L{n}"
        staged_files = [
            staged(work / f"{name}-{load_id}-{course}.parquet", course, load_id, 20)
            for course in chosen
        ]
        entries = {course: {"columns": ["name"]} for course in chosen}
        state = {"load": n}
        store.commit(LoadCommit(name, load_id, staged_files, entries, state, base))
        for path in staged_files:
            path.unlink()
        if upkeep and n and n % args.every == 0:
            upkeep_table(store, name, policy)
        base = store.read_state(name).version


def measure(name: str) -> dict:
    import boto3

    from edxorg_s3_ingest.stores.iceberg_store import glue_catalog

    table = glue_catalog().load_table((DATABASE, name))
    manifests = table.current_snapshot().manifests(table.io)
    bucket, _, key = table.metadata_location.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    started = time.perf_counter()
    files = list(table.scan().plan_files())
    planned = time.perf_counter() - started
    return {
        "manifests": len(manifests),
        "manifest_bytes": sum(manifest.manifest_length for manifest in manifests),
        "snapshots": len(table.snapshots()),
        "metadata_json_bytes": s3.head_object(Bucket=bucket, Key=key)["ContentLength"],
        "data_files": len(files),
        "plan_seconds": round(planned, 3),
        "rows": sorted(table.scan().to_arrow().column("name").to_pylist()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loads", type=int, default=30)
    parser.add_argument("--courses", type=int, default=200)
    parser.add_argument("--replaced", type=int, default=10)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        server, endpoint = start_moto(work / "moto.log")
        try:
            os.environ.update(aws_env(endpoint), DAGSTER_ENVIRONMENT="qa")
            import boto3

            boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=LAKE_BUCKET)
            results = {}
            for label, upkeep in (("without_upkeep", False), ("with_upkeep", True)):
                name = f"raw__edxorg__s3__tables__bench_{label}"
                started = time.perf_counter()
                loads(name, args, work, upkeep)
                results[label] = {"seconds": round(time.perf_counter() - started, 1)}
                results[label].update(measure(name))
        finally:
            stop(server)
    same = results["without_upkeep"].pop("rows") == results["with_upkeep"].pop("rows")
    output = {"settings": vars(args) | {"json": None}, "same_rows": same, **results}
    print(json.dumps(output, indent=2, default=str))
    if args.json:
        args.json.write_text(json.dumps(output, indent=2, default=str))


if __name__ == "__main__":
    main()
