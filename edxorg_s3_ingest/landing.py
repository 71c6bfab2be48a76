"""The S3 landing zone (SPEC §2): listing a table's prod exports and fetching them.

`<bucket_url>/db_table/<table>/<prod|edge>/<course_id>/<sha256-of-content>.tsv`
"""

import os
import posixpath
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime

import fsspec
from fsspec.core import url_to_fs

PROD = "prod"


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
    """The prod files of one table, and what was found beside them that cannot be loaded."""

    files: list[LandingFile]
    misplaced: list[str]


class LandingZoneError(RuntimeError):
    """The landing zone cannot be read; the message says what to fix."""


def table_prefix(bucket_url: str, table: str) -> str:
    return f"{bucket_url.rstrip('/')}/db_table/{table}/{PROD}"


def list_prod_files(bucket_url: str, table: str) -> Listing:
    """One recursive listing of `db_table/<table>/prod/`; edge files are never listed."""
    prefix = table_prefix(bucket_url, table)
    fs, root = url_to_fs(prefix)
    try:
        entries = fs.find(root, detail=True) if fs.exists(root) else {}
    except PermissionError as error:
        raise LandingZoneError(f"access denied listing {prefix}: {error}") from error
    protocol = prefix.split("://", 1)[0] if "://" in prefix else "file"
    files, misplaced = [], []
    for path, info in sorted(entries.items()):
        if info.get("type") == "directory" or not path.endswith(".tsv"):
            continue
        relative = posixpath.relpath(path, root).split("/")
        url = f"{protocol}://{path}"
        if len(relative) != 2:
            misplaced.append(url)
            continue
        files.append(LandingFile(_modified(info), url, relative[0], int(info.get("size") or 0)))
    return Listing(files, misplaced)


def _modified(info: dict) -> datetime:
    """Modification time as an aware UTC datetime, whatever the filesystem reports."""
    value = info.get("LastModified") or info.get("mtime") or info.get("last_modified")
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    raise LandingZoneError(f"no modification time for {info.get('name')}")


def fetch(url: str, directory: str) -> str:
    """A local path holding the file's bytes: the file itself when local, else a downloaded copy."""
    if "://" not in url or url.startswith("file://"):
        return url.removeprefix("file://")
    target = os.path.join(directory, "download.tsv")
    with fsspec.open(url, "rb") as source, open(target, "wb") as sink:
        shutil.copyfileobj(source, sink, 8 << 20)
    return target
