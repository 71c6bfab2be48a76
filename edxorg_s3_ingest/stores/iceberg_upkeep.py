"""Upkeep of the lake's Iceberg tables, without a human (README: "Table upkeep").

For one table, in this order, each step its own commit and each skipped when there is nothing
to gain:

1. Compaction: the current snapshot's data files grouped by (partition spec, partition), all
   in one group when the table is unpartitioned (files of an earlier spec included); in a
   group, the files below half the target size are packed (first fit, largest first) into bins
   of at most the target size, and each bin of two files or more is rewritten as one file, its
   rows copied verbatim (every column, `_dlt_load_id` included). One overwrite snapshot deletes
   exactly those files and adds the new ones.
2. Manifest merge: when the current snapshot lists more manifests than `max_manifests`, a
   snapshot adding no data whose manifests are merged (pyiceberg's merge append, enabled by the
   table properties `commit.manifest-merge.enabled` / `commit.manifest.min-count-to-merge`,
   which this step sets on the table); manifests holding only deleted entries are dropped.
3. Snapshot expiry: every snapshot older than the retention, except the current one, removed
   from the metadata, only if the table is still at the snapshot planned from
   (iceberg_snapshots.py).
4. State objects: those under `_edxorg_s3_ingest_state/<table>/` that no remaining snapshot
   names and that are older than the retention are deleted (a load writes its state object just
   before its commit: a young unnamed object may be about to be named).

The snapshots of steps 1 and 2 carry the current snapshot's state pointer and load id (a load
reads its state from the current snapshot): the next load plans exactly what it would have
planned without them. Both commit only if the table is still at the snapshot they planned from
(edX tables never retry a commit): otherwise StateMovedError, and nothing changed.
"""

import itertools
import math
import os
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.table import FileScanTask, Table, TableProperties

from edxorg_s3_ingest.crashpoints import crashpoint
from edxorg_s3_ingest.landing.aws import s3_client, split_s3
from edxorg_s3_ingest.settings import ConfigurationError
from edxorg_s3_ingest.state.table_state import StateMovedError
from edxorg_s3_ingest.stores.iceberg_files import DataFileWriter, data_files
from edxorg_s3_ingest.stores.iceberg_snapshots import expire_unless_moved
from edxorg_s3_ingest.stores.iceberg_store import (
    EDX_TABLE_PROPERTIES,
    LOAD_ID,
    OPERATION,
    RETRIES,
    STATE,
    STATE_FOLDER,
    IcebergStore,
)
from edxorg_s3_ingest.tables import REJECTS_TABLE

MANIFEST_MERGE = {
    TableProperties.MANIFEST_MERGE_ENABLED: "true",
    # Every bin of two manifests or more is merged (pyiceberg's default waits for 100).
    TableProperties.MANIFEST_MIN_MERGE_COUNT: "2",
}
MANIFEST_TARGET_BYTES = TableProperties.MANIFEST_TARGET_SIZE_BYTES_DEFAULT
ONE_FILE = 1 << 62
"""A compacted bin is one file, whatever its Arrow size (its files' Parquet bytes are bounded)."""
ENVIRONMENT_VARIABLES = {
    "retention_days": "EDXORG_S3_INGEST_UPKEEP_RETENTION_DAYS",
    "target_file_mb": "EDXORG_S3_INGEST_UPKEEP_TARGET_FILE_MB",
    "max_manifests": "EDXORG_S3_INGEST_UPKEEP_MAX_MANIFESTS",
}


@dataclass(frozen=True)
class UpkeepPolicy:
    retention_days: float = 7
    """Snapshots (and unnamed state objects) older than this go; the current snapshot stays."""
    target_file_mb: int = 64
    """Compacted files are up to this size; files below half of it are small. 64 MB: the size
    the issue asks loads to write when there is that much, a few Athena splits per file, and a
    bin read whole into memory stays within a step pod's limit."""
    max_manifests: int = 10
    """More manifests than this in the current snapshot are merged."""

    @property
    def retention(self) -> timedelta:
        return timedelta(days=self.retention_days)

    @property
    def target_file_bytes(self) -> int:
        return self.target_file_mb << 20

    @classmethod
    def from_environment(cls) -> "UpkeepPolicy":
        """The defaults, overridden by the EDXORG_S3_INGEST_UPKEEP_* environment variables."""
        values = {}
        for name, variable in ENVIRONMENT_VARIABLES.items():
            text = os.environ.get(variable, "").strip()
            if not text:
                continue
            kind = float if name == "retention_days" else int
            try:
                value = kind(text)
            except ValueError:
                value = -1
            if value < (0 if name == "retention_days" else 1):
                least = "a number of days, 0 or more" if kind is float else "a whole number >= 1"
                raise ConfigurationError(f"{variable}={text!r} is not {least}")
            values[name] = value
        return cls(**values)


