"""Fetching one listed landing-zone file: in place (local), into memory (small files) or to a
scratch folder, its size checked against the listing's.

From S3, every GET is ranged and resumable: a connection that drops mid-body, or a body shorter
than its Content-Length, is resumed from the last byte received (pinned to the object's ETag),
up to READ_ATTEMPTS times; the bytes received must equal the listing's size, so a truncated
body is never loaded as a short file. A file that vanished or changed since it was listed
raises `LandingChangedError` (the runner reads the table again from a new listing).
`fetch` is thread-safe: a table's load fetches several remote files at once (source.py)."""

import io
import os
import random
import re
import time
from typing import BinaryIO

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    FlexibleChecksumError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from fsspec.core import url_to_fs
from urllib3.exceptions import HTTPError as URLLib3Error

from edxorg_s3_ingest.landing.aws import (
    CHANGED,
    GONE,
    attach,
    aws_error_code,
    endpoint_note,
    is_s3,
    s3_client,
    split_s3,
)
from edxorg_s3_ingest.landing.listing import (
    LandingChangedError,
    LandingZoneError,
    explained,
    is_local,
    storage_options,
)

READ_ATTEMPTS = 5
"""Attempts to receive one object's body when connections drop mid-transfer."""

CHUNK_BYTES = 1 << 20
"""Bytes of a body received at a time (per GET in flight)."""

# A connection that broke while a body was being received: resumed from the last byte (or,
# for a body that fails its checksum, received again whole).
BODY_ERRORS = (
    FlexibleChecksumError,
    ResponseStreamingError,
    IncompleteReadError,
    ReadTimeoutError,
    ConnectionClosedError,
    URLLib3Error,
    ConnectionError,
)


def fetch(url: str, directory: str, size: int | None = None, *, in_memory: bool = False):
    """The file's bytes: a local path holding them (the file itself when local, else a
    download into `directory`), or with `in_memory` the bytes themselves (for small files:
    nothing written, read once). `size` (the listing's) is checked: a file that changed or
    vanished since it was listed raises LandingChangedError, a body cut short is resumed or
    fails; never a short file. Thread-safe: runs on a small pool for remote landing zones."""
    if is_local(url):
        path = _local(url.removeprefix("file://"), size)
        return _read_local(path, size) if in_memory else path
    target = os.path.join(directory, "download.tsv")
    if not is_s3(url):
        fs, path = url_to_fs(url, **storage_options(url))
        if in_memory:
            return _checked_bytes(fs.cat_file(path), url, size)
        fs.get_file(path, target)
        return _checked(target, url, size)
    failure, data = None, None
    try:
        if in_memory:
            sink = io.BytesIO()
            _download(url, sink, size)
            data = sink.getvalue()
        else:
            with open(target, "wb") as sink:
                _download(url, sink, size)
    except LandingZoneError:
        raise
    except Exception as error:
        failure = explained(error, url, "reading", "s3:GetObject")
    if failure is not None:
        raise failure
    return _checked_bytes(data, url, size) if in_memory else _checked(target, url, size)


def _local(path: str, size: int | None) -> str:
    try:
        actual = os.stat(path).st_size
    except FileNotFoundError:
        raise LandingChangedError(
            f"{path} was listed but is gone (deleted during the run?)"
        ) from None
    if size is not None and actual != size:
        raise LandingChangedError(
            f"{path} changed since it was listed ({actual} bytes, the listing said {size})"
        )
    return path


def _read_local(path: str, size: int | None) -> bytes:
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except FileNotFoundError:
        raise LandingChangedError(
            f"{path} was listed but is gone (deleted during the run?)"
        ) from None
    return _checked_bytes(data, path, size)


def _checked(target: str, url: str, size: int | None) -> str:
    _check_size(os.path.getsize(target), url, size)
    return target


def _checked_bytes(data: bytes, url: str, size: int | None) -> bytes:
    _check_size(len(data), url, size)
    return data


def _check_size(received: int, url: str, size: int | None) -> None:
    if size is not None and received != size:
        raise LandingChangedError(
            f"{url}: received {received} bytes, the listing said {size}: the file changed since "
            "it was listed, or its body was cut short"
        )


def _download(url: str, sink: BinaryIO, size: int | None) -> None:
    """The object's bytes into `sink` (a file or a BytesIO). Every GET is ranged, so that S3
    states the object's whole size (`Content-Range: bytes a-b/<size>`) whatever the body's
    Content-Length says; a body that breaks off or ends early is resumed from the last byte
    received, pinned to the first answer's ETag (a changed object fails the resumption)."""
    bucket, key = split_s3(url)
    client = s3_client()
    received, total, pinned = 0, None, {}
    for attempt in range(1, READ_ATTEMPTS + 1):
        failure = None
        try:
            response = client.get_object(
                Bucket=bucket, Key=key, Range=f"bytes={received}-", **pinned
            )
        except ClientError as error:
            code = aws_error_code(error)
            if code in ("InvalidRange", "416") and total is None:
                total = 0  # an empty object has no byte 0
                break
            if code not in GONE | CHANGED:
                raise
            failure = attach(
                LandingChangedError(
                    f"{url} was listed but is gone when read (deleted during the run?)"
                    if code in GONE
                    else f"{url} changed while it was read"
                ),
                error,
            )
        if failure is not None:
            raise failure
        body = response["Body"]
        broken = False
        try:
            start, whole = _span(response)
            if total is None:
                total = whole
                if response.get("ETag"):
                    pinned = {"IfMatch": response["ETag"]}
                if size is not None and total != size:
                    raise LandingChangedError(
                        f"{url} changed since it was listed ({total} bytes, the listing "
                        f"said {size})"
                    )
            elif whole != total:
                raise LandingChangedError(f"{url} changed while it was read")
            if start != received:  # the whole object rather than the range: start over
                sink.seek(0)
                sink.truncate()
                received = 0
            for chunk in body.iter_chunks(CHUNK_BYTES):
                sink.write(chunk)
                received += len(chunk)
        except BODY_ERRORS as error:
            broken = True
            if isinstance(error, FlexibleChecksumError):
                # The bytes received do not match the object's checksum: all of them again.
                sink.seek(0)
                sink.truncate()
                received = 0
            if attempt == READ_ATTEMPTS:
                failure = attach(
                    LandingZoneError(
                        f"reading {url}{endpoint_note('S3')}: the connection broke "
                        f"{READ_ATTEMPTS} times ({received} of {total} bytes received; "
                        f"last: {type(error).__name__}: {error}). Try again later."
                    ),
                    error,
                )
        finally:
            body.close()
        if failure is not None:
            raise failure
        if not broken and received == total:
            return
        _pause(attempt)  # broken off, or ended early without an error: resumed
    if total == 0 and received == 0:
        return
    raise LandingZoneError(
        f"reading {url}{endpoint_note('S3')}: {received} of {total} bytes received after "
        f"{READ_ATTEMPTS} attempts (bodies cut short). Try again later."
    )


def _span(response: dict) -> tuple[int, int]:
    """(first byte, whole object's size) of a GET answer, ranged (206) or not."""
    length = int(response["ContentLength"])
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+)", str(response.get("ContentRange") or ""))
    if response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 206 and match:
        return int(match.group(1)), int(match.group(2))
    return 0, length


def _pause(attempt: int) -> None:
    """Exponential backoff with full jitter before receiving a body again."""
    time.sleep(random.uniform(0, min(0.1 * 2**attempt, 5.0)))
