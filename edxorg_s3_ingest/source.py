"""The dlt source: one resource per edX table, streaming the rows of its new prod exports.

Each resource lists its table once, plans from its state which files to read (one per re-exported
course), and hands every file's rows, with the lineage columns of SPEC §4, to dlt as Parquet.
What it read is written into the load package state, where the destination finds it to replace
exactly those courses (consolidation.py); the file versions go into the resource state, which dlt
commits in the same package: state and data advance together.

Speed (benchmarks/README.md): four stages overlap, each on a thread of its own and mostly in
pyarrow with the GIL released. A scan thread fetches each file and pre-scans it (its quoting); a
read thread parses it and appends the lineage columns (slices of arrays built once per file,
never per-row Python objects); a write thread writes the rows as Parquet, in row groups of about
`TABLE_ROWS` rows and the column order of dlt's schema; the main thread hands each finished
Parquet file to dlt as an imported file (`dlt.mark.with_file_import`: a hard link, not a second
encoding). A large source file gets a Parquet file of its own, so that its staged file holds
exactly one course; small ones share files (few staged files, few load jobs).
"""

import base64
import functools
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from typing import NamedTuple

import dlt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
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


TABLE_ROWS = 65_536
"""Rows per Parquet row group (a group of the reader's batches of one file)."""
READ_AHEAD = 2
"""Items a thread may hold ready beyond the one its consumer works on: bounds the memory."""
SCAN_AHEAD = 1
"""Files pre-scanned ahead of the one being parsed."""
OWN_FILE_BYTES = 4 << 20
"""A source file this large gets a Parquet file of its own (one staged file, one course)..."""
MAX_OWN_FILES = 64
"""... but only the largest MAX_OWN_FILES of a run; the others share Parquet files of up to
SHARED_FILE_BYTES source bytes. Few staged files matter: dlt loads each as a job, every job
rewrites the whole package state, and with many jobs dlt's loader threads have crashed
(SIGSEGV in orjson, 1 run in 5 at 1,000 jobs; benchmarks/README.md)."""
SHARED_FILE_BYTES = 256 << 20
PARQUET_OPTIONS = {"version": "2.4", "compression": "snappy"}
"""What dlt's own Parquet writer uses (dlt.common.data_writers.writers.ParquetDataWriter)."""


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
    columns = _Columns.of(destination_table(table))
    with tempfile.TemporaryDirectory(prefix="edxorg-") as scratch:
        scanned = _read_ahead(_scan_files(work.to_read, scratch), "edxorg-scan", SCAN_AHEAD)
        parsed = _read_ahead(_read_files(scanned, load_id), "edxorg-read")
        own = {file.url for file in _largest(work.to_read, MAX_OWN_FILES, OWN_FILE_BYTES)}
        events = _read_ahead(_write_files(parsed, scratch, columns, own), "edxorg-write")
        with closing(events):  # the threads end before their scratch folder goes
            for event in events:
                if isinstance(event, _Written):
                    yield dlt.mark.with_file_import(
                        event.path, "parquet", event.rows, hints=event.schema.empty_table()
                    )
                    os.unlink(event.path)  # dlt has linked (or copied) it into its package
                    continue
                file, tsv, rejects, rows = event
                report.rows_loaded += rows
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


class _Rows(NamedTuple):
    """Rows of one source file, with lineage."""

    file: LandingFile
    table: pa.Table


class _FileRead(NamedTuple):
    """The end of one source file: its TsvFile (None if unreadable), its rejects, its rows."""

    file: LandingFile
    tsv: TsvFile | None
    rejects: list[Reject]
    rows: int = 0


class _Written(NamedTuple):
    """A finished Parquet file of rows, for dlt to import."""

    path: str
    rows: int
    schema: pa.Schema


def _scan_files(files: list[LandingFile], scratch: str) -> Iterator:
    """Each file fetched and pre-scanned (`TsvFile` reads its header and decides its quoting),
    as (file, TsvFile or None if unreadable, rejects). Runs on the scan thread, ahead of the
    parse; its downloads take turns in SCAN_AHEAD + 2 folders, so that a file is never fetched
    over one that is still being parsed."""
    folders = [os.path.join(scratch, f"fetch-{n}") for n in range(SCAN_AHEAD + 2)]
    for folder in folders:
        os.mkdir(folder)
    for number, file in enumerate(files):
        rejects: list[Reject] = []
        try:
            folder = folders[number % len(folders)]
            tsv = TsvFile(fetch(file.url, folder, file.size), rejects.append)
        except InvalidHeaderError as error:
            rejects.append(Reject(1, "invalid_header", str(error).encode()))
            tsv = None
        yield file, tsv, rejects


def _read_files(scanned: Iterator, load_id: str) -> Iterator:
    """Each scanned file's rows with lineage as tables of about TABLE_ROWS rows, then a
    _FileRead. Runs on the read thread: no dlt calls here (dlt's context is the main thread's)."""
    for file, tsv, rejects in scanned:
        if tsv is not None:
            lineage = Lineage(file, load_id)
            for rows in _tables(tsv.batches(), TABLE_ROWS):
                yield _Rows(file, lineage.add(rows))
        yield _FileRead(file, tsv, rejects)