@dataclass
class UpkeepReport:
    table: str
    files_compacted: int = 0
    files_written: int = 0
    bytes_compacted: int = 0
    manifests_before: int = 0
    manifests_after: int = 0
    snapshots_expired: int = 0
    states_deleted: int = 0
    replans: int = 0
    """Times a load committed while this upkeep was under way, so that it planned again."""
    note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def upkeep_table(
    store: IcebergStore, table_name: str, policy: UpkeepPolicy, now: datetime | None = None
) -> UpkeepReport:
    """Compacts, merges manifests, expires snapshots and deletes unnamed state objects of one
    table (see the module's doc). StateMovedError when a load committed meanwhile."""
    cutoff = (now or datetime.now(UTC)) - policy.retention
    report = UpkeepReport(table_name)
    with store._explained(f"upkeep of {table_name}"):
        table = store._load(table_name)
        if table is None or table.current_snapshot() is None:
            report.note = "no table yet"
            return report
        if table_name != REJECTS_TABLE and table.properties.get(RETRIES) != "0":
            # As a load would: an edX table's commits must never be re-applied on a newer
            # snapshot (this one carries the state of the snapshot it planned from).
            with table.transaction() as transaction:
                transaction.set_properties({RETRIES: EDX_TABLE_PROPERTIES[RETRIES]})
        try:
            compact(table, policy.target_file_bytes, report)
            merge_manifests(table, policy.max_manifests, report)
        except CommitFailedException as error:
            # A failed commit leaves `table` at the snapshot the step planned from.
            planned = table.current_snapshot().snapshot_id
            raise StateMovedError(table_name, planned, "a newer snapshot") from error
        report.snapshots_expired = expire(table, cutoff)
        if table_name != REJECTS_TABLE:
            report.states_deleted = delete_unnamed_states(store, table, table_name, cutoff)
    return report


def carried(table: Table, operation: str) -> dict[str, str]:
    """The summary of an upkeep snapshot: the current snapshot's state pointer and load id."""
    summary = table.current_snapshot().summary
    kept = {key: summary[key] for key in (STATE, LOAD_ID) if summary and summary[key]}
    return {**kept, OPERATION: operation}


# -- 1. compaction ----------------------------------------------------------------------------


def small_file_bins(
    tasks: list[FileScanTask], target_bytes: int, unpartitioned: bool
) -> list[list[FileScanTask]]:
    """Per (spec, partition), the files below target/2 packed first-fit, largest first, into
    bins of at most `target_bytes`; only bins of two files or more (a lone file gains nothing).
    A compacted file below target/2 is packed again with the next small files, so a file is
    rewritten at most until it reaches half the target. When the table is `unpartitioned` now,
    every file is in one group whatever spec it was written with: the one-course files of a
    table once partitioned by course are packed together (and written unpartitioned)."""
    groups: dict[tuple, list[FileScanTask]] = defaultdict(list)
    for task in tasks:
        if task.file.file_size_in_bytes < target_bytes // 2:
            key = () if unpartitioned else (task.file.spec_id, task.file.partition)
            groups[key].append(task)
    bins = []
    for group in groups.values():
        group.sort(key=lambda task: task.file.file_size_in_bytes, reverse=True)
        packed: list[list[FileScanTask]] = []
        used: list[int] = []  # the bytes of each bin
        for task in group:
            size = task.file.file_size_in_bytes
            index = next(
                (i for i, bytes_ in enumerate(used) if bytes_ + size <= target_bytes), None
            )
            if index is None:
                packed.append([task])
                used.append(size)
            else:
                packed[index].append(task)
                used[index] += size
        bins += [files for files in packed if len(files) > 1]
    return bins


