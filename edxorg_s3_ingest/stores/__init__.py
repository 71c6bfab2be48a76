"""The store of each environment (SPEC §8): Parquet folders in dev, Iceberg + Glue in the lake.

Both hold the tables AND each table's incremental state (table_state.py), committed together.
"""

from pathlib import Path
from typing import Protocol

from edxorg_s3_ingest.settings import Settings
from edxorg_s3_ingest.state.table_state import StoredState


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

    def commit(
        self,
        table_name: str,
        load_id: str,
        staged: list[Path],
        courses: dict,
        state: dict,
        base: str | int | None,
        full_refresh: bool = False,
    ) -> None:
        """Makes each course in `courses` hold exactly its rows in `staged` (`full_refresh`:
        the table hold exactly `staged`) and saves `state`, in one commit, if the table is
        still at version `base`; else raises table_state.StateMovedError."""

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
