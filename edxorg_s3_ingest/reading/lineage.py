"""The columns a load adds to every row (SPEC §4) and the rejects' rows (SPEC §6), built as
Arrow arrays once per file (or per group of files read together), never per-row Python objects."""

import base64

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from edxorg_s3_ingest.landing.listing import LandingFile
from edxorg_s3_ingest.reading.tsv import Reject

TIMESTAMP = pa.timestamp("us", tz="UTC")

LINEAGE = pa.schema(
    [
        ("_source_line", pa.int64()),
        ("_course_id", pa.string()),
        ("_dlt_file_path", pa.string()),
        ("_dlt_file_modified", TIMESTAMP),
        ("_dlt_load_id", pa.string()),
    ]
)
"""The lineage columns of SPEC §4 with their types, as every table has them."""

REJECTS_SCHEMA = pa.schema(
    [
        ("table", pa.string()),
        ("_course_id", pa.string()),
        ("_dlt_file_path", pa.string()),
        ("_dlt_file_modified", TIMESTAMP),
        ("_source_line", pa.int64()),
        ("reason", pa.string()),
        ("raw_line", pa.string()),
        ("raw_line_base64", pa.string()),
        ("_dlt_load_id", pa.string()),
    ]
)


def with_lineage(
    batch: pa.RecordBatch | pa.Table, file: LandingFile, load_id: str
) -> pa.RecordBatch | pa.Table:
    """The rows with the lineage columns of SPEC §4 appended (`_source_line` is the reader's)."""
    return Lineage(file, load_id).add(batch)


class Lineage:
    """The constant lineage columns of one file, built once and sliced for each table of rows
    (zero-copy), grown by doubling when a table is longer than any before."""

    NAMES = ("_course_id", "_dlt_file_path", "_dlt_file_modified", "_dlt_load_id")

    def __init__(self, file: LandingFile, load_id: str) -> None:
        self._values = (
            pa.scalar(file.course_id, pa.string()),
            pa.scalar(file.url, pa.string()),
            pa.scalar(file.modified, TIMESTAMP),
            pa.scalar(load_id, pa.string()),
        )
        self._arrays: list[pa.Array] = []
        self._length = 0

    def columns(self, rows: int) -> list[pa.Array]:
        if rows > self._length:
            self._length = max(rows, 2 * self._length)
            self._arrays = [pa.repeat(value, self._length) for value in self._values]
        return [array.slice(0, rows) for array in self._arrays]

    def add(self, rows: pa.RecordBatch | pa.Table) -> pa.RecordBatch | pa.Table:
        arrays = [*rows.columns, *self.columns(rows.num_rows)]
        names = [*rows.schema.names, *self.NAMES]
        if isinstance(rows, pa.Table):
            return pa.Table.from_arrays(arrays, names=names)
        return pa.RecordBatch.from_arrays(arrays, names=names)


def rejects_batch(
    table: str, file: LandingFile, rejects: list[Reject], load_id: str
) -> pa.RecordBatch:
    def text(reject: Reject) -> str:
        return reject.raw_line.decode("utf-8", errors="replace")

    def raw(reject: Reject) -> str | None:
        try:
            reject.raw_line.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(reject.raw_line).decode("ascii")
        return None

    count = len(rejects)
    return pa.RecordBatch.from_pydict(
        {
            "table": [table] * count,
            "_course_id": [file.course_id] * count,
            "_dlt_file_path": [file.url] * count,
            "_dlt_file_modified": [file.modified] * count,
            "_source_line": [reject.line for reject in rejects],
            "reason": [reject.reason for reject in rejects],
            "raw_line": [text(reject) for reject in rejects],
            "raw_line_base64": [raw(reject) for reject in rejects],
            "_dlt_load_id": [load_id] * count,
        },
        schema=REJECTS_SCHEMA,
    )


def many_lineage(rows: pa.Table, files: list[tuple[LandingFile, int]], load_id: str) -> pa.Table:
    """Rows of consecutive files (each with its row count) with the lineage columns of SPEC
    §4: each file's values repeated by an Arrow `take`, no Python object per row."""
    owner = pa.array(np.repeat(np.arange(len(files)), [count for _, count in files]), pa.int32())
    values = [
        pa.array([file.course_id for file, _ in files], pa.string()),
        pa.array([file.url for file, _ in files], pa.string()),
        pa.array([file.modified for file, _ in files], TIMESTAMP),
    ]
    lineage = [column.take(owner) for column in values]
    lineage.append(pa.repeat(pa.scalar(load_id, pa.string()), rows.num_rows))
    return pa.Table.from_arrays(
        [*rows.columns, *lineage], names=[*rows.schema.names, *Lineage.NAMES]
    )


def single_course(path) -> str | None:
    """The course of a staged file all of whose rows are of one course (a large source file
    has a staged file of its own: source.py), else None. The row groups' statistics rule most
    files out; the `_course_id` column (dictionary-encoded, a few bytes) decides."""
    parquet = pq.ParquetFile(path)
    metadata = parquet.metadata
    if not metadata.num_rows or "_course_id" not in parquet.schema_arrow.names:
        return None
    column = parquet.schema_arrow.get_field_index("_course_id")
    for group in range(metadata.num_row_groups):
        statistics = metadata.row_group(group).column(column).statistics
        if statistics is not None and statistics.has_min_max and statistics.min != statistics.max:
            return None
    courses = parquet.read(columns=["_course_id"]).column(0)
    if courses.null_count or pc.count_distinct(courses).as_py() != 1:
        return None
    return courses[0].as_py()


def empty_course_schema(columns: list[str]) -> pa.Schema:
    """The schema of a course whose newest export is header-only: its columns, no rows."""
    return pa.schema([(name, pa.string()) for name in columns] + list(LINEAGE))