class _Columns:
    """The table's column order as dlt's schema will have it, so that dlt's normalize step can
    take each imported file as it is instead of rewriting it: the columns dlt knows, in its
    order, then new ones in order of appearance (as dlt appends them); a file lacking some of
    them gets them as null strings (as dlt's rewrite would add them). Files with a column name
    dlt would rename are left as they are, for dlt to rewrite."""

    def __init__(self, known: list[str], normalize: Callable[[str], str] | None) -> None:
        self.order = list(known)
        self._normalize = functools.cache(normalize) if normalize else None

    @classmethod
    def of(cls, table_name: str) -> "_Columns":
        try:
            schema = dlt.current.source_schema()
        except Exception:  # noqa: BLE001 - outside a pipeline: keep files as they are
            return cls([], None)
        known = schema.get_table_columns(table_name) if table_name in schema.tables else {}
        return cls(list(known), schema.naming.normalize_identifier)

    def arrange(self, rows: pa.Table) -> pa.Table:
        names = rows.schema.names
        if self._normalize is None or any(self._normalize(name) != name for name in names):
            return rows
        present = set(names)
        self.order += [name for name in names if name not in set(self.order)]
        if names == self.order:
            return rows
        arrays = [
            rows.column(name) if name in present else pa.nulls(rows.num_rows, pa.string())
            for name in self.order
        ]
        return pa.Table.from_arrays(arrays, names=self.order)


class _Parquet:
    """One Parquet file being written, in row groups of at least TABLE_ROWS rows (but the last):
    the tables of small source files are gathered first. Dictionary encoding only for the
    columns whose first rows repeat values (lineage, flags, codes): trying it on ids and JSON
    costs time for nothing."""

    def __init__(self, path: str, first: pa.Table) -> None:
        self.path, self.rows, self.source_bytes = path, 0, 0
        self.writer = pq.ParquetWriter(
            path, first.schema, use_dictionary=_repetitive(first), **PARQUET_OPTIONS
        )
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def write(self, rows: pa.Table) -> None:
        self._pending.append(rows)
        self._pending_rows += rows.num_rows
        self.rows += rows.num_rows
        if self._pending_rows >= TABLE_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._pending_rows:
            group = pa.concat_tables(self._pending)
            self.writer.write_table(group, row_group_size=group.num_rows)
        self._pending, self._pending_rows = [], 0

    def close(self) -> _Written:
        self._flush()
        self.writer.close()
        return _Written(self.path, self.rows, self.writer.schema)


def _repetitive(rows: pa.Table, sample: int = 4096) -> list[str]:
    """Columns with at most one distinct value per four rows among the first `sample` rows."""
    head = rows.slice(0, sample)
    limit = max(head.num_rows // 4, 1)
    return [
        name
        for name, column in zip(head.schema.names, head.columns, strict=True)
        if pc.count_distinct(column).as_py() <= limit
    ]


def _largest(files: list[LandingFile], count: int, least: int) -> list[LandingFile]:
    """The `count` largest files of at least `least` bytes."""
    large = [file for file in files if file.size >= least]
    return sorted(large, key=lambda file: (-file.size, file.url))[:count]


def _write_files(events: Iterator, scratch: str, columns: _Columns, own_urls: set[str]) -> Iterator:
    """The reader's rows written as Parquet (on the writer thread): a large source file into a
    file of its own, smaller ones into a shared file. Passes each _FileRead on, with its rows,
    and a _Written for each finished Parquet file."""
    own: _Parquet | None = None
    shared: _Parquet | None = None
    rows, number = 0, 0

    def new(first: pa.Table) -> _Parquet:
        nonlocal number
        number += 1
        return _Parquet(os.path.join(scratch, f"rows-{number}.parquet"), first)

    try:
        for event in events:
            if isinstance(event, _Rows):
                table = columns.arrange(event.table)
                if event.file.url in own_urls:
                    if own is None:
                        own = new(table)
                    elif table.schema != own.writer.schema:  # cannot happen: one header
                        yield own.close()
                        own = new(table)
                    own.write(table)
                else:
                    if shared is not None and table.schema != shared.writer.schema:
                        yield shared.close()
                        shared = None
                    if shared is None:
                        shared = new(table)
                    shared.write(table)
                rows += table.num_rows
                continue
            yield event._replace(rows=rows)
            rows = 0
            if own is not None:
                yield own.close()
                own = None
            elif shared is not None and event.file.url not in own_urls:
                shared.source_bytes += event.file.size
                if shared.source_bytes >= SHARED_FILE_BYTES:
                    yield shared.close()
                    shared = None
        if shared is not None:
            yield shared.close()
            shared = None
    finally:
        for parquet in (own, shared):
            if parquet is not None:
                parquet.writer.close()


def _tables(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Consecutive batches (one schema) grouped into tables of at least `rows` rows, zero-copy."""
    group: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        if group and batch.schema != group[0].schema:
            yield pa.Table.from_batches(group)
            group, count = [], 0
        group.append(batch)
        count += batch.num_rows
        if count >= rows:
            yield pa.Table.from_batches(group)
            group, count = [], 0
    if group:
        yield pa.Table.from_batches(group)


_END = object()


def _read_ahead(items: Iterator, name: str, depth: int = READ_AHEAD) -> Iterator:
    """`items`, produced on a thread of their own at most `depth` items ahead of the consumer.

    An exception in the producer is raised in the consumer, at the point it was reached; closing
    the consumer (dlt stopping the extraction) stops the producer before returning.
    """
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            put((_END, error))
        finally:
            close = getattr(items, "close", None)
            if close:
                close()

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()


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
