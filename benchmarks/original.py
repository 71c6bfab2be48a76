"""The original design's pipeline, as the speed baseline (SPEC §9). Not product code.

    python -m benchmarks.original --bucket-url DIR --out DIR --pipelines-dir DIR --tables a,b

As `seed/original-design-README.md` describes it: dlt's filesystem source lists
`db_table/<table>/prod/**/*.tsv` (incremental on `modification_date`), each file is read by
pandas in chunks of 1000 rows (`sep="\\t"`), every chunk becomes per-row dicts
(`chunk.to_dict(orient="records")`, yielded one by one), and one dlt pipeline loads all tables
to dlt's `filesystem` destination as Parquet. It keeps the original's known defects (every file
appended, no escape decoding, no lineage columns beyond what dlt adds), except that each
resource keeps its table's name (the original wrote every table as `read_csv`).

Prints one JSON object: rows per table as dlt's normalize step counted them.
"""

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import dlt
import pandas as pd
from dlt.sources.filesystem import FileItemDict, filesystem

CHUNK_ROWS = 1000


@dlt.transformer(standalone=True)
def read_tsv(items: list[FileItemDict]) -> Iterator[dict]:
    for file_obj in items:
        with file_obj.open() as file:
            for chunk in pd.read_csv(file, sep="\t", chunksize=CHUNK_ROWS):
                yield from chunk.to_dict(orient="records")  # one record at a time


@dlt.source(name="edxorg_s3")
def original_source(bucket_url: str, tables: list[str]):
    for table in tables:
        files = filesystem(
            bucket_url=bucket_url, file_glob=f"db_table/{table}/prod/**/*.tsv"
        ).with_name(f"files_{table}")
        files.apply_hints(incremental=dlt.sources.incremental("modification_date"))
        yield (files | read_tsv()).with_name(f"raw__edxorg__s3__tables__{table}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bucket-url", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--pipelines-dir", required=True)
    parser.add_argument("--tables", required=True)
    args = parser.parse_args()
    tables = args.tables.split(",")
    pipeline = dlt.pipeline(
        pipeline_name="edxorg_s3_original",
        pipelines_dir=args.pipelines_dir,
        destination=dlt.destinations.filesystem(bucket_url=args.out.absolute().as_uri()),
        dataset_name="edxorg_s3_local",
    )
    pipeline.run(original_source(args.bucket_url, tables), loader_file_format="parquet")
    counts = pipeline.last_trace.last_normalize_info.row_counts
    print(
        json.dumps({table: counts.get(f"raw__edxorg__s3__tables__{table}", 0) for table in tables})
    )


if __name__ == "__main__":
    main()
