"""Keeping each table equal to the newest export of every course (SPEC §5).

dlt hands every normalized Parquet file of a load to `Consolidator.stage`, which only sets it
aside; when dlt completes the load package, `Consolidator.complete` applies the whole load to the
store: the rejects first (kept per source file, so writing them again never doubles them), then
ONE commit of the table: each course named in the package's manifest (source.py) replaced by
exactly the rows of its newest file, and the table's new incremental state (table_state.py)
saved with them. The commit is made only if the table is still at the state the run planned
from. A run killed before it leaves the table as it was; the next run plans again from the
store, whatever is left in the local working area.
"""

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.parquet as pq
from dlt.common.schema import TTableSchema
from dlt.common.storages.load_package import ParsedLoadJobFileName, load_package_state

from edxorg_s3_ingest.crashpoints import crashpoint
from edxorg_s3_ingest.loading.source import MANIFEST_KEY
from edxorg_s3_ingest.report import TableReport
from edxorg_s3_ingest.state.work import Work
from edxorg_s3_ingest.stores import LoadCommit, TableStore
from edxorg_s3_ingest.tables import REJECTS_TABLE, destination_table

if TYPE_CHECKING:
    from edxorg_s3_ingest.stores.lake_uploads import EarlyUploads


class Consolidator:
    """The dlt custom destination's two halves: staging files, then committing the load."""

    def __init__(
        self,
        store: TableStore,
        staging_dir: str | os.PathLike,
        report: TableReport,
        work: Work,
        uploads: "EarlyUploads | None" = None,
    ):
        self.store = store
        self.uploads = uploads
        self.staging_dir = Path(staging_dir)
        self.report = report
        self.work = work
        self.committed = False

    def stage(self, items: str, table: TTableSchema) -> None:
        """Called by dlt with the path of each normalized Parquet file (batch_size=0)."""
        crashpoint("stage.start")
        load_id = load_package_state()["load_id"]
        folder = self.staging_dir / load_id / table["name"]
        folder.mkdir(parents=True, exist_ok=True)
        # dlt runs a job that raised again under a new name (`<table>.<file id>.<retry count>.
        # <format>`): without the count, a job whose first run staged its file is staged once.
        job = ParsedLoadJobFileName.parse(items)
        target = folder / f"{job.table_name}.{job.file_id}.{job.file_format}"
        if target.exists():
            return
        temporary = target.with_suffix(".partial")
        temporary.unlink(missing_ok=True)
        try:
            os.link(items, temporary)
        except OSError:
            shutil.copyfile(items, temporary)
        crashpoint("stage.linked")
        os.replace(temporary, target)
        crashpoint("stage.done")

    def complete(self, load_id: str) -> None:
        """Applies one load package to the store; dlt calls it once every job is staged."""
        crashpoint("complete.start")
        table_name = destination_table(self.report.table)
        staged_root = self.staging_dir / load_id
        courses = load_package_state()["state"].get(MANIFEST_KEY, {}).get(table_name, {})
        rejects = sorted((staged_root / REJECTS_TABLE).glob("*.parquet"))
        staged = sorted((staged_root / table_name).glob("*.parquet"))
        self.commit(load_id, staged, courses, rejects)
        shutil.rmtree(staged_root, ignore_errors=True)

    def commit_state(self, load_id: str) -> None:
        """Commits a load whose package dlt never completed, because it held no file: the run
        read no rows and no rejects. Its courses still change (a header-only re-export empties
        its course), committed with the new state under the load id the state names, if the
        source read any file, else `load_id`."""
        self.commit(self.report.load_id or load_id, [], self.work.courses_read, [])

    def commit(self, load_id: str, staged: list[Path], courses: dict, rejects: list[Path]):
        """The rejects first (kept per source file: writing them again never doubles them),
        then the table and its state in one commit."""
        table = self.report.table
        _check_staged_rows(table, staged, courses)
        if self.work.full_refresh:
            self.store.drop_rejects(table)
        if rejects:
            self.store.append_rejects(table, load_id, rejects)
            crashpoint("complete.rejects")
        self.store.commit(
            LoadCommit(
                destination_table(table),
                load_id,
                staged,
                courses,
                self.work.state,
                self.work.stored.version,
                self.work.full_refresh,
                self.uploads,
            )
        )
        self.committed = True
        self.report.courses_replaced += len(courses)
        crashpoint("complete.committed")


class StagedRowsError(RuntimeError):
    """A load's staged files hold other than the rows its source read: it is not committed."""


def _check_staged_rows(table: str, staged: list[Path], courses: dict) -> None:
    """The staged files' rows (their footers) against the rows read per course (the manifest):
    a file staged twice or lost on its way through dlt fails the table loudly rather than
    committing duplicated or missing rows (SPEC §5); nothing is committed, so the next run
    reads those files again."""
    staged_rows = sum(pq.read_metadata(path).num_rows for path in staged)
    read_rows = sum(entry["rows"] for entry in courses.values())
    if staged_rows != read_rows:
        raise StagedRowsError(
            f"{table}: the load staged {staged_rows:,} rows, but the files it read hold"
            f" {read_rows:,}: nothing committed (a file staged twice or lost on its way through"
            " dlt); the next run reads them again"
        )
