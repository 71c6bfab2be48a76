"""Writing Arrow rows as the data files of an Iceberg snapshot under way: the one place that
uses pyiceberg's private API (checked against pyiceberg 0.12.0; tests/test_iceberg_files.py
fails loudly if it changes).

pyiceberg's public writes (`append`, `overwrite`) commit a snapshot of their own; a load adds
its files to the snapshot that also deletes the replaced courses' files and carries the state,
so it writes them itself and hands them to that snapshot:

- `DataFileWriter` (unpartitioned tables, the layout of this store): rows streamed into one
  Parquet file after another, each closed once `target_bytes` of Arrow data went in, so files
  follow bytes and memory stays at one row group, whatever the size of the load.
- `staged_data_file` (the same tables): a staged Parquet file uploaded as it is (or several
  small ones with the same columns joined, row group after row group), with the table's field
  ids stamped into the footer (parquet_footer.py), and registered with the statistics of that
  footer, as pyiceberg's `add_files` builds them: no rows decoded or encoded again.
- `data_files` (tables partitioned by the identity of one column: the rejects table, and edX
  tables created before the layout changed): `_dataframe_to_data_files` one partition at a
  time. Its own split filters the whole table once per partition value (rows × values); the
  rows are sorted by the partition column and written one slice per value instead.
"""

import itertools
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from boto3.s3.transfer import TransferConfig
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import (
    ParquetFormatWriter,
    _dataframe_to_data_files,
    compute_statistics_plan,
    data_file_statistics_from_parquet_metadata,
    parquet_path_to_id_mapping,
    schema_to_pyarrow,
)
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
from pyiceberg.schema import Schema, sanitize_column_names
from pyiceberg.table.locations import load_location_provider
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.typedef import Record
from pyiceberg.types import LongType, StringType, TimestamptzType

from edxorg_s3_ingest.landing.aws import s3_client, split_s3
from edxorg_s3_ingest.stores.lake_uploads import UploadedFile
from edxorg_s3_ingest.stores.parquet_footer import (
    MAGIC,
    TAIL,
    columns_of,
    joined_footer,
    read_footer,
    tail,
    with_field_ids,
)

COPY_BYTES = 8 << 20
"""A staged file is uploaded in parts of this size."""
ROW_GROUP_BYTES = 32 << 20
"""Arrow bytes gathered before they are written as one row group: readers skip by row group,
and each write call of pyarrow's ParquetWriter makes at least one."""


def data_file_name(counter: itertools.count, commit_uuid: uuid.UUID) -> str:
    return f"00000-{next(counter)}-{commit_uuid}.parquet"


def fits(path: Path, schema: Schema) -> bool:
    """Whether a staged file's columns are the table's, each of the type its readers expect
    (string; long; timestamptz in microseconds, UTC): then the file can be a data file as it
    is. Anything else (a column dlt rewrote with other types, say) is written again."""
    for field in pq.read_schema(path):
        try:
            wanted = schema.find_field(field.name).field_type
        except ValueError:
            return False
        kind = field.type
        if isinstance(wanted, StringType):
            ok = pa.types.is_string(kind) or pa.types.is_large_string(kind)
        elif isinstance(wanted, LongType):
            ok = pa.types.is_int64(kind)
        elif isinstance(wanted, TimestamptzType):
            ok = pa.types.is_timestamp(kind) and kind.unit == "us" and kind.tz in ("UTC", "+00:00")
        else:
            ok = False
        if not ok:
            return False
    return True


def staged_data_file(metadata: TableMetadata, io: FileIO, paths: list[Path], name: str) -> DataFile:
    """Staged Parquet files (their columns `fits` the table; several: the same columns, see
    `joinable`) as ONE data file of the table: their bytes uploaded as they are, one file's row
    groups after the other's, behind one footer that has the table's field ids."""
    if metadata.spec().fields:
        raise ValueError("staged files are data files of unpartitioned tables only")
    schema = metadata.schema()
    parts = [read_footer(path) for path in paths]
    footer = parts[0][1] if len(parts) == 1 else joined_footer(parts)
    names = pq.read_schema(paths[0]).names
    footer = with_field_ids(footer, {name: schema.find_field(name).field_id for name in names})
    location = data_location(metadata, name)
    pieces = [MAGIC]
    pieces += [(path, len(MAGIC), start) for path, (start, _) in zip(paths, parts, strict=True)]
    pieces.append(footer + tail(footer))
    _upload(_Pieces(pieces), location, io)
    size = len(MAGIC) + sum(start - len(MAGIC) for start, _ in parts) + len(footer) + TAIL
    return registered(metadata, location, footer, size)


