"""The dlt source: one resource per edX table, streaming Arrow batches of its new prod exports.

Each resource lists its table once, plans from its state which files to read (one per re-exported
course), and yields every file's rows as Arrow record batches with the lineage columns of SPEC §4.
What it read is written into the load package state, where the destination finds it to replace
exactly those courses (consolidation.py); the file versions go into the resource state, which dlt
commits in the same package: state and data advance together.
"""

import base64
import tempfile
from collections.abc import Iterator

import dlt
import pyarrow as pa
from dlt.extract.resource import DltResource

from edxorg_s3_ingest.incremental import plan
from edxorg_s3_ingest.landing import LandingFile, fetch, list_prod_files
from edxorg_s3_ingest.report import TableReport
from edxorg_s3_ingest.tables import REJECTS_TABLE, TABLES, destination_table
from edxorg_s3_ingest.tsv import InvalidHeaderError, Reject, TsvFile

MANIFEST_KEY = "edxorg_s3_ingest"
TIMESTAMP = pa.timestamp("us", tz="UTC")
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


def manifest() -> dict:
    """This load package's record of what was read, per table (see consolidation.py)."""
    return dlt.current.load_package_state()["state"].setdefault(MANIFEST_KEY, {})


def with_lineage(batch: pa.RecordBatch, file: LandingFile, load_id: str) -> pa.RecordBatch:
    rows = batch.num_rows
    lineage = {
        "_course_id": pa.array([file.course_id] * rows, pa.string()),
        "_dlt_file_path": pa.array([file.url] * rows, pa.string()),
        "_dlt_file_modified": pa.array([file.modified] * rows, TIMESTAMP),
        "_dlt_load_id": pa.array([load_id] * rows, pa.string()),
    }
    return pa.RecordBatch.from_arrays(
        [*batch.columns, *lineage.values()], names=[*batch.schema.names, *lineage]
    )


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


def read_table(table: str, bucket_url: str, report: TableReport) -> Iterator:
    """The body of one table's resource."""
    listing = list_prod_files(bucket_url, table)
    state = dlt.current.resource_state()
    work = plan(listing.files, state)
    report.files_seen = work.files_seen
    report.files_skipped = work.files_skipped
    report.files_planned = len(work.to_read)
    report.misplaced_files = listing.misplaced
    if not listing.files:
        report.status = "no_prod_files"
        return
    load_id = dlt.current.load_package_state()["load_id"]
    if work.to_read or work.new_empty:
        report.load_id = load_id
    for file in work.new_empty:
        report.rows_rejected += 1
        yield _rejects(table, file, [Reject(None, "empty_file", b"")], load_id)
    courses: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="edxorg-") as scratch:
        for file in work.to_read:
            rejects: list[Reject] = []
            try:
                tsv = TsvFile(fetch(file.url, scratch), rejects.append)
            except InvalidHeaderError as error:
                rejects.append(Reject(1, "invalid_header", str(error).encode()))
                tsv = None
            rows = 0
            for batch in tsv.batches() if tsv else ():
                rows += batch.num_rows
                report.rows_loaded += batch.num_rows
                yield with_lineage(batch, file, load_id)
            if rejects:
                report.rows_rejected += len(rejects)
                yield _rejects(table, file, rejects, load_id)
            report.bytes_read += file.size
            if tsv is not None:
                report.files_loaded += 1
                courses[file.course_id] = {
                    "url": file.url,
                    "modified": file.modified.isoformat(),
                    "rows": rows,
                    "columns": tsv.header,
                }
    if courses:
        manifest()[destination_table(table)] = courses
        # What the table must hold per course: the reconciliation asset check compares with it.
        state.setdefault("rows", {}).update({course: e["rows"] for course, e in courses.items()})


def expected_rows(resource_state: dict) -> int:
    """The rows the table holds after the loads this state describes (SPEC §5)."""
    return sum(resource_state.get("rows", {}).values())


def _rejects(table: str, file: LandingFile, rejects: list[Reject], load_id: str):
    # with_table_name fails on Arrow items of a resource with a fixed table_name (dlt 1.31):
    # a table variant with its own hints is the supported way to send them elsewhere.
    return dlt.mark.with_hints(
        rejects_batch(table, file, rejects, load_id),
        dlt.mark.make_hints(table_name=REJECTS_TABLE),
        create_table_variant=True,
    )


def table_resource(table: str, bucket_url: str, report: TableReport | None = None) -> DltResource:
    report = report or TableReport(table)
    return dlt.resource(
        read_table,
        name=table,
        table_name=destination_table(table),
        write_disposition="append",
    )(table, bucket_url, report)


@dlt.source(name="edxorg_s3", max_table_nesting=0)
def edxorg_s3_source(
    bucket_url: str = dlt.config.value,
    tables: list[str] | None = None,
    reports: dict[str, TableReport] | None = None,
) -> list[DltResource]:
    """One resource per edX table, named after the table (SPEC §3)."""
    reports = reports or {}
    return [table_resource(table, bucket_url, reports.get(table)) for table in (tables or TABLES)]
