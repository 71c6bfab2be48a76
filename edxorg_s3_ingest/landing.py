"""The S3 landing zone (SPEC §2): listing a table's prod exports and fetching them.

`<bucket_url>/db_table/<table>/<prod|edge>/<course_id>/<sha256-of-content>.tsv`

S3 is read with one boto3 client per process (the standard credential chain, refreshed on long
runs; `AWS_ENDPOINT_URL(_S3)` honoured). Faults are handled in two layers:

- Requests (listing pages, GETs): botocore retries throttling (`SlowDown`, 503), 5xx answers and
  dropped connections with exponential backoff and jitter, in `adaptive` mode (which also slows
  the client down while S3 throttles), up to 10 attempts. `AWS_RETRY_MODE` / `AWS_MAX_ATTEMPTS`
  override both, as for any AWS SDK.
- Bodies: a connection that drops mid-body, or a body shorter than its Content-Length, is resumed
  from the last byte received (a ranged GET pinned to the object's ETag), up to `READ_ATTEMPTS`
  times. The bytes received must then equal the size the listing gave: a truncated body is never
  loaded as a short file.

A file that vanished or changed between the listing and the fetch raises `LandingChangedError`:
nothing of the run is committed, and the runner runs the table again from a new listing.

`fetch` is thread-safe: a table's load fetches several remote files at once (source.py). Local
files are read in place, never copied; a small file can be fetched as bytes (`in_memory`).
"""

import functools
import io
import os
import posixpath
import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    FlexibleChecksumError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from fsspec.core import url_to_fs
from urllib3.exceptions import HTTPError as URLLib3Error

PROD = "prod"
DB_TABLE = "db_table"
DEFAULT_REGION = "us-east-1"
RETRY_MODE = "adaptive"
MAX_ATTEMPTS = 10
"""botocore's attempts per request (the first one included), unless AWS_MAX_ATTEMPTS is set."""
READ_ATTEMPTS = 5
"""Attempts to receive one object's body when connections drop mid-transfer."""
CHUNK_BYTES = 1 << 20
"""Bytes of a body received at a time (per GET in flight)."""
MAX_COURSE_ID_BYTES = 255
"""Longer course ids are refused (real ones are under 100 bytes): see `course_of`."""

# AWS error codes, grouped by what the user has to fix (S3 and Glue spell them differently).
NO_CREDENTIALS = "NoCredentials"
BAD_CREDENTIALS = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "ExpiredToken",
    "ExpiredTokenException",
    "TokenRefreshRequired",
}
ACCESS_DENIED = {"AccessDenied", "AccessDeniedException", "AllAccessDisabled", "403", "Forbidden"}
NO_SUCH_BUCKET = {"NoSuchBucket"}
GONE = {"NoSuchKey", "404", "NotFound"}
CHANGED = {"PreconditionFailed", "412", "InvalidRange", "416"}
THROTTLING = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "503"}
CREDENTIALS_HINT = (
    "provide them through the standard AWS chain (AWS_PROFILE, AWS_ACCESS_KEY_ID + "
    "AWS_SECRET_ACCESS_KEY [+ AWS_SESSION_TOKEN], or an IAM role such as IRSA)"
)
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


@dataclass(frozen=True, order=True)
class LandingFile:
    """One export file. Ordered by (modified, url): the SPEC §5 meaning of "newer"."""

    modified: datetime
    url: str
    course_id: str
    size: int

    @property
    def version(self) -> list:
        """What identifies this file's current version in the incremental state (SPEC §7)."""
        return [self.url, self.modified.isoformat(), self.size]


@dataclass(frozen=True)
class Listing:
    """The prod files of one table, and what was found beside them that cannot be loaded:
    `misplaced` entries read `<url> (<reason>)`."""

    files: list[LandingFile]
    misplaced: list[str] = field(default_factory=list)


