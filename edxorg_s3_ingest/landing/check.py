"""The landing zone's check, before a run starts any table: one listing of `db_table/`.

Without it, an unreachable endpoint, missing credentials or a missing bucket was met by every
table on its own: 44 times the same message, and with the network down ~50 s of botocore's
retries per table. The check meets it once, within about a minute, and says what was tried
(endpoint, bucket, where the credentials came from) and what to check. Its listing is the one a
run makes anyway to name the folders under `db_table/` that are not known tables, so a run with
nothing new pays no extra request for it.
"""

import os
import random
import time
from collections.abc import Callable

from edxorg_s3_ingest.landing.aws import (
    THROTTLING,
    aws_error_code,
    is_s3,
    retry_policy,
    s3_check_client,
    split_s3,
)
from edxorg_s3_ingest.landing.listing import (
    DB_TABLE,
    LandingZoneError,
    explained,
    is_local,
    storage_options,
)

DEADLINE = 45.0
"""Seconds after which the check retries no more: with its timeouts (aws.py), a run that cannot
reach S3 ends within about a minute, whatever AWS_MAX_ATTEMPTS says."""
MAX_BACKOFF = 20.0
"""botocore's longest wait between two attempts; the waits grow as botocore's do."""
SERVER_ERRORS = {"InternalError", "ServiceUnavailable", "RequestTimeout", "500", "502", "503"}
CONFIG_HINT = "Check --bucket-url, SOURCES__EDXORG_S3__BUCKET_URL or .dlt/config.toml."


def table_folders(
    bucket_url: str,
    on_wait: Callable[[str | None], None] | None = None,
    deadline: float = DEADLINE,
) -> list[str]:
    """The folder names under `<bucket_url>/db_table/` (none when it has no such folder), or a
    `LandingZoneError` whose one message says what was tried and what to check. `on_wait` gets
    `S3 not answering (<why>), retry <n>/<retries>` before each wait, and None once answered."""
    root = f"{bucket_url.rstrip('/')}/{DB_TABLE}"
    if is_s3(root):
        return _s3_folders(bucket_url, root, on_wait or (lambda _: None), deadline)
    if is_local(root):
        return _local_folders(bucket_url, root)
    return _fsspec_folders(bucket_url, root)


def _local_folders(bucket_url: str, root: str) -> list[str]:
    landing = bucket_url.removeprefix("file://")
    if not os.path.isdir(landing):
        what = "is not a folder" if os.path.exists(landing) else "does not exist"
        raise LandingZoneError(f"the landing zone {bucket_url} {what}. {CONFIG_HINT}")
    try:
        with os.scandir(root.removeprefix("file://")) as entries:
            return sorted(entry.name for entry in entries if entry.is_dir())
    except FileNotFoundError:
        return []
    except OSError as error:
        raise explained(error, root, "listing the landing zone", "read access") from None


def _fsspec_folders(bucket_url: str, root: str) -> list[str]:
    from fsspec.core import url_to_fs

    try:
        fs, path = url_to_fs(root, **storage_options(root))
        if not fs.exists(path):
            return []
        entries = fs.ls(path, detail=True)
    except Exception as error:
        raise explained(error, root, "listing the landing zone", "read access") from None
    return sorted(
        entry["name"].rstrip("/").rsplit("/", 1)[-1]
        for entry in entries
        if entry.get("type") == "directory"
    )


def _s3_folders(
    bucket_url: str, root: str, on_wait: Callable[[str | None], None], deadline: float
) -> list[str]:
    bucket, key = split_s3(root)
    client, tried = s3_check_client()
    attempts = retry_policy()["total_max_attempts"]
    started = time.monotonic()
    for attempt in range(1, attempts + 1):
        try:
            pages = client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=f"{key}/", Delimiter="/"
            )
            names = [
                entry["Prefix"][len(key) + 1 :].rstrip("/")
                for page in pages
                for entry in page.get("CommonPrefixes", [])
            ]
        except Exception as error:
            waited = time.monotonic() - started
            reason = _transient(error)
            if reason is None or attempt == attempts or waited >= deadline:
                on_wait(None)
                message = str(
                    explained(error, bucket_url, "listing the landing zone", "s3:ListBucket")
                )
                if reason is not None:
                    message = (
                        f"S3 did not answer listing the landing zone {bucket_url} "
                        f"({reason}; {attempt} attempts in {waited:.0f} s). Check the network "
                        "or VPN and the endpoint, then try again."
                    )
                raise LandingZoneError(f"{message} Tried: {tried}, bucket {bucket}.") from None
            on_wait(f"S3 not answering ({reason}), retry {attempt}/{attempts - 1}")
            backoff = min(random.random() * 2 ** (attempt - 1), MAX_BACKOFF)
            time.sleep(max(0.0, min(backoff, deadline - waited)))
            continue
        on_wait(None)
        return sorted(names)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _transient(error: Exception) -> str | None:
    """Why an attempt may succeed if made again (no answer, a timeout, a 5xx, throttling), or
    None when it cannot (no credentials, access denied, no such bucket...)."""
    from botocore.exceptions import ConnectionClosedError, ConnectionError, ReadTimeoutError

    if isinstance(error, ConnectionError | ReadTimeoutError | ConnectionClosedError):
        return type(error).__name__
    code = aws_error_code(error)
    if code in THROTTLING or code in SERVER_ERRORS:
        return code
    return None