def uploaded_data_file(metadata: TableMetadata, file: UploadedFile, paths: list[Path]) -> DataFile:
    """A data file uploaded while the load read (lake_uploads.py; `paths`: its staged files),
    finished with the footer that has the table's field ids: the bytes `staged_data_file`
    uploads for the same files."""
    schema = metadata.schema()
    names = pq.read_schema(paths[0]).names
    footer = with_field_ids(
        file.footer(), {name: schema.find_field(name).field_id for name in names}
    )
    return registered(metadata, file.url, footer, file.finish(footer))


def data_location(metadata: TableMetadata, name: str) -> str:
    return load_location_provider(metadata.location, metadata.properties).new_data_location(name)


def registered(metadata: TableMetadata, location: str, footer: bytes, size: int) -> DataFile:
    """The data file at `location` with `footer`, as the table registers it: the statistics of
    that footer, as pyiceberg's `add_files` builds them."""
    schema = metadata.schema()
    statistics = data_file_statistics_from_parquet_metadata(
        parquet_metadata=pq.read_metadata(pa.BufferReader(MAGIC + footer + tail(footer))),
        stats_columns=compute_statistics_plan(schema, metadata.properties),
        parquet_column_mapping=parquet_path_to_id_mapping(schema),
    )
    return DataFile.from_args(
        content=DataFileContent.DATA,
        file_path=location,
        file_format=FileFormat.PARQUET,
        partition=Record(),
        file_size_in_bytes=size,
        sort_order_id=None,
        spec_id=metadata.default_spec_id,
        equality_ids=None,
        key_metadata=None,
        **statistics.to_serialized_dict(),
    )


def joinable(paths: list[Path], most_bytes: int) -> list[list[Path]]:
    """Staged files in groups that `staged_data_file` can join: the same columns, at most
    `most_bytes` together (a file larger than that alone), in the order given."""
    groups: dict[bytes, list[list[Path]]] = {}
    for path in paths:
        runs = groups.setdefault(columns_of(read_footer(path)[1]), [[]])
        size = sum(file.stat().st_size for file in runs[-1])
        if runs[-1] and size + path.stat().st_size > most_bytes:
            runs.append([])
        runs[-1].append(path)
    return [run for runs in groups.values() for run in runs]


UPLOAD = TransferConfig(
    multipart_threshold=COPY_BYTES, multipart_chunksize=COPY_BYTES, max_concurrency=4
)
"""A data file goes to S3 in parts of COPY_BYTES, four at a time: memory holds at most four
parts (the FileIO's s3fs buffered 50 MB blocks, one upload at a time)."""


def _upload(data: "_Pieces", location: str, io: FileIO) -> None:
    """The bytes of `data` as the object `location`: with boto3's managed transfer on S3 (the
    process's client: landing/aws.py), through the table's FileIO elsewhere."""
    if location.startswith(("s3://", "s3a://")):
        bucket, key = split_s3(location)
        s3_client().upload_fileobj(data, bucket, key, Config=UPLOAD)
        return
    with io.new_output(location).create(overwrite=True) as out:
        while piece := data.read(COPY_BYTES):
            out.write(piece)


class _Pieces:
    """A readable stream of bytes and byte ranges of local files, one after the other."""

    def __init__(self, pieces: list[bytes | tuple[Path, int, int]]) -> None:
        self.pieces = list(reversed(pieces))
        self.current = None  # (open file, bytes left) or bytes

    def read(self, size: int = -1) -> bytes:
        out = bytearray()
        while size < 0 or len(out) < size:
            want = -1 if size < 0 else size - len(out)
            if self.current is None:
                if not self.pieces:
                    break
                piece = self.pieces.pop()
                if isinstance(piece, bytes):
                    self.current = piece
                else:
                    path, start, end = piece
                    source = path.open("rb")
                    source.seek(start)
                    self.current = (source, end - start)
            if isinstance(self.current, bytes):
                taken = self.current if want < 0 else self.current[:want]
                self.current = self.current[len(taken) :] or None
            else:
                source, left = self.current
                taken = source.read(left if want < 0 else min(left, want))
                if not taken and left:
                    source.close()
                    raise OSError(f"{source.name} ended before its footer")
                left -= len(taken)
                self.current = (source, left)
                if not left:
                    source.close()
                    self.current = None
            out += taken
        return bytes(out)


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
            name = data_file_name(self.counter, self.commit_uuid)
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