class LandingZoneError(RuntimeError):
    """The landing zone cannot be read; the message says what to fix (and never shows a
    credential value)."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


class LandingChangedError(LandingZoneError):
    """A listed file vanished or changed before it was read: the table is read again."""


def table_prefix(bucket_url: str, table: str) -> str:
    return f"{bucket_url.rstrip('/')}/{DB_TABLE}/{table}/{PROD}"


def aws_error_code(error: BaseException) -> str | None:
    """The AWS error code behind an exception, wrapped or not (s3fs turns them into OSErrors)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, NoCredentialsError | PartialCredentialsError):
            return NO_CREDENTIALS
        if isinstance(error, ClientError):
            return str(error.response.get("Error", {}).get("Code") or "")
        error = error.__cause__ or error.__context__
    return None


def endpoint_note(service: str) -> str:
    """Where requests went, when an `AWS_ENDPOINT_URL*` variable redirects them."""
    endpoint = os.environ.get(f"AWS_ENDPOINT_URL_{service}") or os.environ.get("AWS_ENDPOINT_URL")
    return f" (endpoint {endpoint})" if endpoint else ""


def explain_s3_error(error: BaseException, url: str, doing: str, needs: str) -> str | None:
    """A message naming what to fix for an S3 failure, or None when it is not an AWS one."""
    code = aws_error_code(error)
    bucket = url.split("://", 1)[-1].split("/", 1)[0]
    where = f"{doing} {url}{endpoint_note('S3')}"
    if code == NO_CREDENTIALS:
        return f"no AWS credentials found {where}: {CREDENTIALS_HINT}."
    if code in BAD_CREDENTIALS:
        return (
            f"AWS rejected the credentials ({code}) {where}: check AWS_PROFILE / "
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN (expired?)."
        )
    if code in ACCESS_DENIED:
        return f"access denied ({code}) {where}: the AWS identity needs {needs} on s3://{bucket}."
    if code in NO_SUCH_BUCKET:
        return f"the bucket s3://{bucket} does not exist ({doing} {url}{endpoint_note('S3')})."
    return None


def s3_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def retry_policy() -> dict:
    """botocore's retries: AWS_RETRY_MODE / AWS_MAX_ATTEMPTS when set, else adaptive, 10."""
    attempts = os.environ.get("AWS_MAX_ATTEMPTS", "").strip()
    return {
        "mode": os.environ.get("AWS_RETRY_MODE", "").strip() or RETRY_MODE,
        # `total_max_attempts` counts the first attempt, as AWS_MAX_ATTEMPTS does.
        "total_max_attempts": int(attempts) if attempts.isdigit() else MAX_ATTEMPTS,
    }


def aws_environment() -> tuple:
    """The AWS settings of this process: what a cached client depends on."""
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))


_CREDENTIALS: list = []
"""The credentials of the S3 clients this process made (from the environment, a profile, a
role...): masked in every message."""
SECRET_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def credential_values() -> set[str]:
    """The AWS credential values this process uses (environment, and those its sessions
    resolved, e.g. from a profile), which no message, report or log may show."""
    values = {os.environ.get(name, "") for name in SECRET_VARIABLES}
    for credentials in list(_CREDENTIALS):
        try:
            frozen = credentials.get_frozen_credentials()
        except Exception:  # noqa: BLE001 - best effort: the environment's values are masked
            continue
        values |= {frozen.access_key or "", frozen.secret_key or "", frozen.token or ""}
    return {value for value in values if len(value) >= 4}


def redact(text: str) -> str:
    """`text` with every credential value of this process replaced by `***`."""
    for secret in credential_values():
        text = text.replace(secret, "***")
    return text


@functools.cache
def _s3_client(_environment: tuple):
    session = boto3.Session()
    # Resolved once here (creating the client would do it anyway); None when there are none.
    if (credentials := session.get_credentials()) is not None:
        _CREDENTIALS.append(credentials)
    config = Config(
        retries=retry_policy(),
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=16,
    )
    return session.client(
        "s3",
        region_name=session.region_name or DEFAULT_REGION,
        endpoint_url=s3_endpoint(),
        config=config,
    )


def s3_client():
    """The process's S3 client for the current AWS settings (thread-safe)."""
    return _s3_client(aws_environment())


def is_s3(url: str) -> bool:
    return url.startswith(("s3://", "s3a://"))


def split_s3(url: str) -> tuple[str, str]:
    bucket, _, key = url.split("://", 1)[1].partition("/")
    return bucket, key


