"""The landing zone (SPEC §2): listing a table's prod exports.

`<bucket_url>/db_table/<table>/<prod|edge>/<course_id>/<sha256-of-content>.tsv`

On S3 with the process's boto3 client (aws.py: the standard credential chain, botocore's
adaptive retries, `AWS_ENDPOINT_URL(_S3)` honoured); a local folder with `os.walk`; any other
filesystem with fsspec. Fetching a listed file: fetching.py. Errors are `LandingZoneError`s whose
message names what to fix; `LandingChangedError` when a listed file vanished or changed before
it was read (nothing of the run is committed; the runner reads the table again from a new
listing).
"""

import os
import posixpath
from dataclasses import dataclass, field
from datetime import UTC, datetime

from edxorg_s3_ingest.landing.aws import (
    NO_SUCH_BUCKET,
    THROTTLING,
    attach,
    aws_error_code,
    endpoint_note,
    explain_s3_error,
    is_s3,
    redact,
    retry_policy,
    s3_client,
    split_s3,
)

PROD = "prod"
DB_TABLE = "db_table"
MAX_COURSE_ID_BYTES = 255
"""Longer course ids are refused (real ones are under 100 bytes): see `course_of`."""


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
        failure = explained(error, prefix, "listing the landing zone", "s3:ListBucket")
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
    # Imported here: fsspec (with asyncio) is ~0.04 s of CPU that the CLI would pay before
    # it starts the workers' fork server, and a run with nothing new on S3 or a local folder
    # never needs.
    from fsspec.core import url_to_fs

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


def is_local(url: str) -> bool:
    """Whether the URL is a local path (read in place, never copied)."""
    return "://" not in url or url.startswith("file://")


def explained(error: Exception, url: str, doing: str, needs: str) -> LandingZoneError:
    """The error as a LandingZoneError whose message names what to fix or what failed, with
    the error as its cause (unless it shows a credential: `attach`)."""
    return attach(_explanation(error, url, doing, needs), error)


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
