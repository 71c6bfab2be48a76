"""The rows of a table's load written as the Parquet files dlt imports (its staged files).

A writer thread (source.py) writes the reader's rows in row groups of TABLE_ROWS rows or
TABLE_BYTES bytes and in the column order of dlt's schema, so that dlt's normalize step takes
each file as it is and the dev store publishes it as it is (a hard link): a large source file's
rows into a file of their own (one course), the others' into shared files of up to
SHARED_FILE_BYTES source bytes (the dev store's packs, parquet_store.py)."""

import functools
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

TABLE_ROWS = 65_536
"""Rows per Parquet row group at most (the reader's batches of one file, or of many small
files, gathered)..."""

TABLE_BYTES = 4 << 20
"""... and Arrow bytes per row group at most (long JSON rows): with threads.READ_AHEAD and
source.SEGMENT_BYTES, what bounds the memory of a table's load (larger ones cost as much CPU
and more memory: courseware_studentmodule of benchmarks/data/medium, 16 MB and 8 MB segments:
peak RSS 440 MB; 4 MB and 2 MB: 320 MB)."""

SHARED_FILE_BYTES = 64 << 20
"""A shared file becomes a pack of the dev store as it is; a later re-export of one of its
courses rewrites the pack without that course (parquet_store.py): this bounds what that costs
(~0.3 s), at one load job per 64 MB."""

PARQUET_OPTIONS = {"version": "2.4", "compression": "snappy"}
"""What dlt's own Parquet writer uses (dlt.common.data_writers.writers.ParquetDataWriter)."""


class Rows(NamedTuple):
    """Rows with lineage: of one source file that gets its own Parquet file (`own_url`), or of
    any number of files for the shared one (None)."""

    table: pa.Table
    own_url: str | None


class Written(NamedTuple):
    """A finished Parquet file of rows, for dlt to import."""

    path: str
    rows: int
    schema: pa.Schema


class Columns:
    """The table's column order as dlt's schema will have it, so that dlt's normalize step can
    take each imported file as it is instead of rewriting it: the columns dlt knows, in its
    order, then new ones in order of appearance (as dlt appends them); a file lacking some of
    them gets them as null strings (as dlt's rewrite would add them). Files with a column name
    dlt would rename are left as they are, for dlt to rewrite."""

    def __init__(self, known: list[str], normalize: Callable[[str], str] | None) -> None:
        self.order = list(known)
        self._normalize = functools.cache(normalize) if normalize else None
        # A parse helper's files are planned on the scan thread (`plan`) while the write thread
        # arranges the others' rows: one of them changes the order at a time.
        self._lock = threading.Lock()

    @classmethod
    def of(cls, table_name: str) -> "Columns":
        import dlt  # here: a parse helper process (loading/parse_helper.py) never imports dlt

        try:
            schema = dlt.current.source_schema()
        except Exception:  # noqa: BLE001 - outside a pipeline: keep files as they are
            return cls([], None)
        known = schema.get_table_columns(table_name) if table_name in schema.tables else {}
        return cls(list(known), schema.naming.normalize_identifier)

    def plan(self, names: list[str]) -> list[str] | None:
        """The column order of rows with these columns, the new ones added to the table's
        order; None when dlt would rename one of them (rows left as they are)."""
        if self._normalize is None or any(self._normalize(name) != name for name in names):
            return None
        with self._lock:
            known = set(self.order)
            self.order += [name for name in names if name not in known]
            return list(self.order)

    def arrange(self, rows: pa.Table) -> pa.Table:
        order = self.plan(rows.schema.names)
        return rows if order is None else arranged(rows, order)


def arranged(rows: pa.Table, order: list[str]) -> pa.Table:
    """The rows with the columns in `order` (every one of theirs is in it); the columns they
    lack, null strings."""
    names = rows.schema.names
    if names == order:
        return rows
    present = set(names)
    arrays = [
        rows.column(name) if name in present else pa.nulls(rows.num_rows, pa.string())
        for name in order
    ]
    return pa.Table.from_arrays(arrays, names=order)