def storage_options(url: str) -> dict:
    """fsspec options (landing zones on other filesystems than S3 and local disks)."""
    return {}


def list_prod_files(bucket_url: str, table: str) -> Listing:
    """One recursive listing of `db_table/<table>/prod/`; edge files are never listed."""
    prefix = table_prefix(bucket_url, table)
    failure = None
    try:
        if is_s3(prefix):
            entries = list(_list_s3(prefix))
        elif is_local(prefix):
            entries = _list_local(prefix)
        else:
            entries = _list_fsspec(prefix)
    except LandingZoneError:
        raise
    except Exception as error:
        failure = _explained(error, prefix, "listing the landing zone", "s3:ListBucket")
    if failure is not None:
        raise failure
    files, misplaced = [], []
    for url, relative, size, modified in entries:
        if not relative or relative.endswith("/") or not relative.endswith(".tsv"):
            continue
        course_id, reason = course_of(relative)
        if reason:
            misplaced.append(f"{url} ({reason})")
            continue
        files.append(LandingFile(modified, url, course_id, size))
    return Listing(files, misplaced)


def course_of(relative: str) -> tuple[str, str | None]:
    """The course id of `<course_id>/<file>.tsv` (a key relative to the table's prod folder),
    or why the key cannot be an export of a course.

    Any text is a course id and is loaded exactly as written, except: an empty folder name,
    `.` and `..` (path syntax, not names), names that are not UTF-8 (a local folder's bytes),
    and names over MAX_COURSE_ID_BYTES (the lake's keys hold the course id percent-encoded, and
    S3 refuses keys over 1,024 bytes)."""
    parts = relative.split("/")
    if len(parts) != 2:
        return "", "not <course_id>/<file>.tsv: a nested folder"
    course_id = parts[0]
    if course_id in ("", ".", ".."):
        return "", f"not a course id: the folder name {course_id!r}"
    try:
        size = len(course_id.encode("utf-8"))
    except UnicodeEncodeError:
        return "", "not a course id: the folder name is not valid UTF-8"
    if size > MAX_COURSE_ID_BYTES:
        return "", (
            f"not a course id: {size} bytes, over {MAX_COURSE_ID_BYTES} (the lake's object keys "
            "would exceed S3's limit)"
        )
    return course_id, None


def _list_s3(prefix: str):
    """(url, key relative to the prefix, size, modified) of every object under `prefix/`."""
    bucket, key = split_s3(prefix)
    protocol = prefix.split("://", 1)[0]
    pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{key}/")
    for page in pages:
        for item in page.get("Contents", []):
            yield (
                f"{protocol}://{bucket}/{item['Key']}",
                item["Key"][len(key) + 1 :],
                int(item["Size"]),
                _utc(item["LastModified"]),
            )


def _list_local(prefix: str) -> list:
    """As `_list_fsspec` gives them for a local folder (same URLs), from `os.scandir`: three
    times faster, which is most of a run with nothing new."""
    root = os.path.abspath(prefix.removeprefix("file://"))
    entries = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = f"{folder}/{name}"
            try:
                stat = os.stat(path)
            except FileNotFoundError:  # deleted since the folder was read
                continue
            modified = datetime.fromtimestamp(stat.st_mtime, UTC)
            entries.append((f"file://{path}", path[len(root) + 1 :], stat.st_size, modified))
    return sorted(entries)


def _list_fsspec(prefix: str) -> list:
    fs, root = url_to_fs(prefix, **storage_options(prefix))
    if not fs.exists(root):
        return []
    protocol = prefix.split("://", 1)[0] if "://" in prefix else "file"
    entries = []
    for path, info in sorted(fs.find(root, detail=True).items()):
        if info.get("type") == "directory":
            continue
        url = f"{protocol}://{path}"
        entries.append(
            (url, posixpath.relpath(path, root), int(info.get("size") or 0), _modified(info))
        )
    return entries


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def _modified(info: dict) -> datetime:
    """Modification time as an aware UTC datetime, whatever the filesystem reports."""
    value = info.get("LastModified") or info.get("mtime") or info.get("last_modified")
    if isinstance(value, datetime):
        return _utc(value)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    raise LandingZoneError(f"no modification time for {info.get('name')}")


