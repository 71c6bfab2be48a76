"""The store of each environment (SPEC §8): Parquet folders in dev, Iceberg + Glue in the lake.

Both hold the tables AND each table's incremental state (table_state.py), committed together.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from edxorg_s3_ingest.settings import Settings
from edxorg_s3_ingest.state.table_state import StateMovedError, StoredState

if TYPE_CHECKING:
    from edxorg_s3_ingest.stores.lake_uploads import EarlyUploads


@dataclass(frozen=True)
class LoadCommit:
    """What one load commits to its table, at once: each course in `courses` holds exactly its
    rows in `staged` (`full_refresh`: the table holds exactly `staged`), and the table's state
    becomes `state`; only if the table is still at version `base`, the one the load planned
    from. `uploads`: data files uploaded while the load read, where the store does that."""

    table_name: str
    load_id: str
    staged: list[Path]
    courses: dict
    state: dict
    base: str | int | None
    full_refresh: bool = False
    uploads: "EarlyUploads | None" = None

    def already_done(self, found: str | int | None, last_load_id: str | None) -> bool:
        """False when the table is at `base` (commit); True when this very load made the
        table's last commit (a commit done again: nothing to do); else StateMovedError: another
        run moved the table on."""
        if found == self.base:
            return False
        if last_load_id == self.load_id:
            return True
        raise StateMovedError(self.table_name, self.base, found)


class TableStore(Protocol):
    """Where consolidated tables live: a Parquet folder (dev) or Iceberg + Glue (qa, production)."""

    def uri(self, table_name: str) -> str: ...

    def preflight(self) -> None:
        """Fails fast, with a message naming what to fix, when the store cannot be written;
        called before any landing-zone file is read."""

    def read_state(self, table_name: str) -> StoredState:
        """The table's incremental state as of its last commit, and that commit's version."""

    def recover(self, table_name: str) -> None:
        """Finishes or undoes a commit that a kill interrupted, if the store has such a thing."""

    def early_uploads(self, table_name: str) -> "EarlyUploads | None":
        """Where a load's staged files go as they are written (`EarlyUploads.add`), to be
        data files by its commit; None when the store has no use for that."""

    def commit(self, load: LoadCommit) -> None:
        """Commits the load, or raises StateMovedError and changes nothing."""

    def append_rejects(self, table: str, load_id: str, staged: list[Path]) -> None:
        """Adds the rejected rows of one edX table's load, replacing any earlier rejects of the
        same source files (`_dlt_file_path`): a file read twice (a re-run after a kill, a reset
        state) never has its rejects twice. Idempotent."""

    def drop_rejects(self, table: str) -> None: ...

    def row_count(self, table_name: str) -> int: ...


def store_for(settings: Settings) -> TableStore:
    # Imported here: dev runs need neither pyiceberg nor boto3, and a no-op dev run no pyarrow.
    if settings.environment == "dev":
        from edxorg_s3_ingest.stores.parquet_store import ParquetStore

        return ParquetStore(settings.data_dir)
    from edxorg_s3_ingest.stores.iceberg_store import IcebergStore

    return IcebergStore(settings.lake_url, settings.glue_database)
