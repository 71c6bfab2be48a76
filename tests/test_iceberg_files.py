"""The lake's data files written through pyiceberg's private API (stores/iceberg_files.py):
the API it was checked against, the split by partition, and the streaming writer's files."""

import inspect
import itertools
import os
import random
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pyiceberg
from pyiceberg.io.pyarrow import (
    ParquetFormatWriter,
    PyArrowFileIO,
    _dataframe_to_data_files,
    compute_statistics_plan,
    data_file_statistics_from_parquet_metadata,
    parquet_path_to_id_mapping,
)
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table.metadata import new_table_metadata
from pyiceberg.table.sorting import UNSORTED_SORT_ORDER
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import NestedField, StringType

from edxorg_s3_ingest.stores.iceberg_files import DataFileWriter, data_files


def test_the_private_api_is_the_one_checked():
    """A new pyiceberg may move or change it: check stores/iceberg_files.py, then this."""
    assert pyiceberg.__version__.startswith("0.12.")
    parameters = list(inspect.signature(_dataframe_to_data_files).parameters)
    assert parameters == ["table_metadata", "df", "io", "write_uuid", "counter"]
    parameters = list(inspect.signature(ParquetFormatWriter).parameters)
    assert parameters == ["output_file", "file_schema", "properties"]
    # What `add_files` builds a data file's statistics with (staged_data_file).
    parameters = list(inspect.signature(data_file_statistics_from_parquet_metadata).parameters)
    assert parameters == ["parquet_metadata", "stats_columns", "parquet_column_mapping"]
    assert list(inspect.signature(compute_statistics_plan).parameters) == [
        "schema",
        "table_properties",
    ]
    assert list(inspect.signature(parquet_path_to_id_mapping).parameters) == ["schema"]


def table_metadata(location: str, partitioned: bool):
    schema = Schema(
        NestedField(1, "id", StringType(), required=False),
        NestedField(2, "_course_id", StringType(), required=False),
    )
    spec = (
        PartitionSpec(PartitionField(2, 1000, IdentityTransform(), "_course_id"), spec_id=0)
        if partitioned
        else PartitionSpec(spec_id=0)
    )
    return new_table_metadata(schema, spec, UNSORTED_SORT_ORDER, location, {})


def test_rows_are_written_one_file_per_course_with_every_row_once(tmp_path):
    draw = random.Random(7)
    courses = [f"course-v1:X+{n}+2026" for n in range(40)]
    pairs = [(f"{course}/{i}", course) for course in courses for i in range(draw.randint(1, 9))]
    draw.shuffle(pairs)
    rows = pa.table({"id": [p[0] for p in pairs], "_course_id": [p[1] for p in pairs]})
    metadata = table_metadata(f"file://{tmp_path}", partitioned=True)
    files = list(data_files(metadata, rows, PyArrowFileIO(), uuid.uuid4(), itertools.count()))
    assert sorted(file.partition[0] for file in files) == sorted(courses)
    written = []
    for file in files:
        part = pq.read_table(file.file_path.removeprefix("file://")).to_pylist()
        assert {row["_course_id"] for row in part} == {file.partition[0]}
        assert file.record_count == len(part)
        written += [(row["id"], row["_course_id"]) for row in part]
    assert sorted(written) == sorted(pairs)


def test_an_unpartitioned_table_is_written_as_it_is(tmp_path):
    rows = pa.table({"id": ["a", "b", "c"], "_course_id": ["y", "x", "y"]})
    metadata = table_metadata(f"file://{tmp_path}", partitioned=False)
    (file,) = data_files(metadata, rows, PyArrowFileIO(), uuid.uuid4(), itertools.count())
    assert pq.read_table(file.file_path.removeprefix("file://")).equals(rows)


def test_the_streaming_writer_rolls_files_over_by_bytes_with_field_ids_and_bounds(tmp_path):
    metadata = table_metadata(f"file://{tmp_path}", partitioned=False)
    writer = DataFileWriter(metadata, PyArrowFileIO(), uuid.uuid4(), itertools.count(), 1000)
    batches = [
        pa.record_batch({"id": [f"{n}-{i}" for i in range(100)], "_course_id": [f"c{n}"] * 100})
        for n in range(5)
    ]
    files = [file for batch in batches if (file := writer.write(batch))]
    assert writer.close() is None  # every batch (over 1000 bytes) closed a file of its own
    assert [file.record_count for file in files] == [100] * 5
    for n, file in enumerate(files):
        path = file.file_path.removeprefix("file://")
        parquet = pq.ParquetFile(path)
        ids = [field.metadata[b"PARQUET:field_id"] for field in parquet.schema_arrow]
        assert ids == [b"1", b"2"]
        assert file.lower_bounds[2] == file.upper_bounds[2] == f"c{n}".encode()
        assert file.file_size_in_bytes == os.path.getsize(path)
        assert parquet.read().column("id").to_pylist() == batches[n].column("id").to_pylist()

    together = DataFileWriter(metadata, PyArrowFileIO(), uuid.uuid4(), itertools.count(), 1 << 30)
    assert all(together.write(batch) is None for batch in batches)
    (file,) = [together.close()]
    assert file.record_count == 500
    assert (file.lower_bounds[2], file.upper_bounds[2]) == (b"c0", b"c4")
