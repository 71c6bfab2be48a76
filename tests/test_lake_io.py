"""The lake tables' FileIO (stores/lake_io.py) on a moto server: objects written in one PUT or a
multipart upload and read back byte for byte, whole or in ranges; pyiceberg's FileIO contract
(FileExistsError, FileNotFoundError); and an interrupted write leaving no object and no upload.
The store's own tests (test_iceberg.py, test_lake_layout.py, test_lake_errors.py) run every
table through it."""

import io
import os

import pytest
from pyiceberg.io import load_file_io
from test_lake_layout import lake  # noqa: F401 - the lake fixture

from edxorg_s3_ingest.stores import lake_io
from edxorg_s3_ingest.stores.iceberg_store import glue_catalog
from edxorg_s3_ingest.stores.lake_io import LakeFileIO

from moto_server import moto  # noqa: F401 - the module's moto server fixture

pytestmark = pytest.mark.slow
BUCKET = "ol-data-lake-raw-qa"


def url(key: str) -> str:
    return f"s3://{BUCKET}/{key}"


def test_the_catalog_uses_it(lake):  # noqa: F811
    assert isinstance(load_file_io(glue_catalog().properties, url("t")), LakeFileIO)


def test_a_small_object_is_one_put_read_back_whole(lake):  # noqa: F811
    files = LakeFileIO({})
    output = files.new_output(url("meta/v1.json"))
    assert not output.exists()
    with output.create() as stream:
        assert stream.write(b'{"a": ') == 6
        stream.write(b"1}")
        assert stream.tell() == 8
    assert output.exists() and len(output) == 8
    assert len(files.new_input(url("meta/v1.json"))) == 8
    with files.new_input(url("meta/v1.json")).open() as stream:
        assert stream.read() == b'{"a": 1}'
    with pytest.raises(FileExistsError):
        output.create()
    with output.create(overwrite=True) as stream:
        stream.write(b"{}")
    assert output.to_input_file().open().read() == b"{}"


def test_a_large_object_is_a_multipart_upload_read_in_ranges(lake, monkeypatch):  # noqa: F811
    data = os.urandom(lake_io.PART_BYTES * 2 + 12345)
    files = LakeFileIO({})
    with files.new_output(url("data/big.parquet")).create() as stream:
        for start in range(0, len(data), 3_000_001):  # writes that straddle the parts
            stream.write(data[start : start + 3_000_001])
    s3 = lake.client("s3")
    head = s3.head_object(Bucket=BUCKET, Key="data/big.parquet")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].endswith('-3"')  # three parts
    monkeypatch.setattr(lake_io, "WHOLE_BYTES", 1 << 20)
    with files.new_input(url("data/big.parquet")).open() as stream:
        assert stream.read(10) == data[:10]
        stream.seek(-8, io.SEEK_END)
        assert stream.read() == data[-8:]
        stream.seek(lake_io.PART_BYTES - 5)
        assert stream.tell() == lake_io.PART_BYTES - 5
        assert stream.read(3 << 20) == data[lake_io.PART_BYTES - 5 :][: 3 << 20]
        stream.seek(0)
        assert stream.read() == data


def test_missing_objects_are_file_not_found(lake):  # noqa: F811
    files = LakeFileIO({})
    missing = files.new_input(url("nothing/here.avro"))
    assert not missing.exists()
    with pytest.raises(FileNotFoundError) as raised:
        missing.open()
    assert raised.value.filename == url("nothing/here.avro")
    with pytest.raises(FileNotFoundError):
        len(missing)
    with pytest.raises(OSError) as raised:
        files.new_input("s3://no-such-bucket/x.json").open()
    assert "NoSuchBucket" in str(raised.value)


def test_an_interrupted_write_leaves_no_object_nor_upload(lake):  # noqa: F811
    files = LakeFileIO({})
    s3 = lake.client("s3")
    for size in (100, lake_io.PART_BYTES + 1):
        key = f"data/broken-{size}.parquet"
        with pytest.raises(RuntimeError), files.new_output(url(key)).create() as stream:
            stream.write(os.urandom(size))
            raise RuntimeError("the writer failed")
        assert not files.new_input(url(key)).exists()
        stream = files.new_output(url(key)).create()
        stream.write(os.urandom(size))
        del stream  # never closed: dropped, not completed
        assert not files.new_input(url(key)).exists()
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")


def test_delete(lake):  # noqa: F811
    files = LakeFileIO({})
    with files.new_output(url("old/manifest.avro")).create() as stream:
        stream.write(b"x")
    files.delete(url("old/manifest.avro"))
    assert not files.new_input(url("old/manifest.avro")).exists()
    files.delete(files.new_input(url("old/manifest.avro")))  # gone already: no error, as S3
