"""Writing Arrow rows as the data files of an Iceberg snapshot under way: the one place that
uses pyiceberg's private API (checked against pyiceberg 0.12.0; tests/test_iceberg_files.py
fails loudly if it changes).

pyiceberg's public writes (`append`, `overwrite`) commit a snapshot of their own; a load adds
its files to the snapshot that also deletes the replaced courses' files and carries the state,
so it writes them itself and hands them to that snapshot:

- `DataFileWriter` (unpartitioned tables, the layout of this store): rows streamed into one
  Parquet file after another, each closed once `target_bytes` of Arrow data went in, so files
  follow bytes and memory stays at one row group, whatever the size of the load.
- `data_files` (tables partitioned by the identity of one column: the rejects table, and edX
  tables created before the layout changed): `_dataframe_to_data_files` one partition at a
  time. Its own split filters the whole table once per partition value (rows × values); the
  rows are sorted by the partition column and written one slice per value instead.
"""

import itertools
import uuid
from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import (
    ParquetFormatWriter,
    _dataframe_to_data_files,
    schema_to_pyarrow,
)
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
from pyiceberg.schema import sanitize_column_names
from pyiceberg.table.locations import load_location_provider
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.typedef import Record

ROW_GROUP_BYTES = 32 << 20
"""Arrow bytes gathered before they are written as one row group: readers skip by row group,
and each write call of pyarrow's ParquetWriter makes at least one."""


class DataFileWriter:
    """Rows of an unpartitioned table, in the table's columns (`arrow_schema`), written as data
    files of about `target_bytes` of Arrow data each (pyiceberg's own measure of
    `write.target-file-size-bytes`; zstd Parquet is several times smaller)."""

    def __init__(
        self,
        metadata: TableMetadata,
        io: FileIO,
        commit_uuid: uuid.UUID,
        counter: itertools.count,
        target_bytes: int,
    ) -> None:
        if metadata.spec().fields:
            raise ValueError("DataFileWriter writes unpartitioned tables only")
        self.metadata = metadata
        self.io = io
        self.commit_uuid = commit_uuid
        self.counter = counter
        self.target_bytes = target_bytes
        schema = metadata.schema()
        self.file_schema = sanitize_column_names(schema)
        self.arrow_schema = schema_to_pyarrow(schema, include_field_ids=False)
        self._with_ids = schema_to_pyarrow(self.file_schema, include_field_ids=True)
        self._locations = load_location_provider(metadata.location, metadata.properties)
        self._file: tuple[str, ParquetFormatWriter] | None = None
        self._pending: list[pa.RecordBatch] = []
        self._pending_bytes = 0
        self._file_bytes = 0

    def write(self, batch: pa.RecordBatch) -> DataFile | None:
        """Adds rows (in `arrow_schema`); returns a data file when this closed one."""
        if not batch.num_rows:
            return None
        self._pending.append(batch)
        self._pending_bytes += batch.nbytes
        if self._pending_bytes >= ROW_GROUP_BYTES:
            self._flush()
        if self._file_bytes + self._pending_bytes >= self.target_bytes:
            return self.close()
        return None

    def files(self, batches: Iterable[pa.RecordBatch]) -> Iterator[DataFile]:
        """The data files of all of `batches`, the last one closed."""
        for batch in batches:
            if file := self.write(batch):
                yield file
        if file := self.close():
            yield file

    def close(self) -> DataFile | None:
        """Closes the current file, if any rows went in: its data file."""
        self._flush()
        if self._file is None:
            return None
        path, writer = self._file
        self._file, self._file_bytes = None, 0
        statistics = writer.close()
        return DataFile.from_args(
            content=DataFileContent.DATA,
            file_path=path,
            file_format=FileFormat.PARQUET,
            partition=Record(),
            file_size_in_bytes=len(self.io.new_input(path)),
            sort_order_id=None,
            spec_id=self.metadata.default_spec_id,
            equality_ids=None,
            key_metadata=None,
            **statistics.to_serialized_dict(),
        )

    def _flush(self) -> None:
        if not self._pending:
            return
        if self._file is None:
            name = f"00000-{next(self.counter)}-{self.commit_uuid}.parquet"
            path = self._locations.new_data_location(name)
            writer = ParquetFormatWriter(
                self.io.new_output(path), self.file_schema, self.metadata.properties
            )
            self._file = (path, writer)
        rows = pa.Table.from_batches(self._pending).rename_columns(self._with_ids.names)
        self._file[1].write(rows.cast(self._with_ids))
        self._file_bytes += self._pending_bytes
        self._pending, self._pending_bytes = [], 0


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