def unknown_table_folders(bucket_url: str, known: list[str]) -> list[str]:
    """The folders under `db_table/` that are not tables this loader knows (one listing call;
    they are never read). Empty when the landing zone cannot be listed: the tables' own
    listings report that."""
    root = f"{bucket_url.rstrip('/')}/{DB_TABLE}"
    try:
        if is_s3(root):
            bucket, key = split_s3(root)
            pages = s3_client().get_paginator("list_objects_v2")
            names = [
                entry["Prefix"][len(key) + 1 :].rstrip("/")
                for page in pages.paginate(Bucket=bucket, Prefix=f"{key}/", Delimiter="/")
                for entry in page.get("CommonPrefixes", [])
            ]
        else:
            fs, path = url_to_fs(root, **storage_options(root))
            names = [
                posixpath.basename(entry["name"].rstrip("/"))
                for entry in (fs.ls(path, detail=True) if fs.exists(path) else [])
                if entry.get("type") == "directory"
            ]
    except Exception:  # noqa: BLE001 - only a report; the tables' listings raise the error
        return []
    return sorted(set(names) - set(known))


def is_local(url: str) -> bool:
    """Whether the URL is a local path (read in place, never copied)."""
    return "://" not in url or url.startswith("file://")


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
        failure = _explained(error, url, "reading", "s3:GetObject")
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
            failure = _attach(
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
                failure = _attach(
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


def _attach(exception: BaseException, cause: BaseException) -> BaseException:
    """`exception`, with `cause` (scrubbed of credentials) as its cause."""
    exception.__cause__ = safe_cause(cause)
    exception.__suppress_context__ = True
    return exception


def safe_cause(cause: BaseException) -> BaseException:
    """`cause`, to raise from, with every exception of its chain scrubbed IN PLACE of any
    credential value in its text (a verbose server may echo the access key, and dlt's trace
    and tracebacks print the whole chain)."""
    for error in _chain(cause):
        text = str(error)
        if redact(text) == text:
            continue
        if isinstance(error, OSError) and error.strerror:
            error.strerror = redact(str(error.strerror))
            error.args = (error.errno, error.strerror)
        else:
            error.args = (redact(text),)
    return cause


def caused_by(error: BaseException | None, kind: type) -> bool:
    """Whether an error of `kind` is the error or any of its causes."""
    return any(isinstance(link, kind) for link in _chain(error))


def _chain(error: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _explained(error: Exception, url: str, doing: str, needs: str) -> LandingZoneError:
    """The error as a LandingZoneError whose message names what to fix or what failed, with
    the error as its cause (unless it shows a credential: `_attach`)."""
    return _attach(_explanation(error, url, doing, needs), error)


def _explanation(error: Exception, url: str, doing: str, needs: str) -> LandingZoneError:
    message = explain_s3_error(error, url, doing, needs)
    if message:
        if aws_error_code(error) in NO_SUCH_BUCKET:
            message += " Check --bucket-url / SOURCES__EDXORG_S3__BUCKET_URL."
        return LandingZoneError(message)
    if isinstance(error, PermissionError):
        return LandingZoneError(f"access denied {doing} {url}: {error}")
    if not is_s3(url):
        return LandingZoneError(f"{doing} {url}: {type(error).__name__}: {error}")
    code = aws_error_code(error)
    attempts = retry_policy()["total_max_attempts"]
    if code:
        advice = (
            "S3 kept throttling: try again later, or run fewer loads at once"
            if code in THROTTLING
            else "Try again later"
        )
        return LandingZoneError(
            f"S3 answered {code} {doing} {url}{endpoint_note('S3')} after {attempts} attempts "
            f"({error}). {advice}."
        )
    if isinstance(error, FileNotFoundError):
        return LandingChangedError(f"{url} was listed but is gone when read ({error})")
    return LandingZoneError(
        f"S3 did not answer {doing} {url}{endpoint_note('S3')} after {attempts} attempts "
        f"({type(error).__name__}: {error}). Check the network; try again later."
    )
