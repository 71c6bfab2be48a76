"""Writing Arrow rows as the data files of an Iceberg snapshot under way: the one place that
uses pyiceberg's private API (checked against pyiceberg 0.12.0; tests/test_iceberg_files.py
fails loudly if it changes).

pyiceberg's public writes (`append`, `overwrite`) commit a snapshot of their own; a load adds
its files to the snapshot that also deletes the replaced courses' files and carries the state,
so it writes them with `_dataframe_to_data_files` and hands them to that snapshot.

Its partition split filters the whole table once per partition value (rows × courses: 5.2 s of
a 17 s qa load with 200 courses per table). The rows are sorted by the partition column and
written one slice per value instead: each call then holds one partition.
"""

import itertools
import uuid
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import _dataframe_to_data_files
from pyiceberg.manifest import DataFile
from pyiceberg.table.metadata import TableMetadata


def data_files(
    metadata: TableMetadata,
    rows: pa.Table,
    io: FileIO,
    commit_uuid: uuid.UUID,
    counter: itertools.count,
) -> Iterator[DataFile]:
    """The data files of `rows`, written under the table's location, one partition at a
    time (the table is partitioned by the identity of one column, or not at all)."""
    for part in _by_partition(metadata, rows):
        yield from _dataframe_to_data_files(metadata, part, io, commit_uuid, counter)


def _by_partition(metadata: TableMetadata, rows: pa.Table) -> Iterator[pa.Table]:
    fields = metadata.spec().fields
    if len(fields) != 1 or rows.num_rows == 0:
        yield rows
        return
    column = metadata.schema().find_column_name(fields[0].source_id)
    order = pc.sort_indices(rows, [(column, "ascending")])
    # Sorted, each value's rows are one run, and values first appear in sorted order. Each
    # run is taken alone: at most one partition's copy of the rows at a time.
    counts = pc.value_counts(rows.column(column).take(order)).field("counts").to_pylist()
    start = 0
    for count in counts:
        yield rows.take(order.slice(start, count))
        start += count