class StagedFile:
    """One Parquet file being written, in row groups of TABLE_ROWS rows or TABLE_BYTES bytes
    (whichever comes first; the last one smaller): the tables of small source files are
    gathered first. Dictionary encoding only for the columns whose first rows repeat values
    (lineage, flags, codes): trying it on ids and JSON costs time for nothing."""

    def __init__(self, path: str, first: pa.Table) -> None:
        self.path, self.rows, self.source_bytes = path, 0, 0
        self.schema = first.schema
        self.writer = pq.ParquetWriter(
            path, first.schema, use_dictionary=_repetitive(first), **PARQUET_OPTIONS
        )
        self._pending: list[pa.Table] = []
        self._pending_rows = self._pending_bytes = 0

    def write(self, rows: pa.Table) -> None:
        self._pending.append(rows)
        self._pending_rows += rows.num_rows
        self._pending_bytes += rows.nbytes
        self.rows += rows.num_rows
        if self._pending_rows >= TABLE_ROWS or self._pending_bytes >= TABLE_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._pending_rows:
            group = pa.concat_tables(self._pending)
            self.writer.write_table(group, row_group_size=group.num_rows)
        self._pending, self._pending_rows, self._pending_bytes = [], 0, 0

    def close(self) -> Written:
        self._flush()
        self.writer.close()
        return Written(self.path, self.rows, self.writer.schema)


def _repetitive(rows: pa.Table, sample: int = 1024, sample_bytes: int = 64 << 10) -> list[str]:
    """Columns with at most one distinct value per four rows among their first rows: `sample`
    of them, fewer for long values (at most about `sample_bytes` of a column's data). Hashing
    4,096 JSON states of ~0.5 KB took two thirds of this, once per Parquet file."""
    head = rows.slice(0, sample)
    names = []
    for name, column in zip(head.schema.names, head.columns, strict=True):
        width = max(column.nbytes // max(head.num_rows, 1), 1)
        values = column.slice(0, max(sample_bytes // width, 64))
        if pc.count_distinct(values).as_py() <= max(len(values) // 4, 1):
            names.append(name)
    return names


def write_files(
    events: Iterator,
    scratch: str,
    columns: Columns | Callable[[pa.Table], pa.Table],
    prefix: str = "rows",
) -> Iterator:
    """The reader's rows written as Parquet (on the writer thread): a large source file's into
    a file of its own, the others' into a shared file. Passes each FileRead on, and a Written
    for each finished Parquet file. `columns` arranges each table's columns; the files are
    named `<prefix>-<n>.parquet` in `scratch`."""
    arrange = columns.arrange if isinstance(columns, Columns) else columns
    own: StagedFile | None = None
    shared: StagedFile | None = None
    own_url, number = None, 0

    def new(first: pa.Table) -> StagedFile:
        nonlocal number
        number += 1
        return StagedFile(os.path.join(scratch, f"{prefix}-{number}.parquet"), first)

    try:
        for event in events:
            if isinstance(event, Rows):
                table = arrange(event.table)
                if event.own_url is not None:
                    if own is not None and table.schema != own.schema:  # one header: never
                        yield own.close()
                        own = None
                    if own is None:
                        own, own_url = new(table), event.own_url
                    own.write(table)
                    continue
                if shared is not None and table.schema != shared.schema:
                    yield shared.close()
                    shared = None
                if shared is None:
                    shared = new(table)
                shared.write(table)
                continue
            if own is not None and event.file.url == own_url:
                yield own.close()
                own = None
            elif shared is not None:
                shared.source_bytes += event.file.size
                if shared.source_bytes >= SHARED_FILE_BYTES:
                    yield shared.close()
                    shared = None
            yield event
        if shared is not None:
            yield shared.close()
            shared = None
    finally:
        for parquet in (own, shared):
            if parquet is not None:
                parquet.writer.close()


def row_groups(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.Table]:
    """Consecutive batches (one schema) grouped into tables of TABLE_ROWS rows or TABLE_BYTES
    bytes (whichever comes first), zero-copy."""
    group: list[pa.RecordBatch] = []
    rows = size = 0
    for batch in batches:
        if group and batch.schema != group[0].schema:
            yield pa.Table.from_batches(group)
            group, rows, size = [], 0, 0
        group.append(batch)
        rows += batch.num_rows
        size += batch.nbytes
        if rows >= TABLE_ROWS or size >= TABLE_BYTES:
            yield pa.Table.from_batches(group)
            group, rows, size = [], 0, 0
    if group:
        yield pa.Table.from_batches(group)
