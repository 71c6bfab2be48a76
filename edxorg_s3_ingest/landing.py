"""The S3 landing zone (SPEC §2): listing a table's prod exports and fetching them.

`<bucket_url>/db_table/<table>/<prod|edge>/<course_id>/<sha256-of-content>.tsv`
"""

import os
import posixpath
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime

import fsspec
from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError
from fsspec.core import url_to_fs

PROD = "prod"

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
CREDENTIALS_HINT = (
    "provide them through the standard AWS chain (AWS_PROFILE, AWS_ACCESS_KEY_ID + "
    "AWS_SECRET_ACCESS_KEY [+ AWS_SESSION_TOKEN], or an IAM role such as IRSA)"
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
    """The prod files of one table, and what was found beside them that cannot be loaded."""

    files: list[LandingFile]
    misplaced: list[str]


class LandingZoneError(RuntimeError):
    """The landing zone cannot be read; the message says what to fix."""


def table_prefix(bucket_url: str, table: str) -> str:
    return f"{bucket_url.rstrip('/')}/db_table/{table}/{PROD}"


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


def storage_options(url: str) -> dict:
    """fsspec options: for S3, no cached listings (a long-lived process must see new files).

    s3fs (aiobotocore) takes credentials from the standard chain (refreshing role credentials)
    and honours AWS_ENDPOINT_URL(_S3) by itself; the endpoint is passed anyway so that fsspec's
    cached filesystem instance is keyed by it.
    """
    if not url.startswith(("s3://", "s3a://")):
        return {}
    options: dict = {"use_listings_cache": False}
    if endpoint := s3_endpoint():
        options["client_kwargs"] = {"endpoint_url": endpoint}
    return options


def list_prod_files(bucket_url: str, table: str) -> Listing:
    """One recursive listing of `db_table/<table>/prod/`; edge files are never listed."""
    prefix = table_prefix(bucket_url, table)
    fs, root = url_to_fs(prefix, **storage_options(prefix))
    try:
        if "://" in prefix and not prefix.startswith("file://"):
            # One listing call; a missing bucket raises rather than looking like an empty one.
            entries = fs.find(root, detail=True)
        else:
            entries = fs.find(root, detail=True) if fs.exists(root) else {}
    except Exception as error:
        needs = "s3:ListBucket"
        message = explain_s3_error(error, prefix, "listing the landing zone", needs)
        if message:
            if aws_error_code(error) in NO_SUCH_BUCKET:
                message += " Check --bucket-url / SOURCES__EDXORG_S3__BUCKET_URL."
            raise LandingZoneError(message) from error
        if isinstance(error, PermissionError):
            raise LandingZoneError(f"access denied listing {prefix}: {error}") from error
        raise
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
    try:
        with fsspec.open(url, "rb", **storage_options(url)) as source, open(target, "wb") as sink:
            shutil.copyfileobj(source, sink, 8 << 20)
    except Exception as error:
        message = explain_s3_error(error, url, "reading", "s3:GetObject")
        if message:
            raise LandingZoneError(message) from error
        raise
    return target
