"""A lake table's incremental state read with boto3 alone: Glue's entry, the table's metadata
file, its current snapshot's summary, the state object it names (iceberg_store.py writes them).

The CLI asks it, in its own process, whether each table has anything new: a run with nothing
new in qa or production then lists the landing zone, reads 44 small objects and ends, without
importing pyiceberg or pyarrow and without starting a worker. Anything out of the ordinary (a
table that is not this loader's Iceberg table, a state it cannot read) is `Unusual`: the
table's load, through pyiceberg, meets it again and says what to fix.
"""

import gzip
import json
from collections.abc import Iterable, Mapping

from edxorg_s3_ingest.landing.aws import glue_client, s3_client, split_s3
from edxorg_s3_ingest.state.table_state import StoredState

STATE = "edxorg-s3-ingest.state"
"""The snapshot summary key naming the table's incremental state object (table_state.py)."""
STATE_FOLDER = "_edxorg_s3_ingest_state"
"""Where the state objects are, under the lake (outside every table's location)."""


class Unusual(RuntimeError):
    """The table is not as this loader writes it; its load will say what to fix."""


def lake_answers(lake_url: str) -> bool:
    """Whether the lake bucket answers a listing of the lake (one request). When it does not,
    the CLI leaves every table to its load, whose preflight fails before the landing zone is
    listed and says what to fix."""
    bucket, prefix = split_s3(lake_url)
    try:
        s3_client().list_objects_v2(Bucket=bucket, Prefix=f"{prefix.strip('/')}/", MaxKeys=1)
    except Exception:  # noqa: BLE001 - the loads' preflight explains it
        return False
    return True


def read_lake_state(lake_url: str, database: str, table_name: str) -> StoredState:
    """The state the table's current snapshot points to; empty for a table not in Glue."""
    glue = glue_client()
    try:
        entry = glue.get_table(DatabaseName=database, Name=table_name)["Table"]
    except glue.exceptions.EntityNotFoundException:
        return StoredState()
    parameters = entry.get("Parameters") or {}
    if parameters.get("table_type", "").upper() != "ICEBERG":
        raise Unusual(f"{database}.{table_name} is not an Iceberg table")
    metadata = json.loads(_get(parameters["metadata_location"]))
    if metadata.get("location", "").rstrip("/") != f"{lake_url.rstrip('/')}/{table_name}":
        raise Unusual(f"{database}.{table_name} is at {metadata.get('location')}")
    current = metadata.get("current-snapshot-id")
    snapshots = {snapshot["snapshot-id"]: snapshot for snapshot in metadata.get("snapshots", [])}
    if current is None or current not in snapshots:  # -1 in some writers: no snapshot
        return StoredState()

    def summaries():
        snapshot = snapshots.get(current)
        while snapshot is not None:
            yield snapshot.get("summary") or {}
            snapshot = snapshots.get(snapshot.get("parent-snapshot-id"))

    location = state_location(summaries())
    if not location:
        return StoredState(version=current)
    return StoredState(json.loads(_get(location)), current)


def state_location(summaries: Iterable[Mapping[str, str]]) -> str | None:
    """The state object that the first of `summaries` (the current snapshot's, then its
    ancestors') naming one names, passing only snapshots that rewrote files and changed no row:
    operation `replace`, as Athena's OPTIMIZE or Glue's compaction commit them, without this
    loader's keys. Any other snapshot without a state (rows changed by another writer, or a
    table written before the state lived in the lake): None, and the next load reads every
    course's newest file once."""
    for summary in summaries:
        if location := summary.get(STATE):
            return location
        if summary.get("operation") != "replace":
            return None
    return None


def _get(url: str) -> bytes:
    bucket, key = split_s3(url)
    body = s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
    # Metadata files may be gzipped (write.metadata.compression-codec), state objects always.
    return gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body
