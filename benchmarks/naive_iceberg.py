"""The naive way to put the landing zone into Iceberg: the baseline of the qa benchmark.

    python -m benchmarks.naive_iceberg --endpoint URL --bucket-url s3://landing/P --tables a,b
        [--by-course]

Per table: list the prod files with boto3, GET them (8 at a time), read each with
`pyarrow.csv` (tab-delimited, every column a string, `NULL` as null, quoted fields with line
feeds), add `_course_id` from the path, concatenate by column name, and write the whole table
with ONE pyiceberg `append` into a new table of pyiceberg's Glue catalog, unpartitioned or, with
`--by-course`, partitioned by `_course_id` (identity). No escape decoding, no other lineage, no
rejects, no state, no replacement of re-exported courses: the least an Iceberg load of these
files can do, as a yardstick for the project's qa path. Prints the rows per table as JSON.
"""

import argparse
import io
import json
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.csv as pv

from benchmarks.lake_tools import BENCHMARK_LAKE, catalog, client

DATABASES = {False: "naive_unpartitioned", True: "naive_by_course"}
PARSE = pv.ParseOptions(delimiter="\t", newlines_in_values=True)


def read_export(content: bytes, course: str) -> pa.Table:
    header = content[: content.index(b"\n")].decode().split("\t")
    convert = pv.ConvertOptions(
        column_types={name: pa.string() for name in header},
        null_values=["NULL"],
        strings_can_be_null=True,
    )
    rows = pv.read_csv(io.BytesIO(content), parse_options=PARSE, convert_options=convert)
    return rows.append_column("_course_id", pa.array([course] * rows.num_rows, pa.string()))


def read_table(s3, bucket: str, prefix: str) -> pa.Table:
    keys = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for item in page.get("Contents", [])
        if item["Key"].endswith(".tsv") and item["Size"]
    ]

    def get(key: str) -> pa.Table:
        content = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        return read_export(content, key[len(prefix) :].split("/")[0])

    with ThreadPoolExecutor(8) as pool:
        return pa.concat_tables(pool.map(get, keys), promote_options="default")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--bucket-url", required=True, help="s3://<bucket>/<prefix>")
    parser.add_argument("--tables", required=True)
    parser.add_argument("--by-course", action="store_true", help="partition by _course_id")
    args = parser.parse_args()
    bucket, _, root = args.bucket_url.removeprefix("s3://").partition("/")
    s3 = client(args.endpoint, "s3")
    lake = catalog(args.endpoint)
    database = DATABASES[args.by_course]
    lake.create_namespace_if_not_exists(database)
    rows = {}
    for table_name in args.tables.split(","):
        arrow = read_table(s3, bucket, f"{root.strip('/')}/db_table/{table_name}/prod/")
        table = lake.create_table(
            (database, table_name),
            arrow.schema,
            location=f"s3://{BENCHMARK_LAKE}/{database}/{table_name}",
        )
        if args.by_course:
            with table.update_spec() as spec:
                spec.add_identity("_course_id")
        table.append(arrow)
        rows[table_name] = arrow.num_rows
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