def compact(table: Table, target_bytes: int, report: UpkeepReport) -> None:
    """Rewrites each bin of small files as one file, in one overwrite snapshot."""
    snapshot = table.current_snapshot()
    if int(snapshot.summary["total-delete-files"] or 0):
        # This loader writes no delete files; someone else's are left to Athena's OPTIMIZE.
        report.note = "delete files present: compaction left to Athena OPTIMIZE"
        return
    unpartitioned = not table.spec().fields
    bins = small_file_bins(list(table.scan().plan_files()), target_bytes, unpartitioned)
    if not bins:
        return
    metadata = table.metadata
    scan = ArrowScan(metadata, table.io, metadata.schema(), AlwaysTrue())
    with table.transaction() as transaction:
        update = transaction.update_snapshot(snapshot_properties=carried(table, "compact"))
        with update.overwrite() as overwrite:
            counter = itertools.count()
            for tasks in bins:
                if unpartitioned:  # streamed: memory holds a row group, not the bin
                    writer = DataFileWriter(
                        metadata, table.io, overwrite.commit_uuid, counter, ONE_FILE
                    )
                    written = writer.files(scan.to_record_batches(tasks))
                else:
                    rows = scan.to_table(tasks)
                    written = data_files(metadata, rows, table.io, overwrite.commit_uuid, counter)
                added = 0
                for file in written:
                    overwrite.append_data_file(file)
                    added += file.record_count
                    report.files_written += 1
                    crashpoint("upkeep.compacted_file_written")
                expected = sum(task.file.record_count for task in tasks)
                if added != expected:  # never commit a compaction that lost or made rows
                    raise RuntimeError(f"compaction wrote {added} rows of {expected}")
                for task in tasks:
                    overwrite.delete_data_file(task.file)
                    report.files_compacted += 1
                    report.bytes_compacted += task.file.file_size_in_bytes
            crashpoint("upkeep.before_commit")
    crashpoint("upkeep.compacted")


# -- 2. manifests -----------------------------------------------------------------------------


def merge_manifests(table: Table, max_manifests: int, report: UpkeepReport) -> None:
    """A snapshot adding nothing whose manifests are merged (pyiceberg's merge append), when
    the current one lists more than `max_manifests` (or, for a table whose manifests are large,
    more than twice the manifests of the merge's 8 MB target)."""
    manifests = table.current_snapshot().manifests(table.io)
    report.manifests_before = report.manifests_after = len(manifests)
    size = sum(manifest.manifest_length for manifest in manifests)
    if len(manifests) <= max(max_manifests, 2 * math.ceil(size / MANIFEST_TARGET_BYTES)):
        return
    with table.transaction() as transaction:
        if any(table.properties.get(key) != value for key, value in MANIFEST_MERGE.items()):
            transaction.set_properties(MANIFEST_MERGE)
        update = transaction.update_snapshot(snapshot_properties=carried(table, "merge-manifests"))
        with update.merge_append():
            pass  # no file added: the merge of the existing manifests is the whole snapshot
    report.manifests_after = len(table.current_snapshot().manifests(table.io))


# -- 3. snapshots -----------------------------------------------------------------------------


def expire(table: Table, cutoff: datetime) -> int:
    """Removes the snapshots older than `cutoff` but the current one (and any branch or tag
    head); planned again once if the table moved meanwhile (another run's commit, the
    platform's own expiry): expiring by age is the same decision on any snapshot."""
    for attempt in range(2):
        protected = {ref.snapshot_id for ref in table.metadata.refs.values()}
        old = [
            snapshot.snapshot_id
            for snapshot in table.snapshots()
            if snapshot.timestamp_ms < cutoff.timestamp() * 1000
            and snapshot.snapshot_id not in protected
        ]
        if not old:
            return 0
        try:
            expire_unless_moved(table, old, table.current_snapshot().snapshot_id)
            return len(old)
        except (CommitFailedException, ValueError):
            # ValueError: a listed snapshot was expired by someone else in between.
            if attempt:
                raise
            table.refresh()
    return 0


# -- 4. state objects -------------------------------------------------------------------------


def delete_unnamed_states(
    store: IcebergStore, table: Table, table_name: str, cutoff: datetime
) -> int:
    """Deletes the table's state objects that no snapshot names and older than `cutoff`."""
    named = {s.summary[STATE] for s in table.snapshots() if s.summary and s.summary[STATE]}
    bucket, prefix = split_s3(f"{store.lake_url}/{STATE_FOLDER}/{table_name}/")
    s3 = s3_client()
    stale = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for item in page.get("Contents", [])
        if f"s3://{bucket}/{item['Key']}" not in named and item["LastModified"] < cutoff
    ]
    for start in range(0, len(stale), 1000):
        keys = [{"Key": key} for key in stale[start : start + 1000]]
        s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    return len(stale)


def upkeep(
    lake_url: str, database: str, table_name: str, policy: UpkeepPolicy, now=None
) -> UpkeepReport:
    """`upkeep_table`, planned again (twice at most) when a load committed meanwhile."""
    store = IcebergStore(lake_url, database)
    for attempt in range(3):
        try:
            report = upkeep_table(store, table_name, policy, now)
        except StateMovedError:
            if attempt == 2:
                raise
            continue
        report.replans = attempt
        return report
    raise AssertionError("unreachable")
