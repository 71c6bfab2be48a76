"""The lake tables' FileIO: what pyiceberg reads and writes itself (table metadata, manifests,
manifest lists, the load's state, files written again) goes through the process's boto3 S3
client (landing/aws.py), which the fork server builds once and every worker inherits.

Through s3fs, pyiceberg's FsspecFileIO built an aiobotocore session and client in each worker
at its first request, which came with the first table's creation or commit: botocore's S3
model and endpoint rules loaded again and SSL contexts made, ~0.2 s of CPU on the serial tail
of that table's load (py-spy of a qa run, benchmarks/README "qa: one S3 client"). pyiceberg's
Arrow reader (`ArrowScan`: the rows a copy-on-write keeps, compaction) still reads data files
through the s3fs filesystem of `get_fs`, now built only when a scan needs it.

Errors are what s3fs raised, which the store's messages read (iceberg_store._explain): an
OSError (FileNotFoundError for a missing object, PermissionError for a denied one) caused by
botocore's error.
"""

import errno
import io
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from pyiceberg.io import InputFile, InputStream, OutputFile, OutputStream
from pyiceberg.io.fsspec import FsspecFileIO

from edxorg_s3_ingest.landing.aws import (
    ACCESS_DENIED,
    GONE,
    aws_error_code,
    is_s3,
    s3_client,
    split_s3,
)
from edxorg_s3_ingest.stores.s3_upload import S3Upload

PART_BYTES = 8 << 20
"""Bytes of each part of a multipart upload (but the last); a file written with less is one
PUT. A writer holds at most one part."""
WHOLE_BYTES = 8 << 20
"""An object of at most this size is read with the one GET that opens it (metadata, manifests,
the state); a larger one in ranged GETs of READ_BYTES, as it is read."""
READ_BYTES = 1 << 20


class LakeFileIO(FsspecFileIO):
    """FsspecFileIO with S3 objects read, written and deleted through the process's S3 client
    (any other scheme, and `get_fs`, as FsspecFileIO does)."""

    def new_input(self, location: str) -> InputFile:
        return S3InputFile(location) if is_s3(location) else super().new_input(location)

    def new_output(self, location: str) -> OutputFile:
        return S3OutputFile(location) if is_s3(location) else super().new_output(location)

    def delete(self, location: str | InputFile | OutputFile) -> None:
        path = location.location if isinstance(location, InputFile | OutputFile) else location
        if not is_s3(path):
            super().delete(location)
            return
        bucket, key = split_s3(path)
        with as_os_error(path):
            s3_client().delete_object(Bucket=bucket, Key=key)


@contextmanager
def as_os_error(location: str) -> Iterator[None]:
    """botocore's errors as the OSErrors s3fs raised, caused by them."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as error:
        code = aws_error_code(error)
        if code in GONE:
            raise FileNotFoundError(errno.ENOENT, "no such S3 object", location) from error
        if code in ACCESS_DENIED:
            raise PermissionError(errno.EACCES, f"S3 denied access ({code})", location) from error
        raise OSError(errno.EIO, f"S3 answered {code or type(error).__name__}", location) from error


def _size(location: str) -> int:
    bucket, key = split_s3(location)
    with as_os_error(location):
        return s3_client().head_object(Bucket=bucket, Key=key)["ContentLength"]


def _exists(location: str) -> bool:
    try:
        _size(location)
    except FileNotFoundError:
        return False
    return True


class _S3Object:
    """What pyiceberg asks of an input and an output file alike (`location` is theirs)."""

    location: str

    def __len__(self) -> int:
        return _size(self.location)

    def exists(self) -> bool:
        return _exists(self.location)


class S3InputFile(_S3Object, InputFile):
    def open(self, seekable: bool = True) -> InputStream:
        bucket, key = split_s3(self.location)
        with as_os_error(self.location):
            answer = s3_client().get_object(Bucket=bucket, Key=key)
            size = answer["ContentLength"]
            if size <= WHOLE_BYTES:
                return io.BytesIO(answer["Body"].read())
            answer["Body"].close()
        ranges = _Ranges(self.location, bucket, key, size, answer.get("ETag"))
        return io.BufferedReader(ranges, buffer_size=READ_BYTES)


class _Ranges(io.RawIOBase):
    """A large object read in ranged GETs, each of the version first opened (`If-Match`)."""

    def __init__(self, location: str, bucket: str, key: str, size: int, etag: str | None):
        super().__init__()
        self.location, self.bucket, self.key = location, bucket, key
        self.size, self.etag, self.position = size, etag, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer) -> int:
        end = min(self.size, self.position + len(buffer))
        if end <= self.position:
            return 0
        condition = {"IfMatch": self.etag} if self.etag else {}
        with as_os_error(self.location):
            answer = s3_client().get_object(
                Bucket=self.bucket,
                Key=self.key,
                Range=f"bytes={self.position}-{end - 1}",
                **condition,
            )
            data = answer["Body"].read()
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)


class S3OutputFile(_S3Object, OutputFile):
    def to_input_file(self) -> InputFile:
        return S3InputFile(self.location)

    def create(self, overwrite: bool = False) -> OutputStream:
        # As FsspecOutputFile: a check, not a guarantee (a concurrent writer may come between).
        if not overwrite and self.exists():
            raise FileExistsError(f"Cannot create file, file already exists: {self.location}")
        return _Upload(self.location)


class _Upload(io.RawIOBase):
    """An object written as a stream: one PUT at close, or a multipart upload once PART_BYTES
    were written. Left by an exception (`with`) or never closed, nothing is completed: an
    upload begun is aborted (an uncompleted one is no object)."""

    def __init__(self, location: str) -> None:
        super().__init__()
        self.location = location
        self.pending = bytearray()
        self.written = 0
        self.upload = S3Upload(*split_s3(location))

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.written

    def write(self, data) -> int:
        if self.closed:
            raise ValueError(f"write to a closed upload of {self.location}")
        self.pending += data
        self.written += len(data)
        while len(self.pending) >= PART_BYTES:
            self._send(self.pending[:PART_BYTES])
            del self.pending[:PART_BYTES]
        return len(data)

    def close(self) -> None:
        if self.closed:
            return
        try:
            with as_os_error(self.location):
                self.upload.finish(bytes(self.pending))
        finally:
            self.pending = bytearray()
            self.abort()
            super().close()

    def abort(self) -> None:
        """Drops what was sent of an upload not completed."""
        with as_os_error(self.location):
            self.upload.abort()

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self._drop()

    def __del__(self) -> None:
        # IOBase would close, which completes: an upload never closed is dropped instead.
        if not self.closed:
            with suppress(Exception):
                self._drop()

    def _drop(self) -> None:
        try:
            self.abort()
        finally:
            self.pending = bytearray()
            super().close()

    def _send(self, body: bytes | bytearray) -> None:
        with as_os_error(self.location):
            self.upload.send_part(bytes(body))
