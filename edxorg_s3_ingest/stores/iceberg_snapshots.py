"""Expiring snapshots only while the table is still where the upkeep planned: one use of
pyiceberg's private API (checked against pyiceberg 0.12.0; tests/test_iceberg_upkeep.py fails
loudly if it changes).

pyiceberg's `table.maintenance.expire_snapshots()` commits its removal with no requirement on
the table's current snapshot, and the catalog applies the removal to whatever metadata is
current at commit time: had the table been set back to one of the listed snapshots meanwhile
(a rollback, the platform repairing the Glue pointer to an earlier metadata file), the removal
would delete the `main` branch with it, and the table would lose its rows and its state. The
same removal is staged here with the requirement that `main` is still at `current`
(`Transaction._apply`), so that such a commit fails (CommitFailedException) and changes nothing.
"""

from pyiceberg.table import Table
from pyiceberg.table.refs import MAIN_BRANCH
from pyiceberg.table.update import AssertRefSnapshotId, RemoveSnapshotsUpdate


def expire_unless_moved(table: Table, snapshot_ids: list[int], current: int) -> None:
    """Removes `snapshot_ids` from the table's metadata in one commit, if `main` is still at
    `current` then (the snapshots' files stay: orphan-file removal deletes them)."""
    if current in snapshot_ids:
        raise ValueError(f"snapshot {current} is the table's current snapshot")
    with table.transaction() as transaction:
        transaction._apply(
            (RemoveSnapshotsUpdate(snapshot_ids=snapshot_ids),),
            (AssertRefSnapshotId(snapshot_id=current, ref=MAIN_BRANCH),),
        )
