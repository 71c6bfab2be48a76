"""Keeping each table equal to the newest export of every course (SPEC §5).

dlt hands every normalized Parquet file of a load to `Consolidator.stage`, which only sets it
aside; when dlt completes the load package, `Consolidator.complete` applies the whole load to the
store: each course named in the package's manifest (source.py) is replaced by exactly the rows of
its newest file, in one step per course. Completing the same load twice gives the same result, so
a run killed at any point is finished by the next one (dlt resumes the pending package).
"""

import os
import shutil
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from dlt.common.schema import TTableSchema
from dlt.common.storages.load_package import load_package_state

from edxorg_s3_ingest.crashpoints import crashpoint
from edxorg_s3_ingest.lineage import LINEAGE
from edxorg_s3_ingest.report import TableReport
from edxorg_s3_ingest.source import MANIFEST_KEY
from edxorg_s3_ingest.tables import REJECTS_TABLE


class TableStore(Protocol):
    """Where consolidated tables live: a Parquet folder (dev) or Iceberg + Glue (qa, production)."""

    def uri(self, table_name: str) -> str: ...

    def preflight(self) -> None:
        """Fails fast, with a message naming what to fix, when the store cannot be written;
        called before any landing-zone file is read."""

    def replace_courses(
        self, table_name: str, load_id: str, staged: list[Path], courses: dict
    ) -> None:
        """Makes each course in `courses` hold exactly its rows in `staged`; idempotent."""

    def append_rejects(self, table: str, load_id: str, staged: list[Path]) -> None:
        """Adds the rejected rows of one edX table's load, replacing any earlier rejects of the
        same source files (`_dlt_file_path`): a file read twice (a re-run after a kill, a reset
        state) never has its rejects twice. Idempotent."""

    def drop(self, table_name: str) -> None: ...

    def drop_rejects(self, table: str) -> None: ...

    def row_count(self, table_name: str) -> int: ...


def single_course(path: Path) -> str | None:
    """The course of a staged file all of whose rows are of one course (a large source file
    has a staged file of its own: source.py), else None. The row groups' statistics rule most
    files out; the `_course_id` column (dictionary-encoded, a few bytes) decides."""
    parquet = pq.ParquetFile(path)
    metadata = parquet.metadata
    if not metadata.num_rows or "_course_id" not in parquet.schema_arrow.names:
        return None
    column = parquet.schema_arrow.get_field_index("_course_id")
    for group in range(metadata.num_row_groups):
        statistics = metadata.row_group(group).column(column).statistics
        if statistics is not None and statistics.has_min_max and statistics.min != statistics.max:
            return None
    courses = parquet.read(columns=["_course_id"]).column(0)
    if courses.null_count or pc.count_distinct(courses).as_py() != 1:
        return None
    return courses[0].as_py()


class Consolidator:
    """The dlt custom destination's two halves: staging files, then completing loads."""

    def __init__(self, store: TableStore, staging_dir: str | os.PathLike, report: TableReport):
        self.store = store
        self.staging_dir = Path(staging_dir)
        self.report = report

    def stage(self, items: str, table: TTableSchema) -> None:
        """Called by dlt with the path of each normalized Parquet file (batch_size=0)."""
        crashpoint("stage.start")
        load_id = load_package_state()["load_id"]
        folder = self.staging_dir / load_id / table["name"]
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / Path(items).name
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
        """Applies one load package to the store; dlt calls it once every job is staged.

        The `<load_id>.done` marker is written after the store holds the whole load and before
        the staged files go: a completion re-run after a kill either applies the same staged
        files again (same result) or finds the marker and does nothing.
        """
        crashpoint("complete.start")
        done = self.staging_dir / f"{load_id}.done"
        staged_root = self.staging_dir / load_id
        if done.exists():
            self._clean(load_id)
            return
        package = load_package_state()["state"]
        for dropped in package.get("dropped_tables", []):
            if dropped["name"] == REJECTS_TABLE:
                self.store.drop_rejects(self.report.table)
            else:
                self.store.drop(dropped["name"])
            crashpoint("complete.dropped")
        for table_name, courses in package.get(MANIFEST_KEY, {}).items():
            staged = sorted((staged_root / table_name).glob("*.parquet"))
            self.store.replace_courses(table_name, load_id, staged, courses)
            crashpoint("complete.replaced")
            self.report.courses_replaced += len(courses)
        rejects = sorted((staged_root / REJECTS_TABLE).glob("*.parquet"))
        if rejects:
            self.store.append_rejects(self.report.table, load_id, rejects)
        crashpoint("complete.before_done")
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        done.touch()
        crashpoint("complete.after_done")
        self._clean(load_id)
        crashpoint("complete.cleaned")

    def _clean(self, load_id: str) -> None:
        """Removes what this load and earlier ones left: staged files and done markers.

        Loads of one table run one at a time (runner.table_lock), and dlt completes packages in
        load id order, each before the next: once `load_id` is complete, no earlier load can
        need its marker or staged files again. Later loads' files are left alone.
        """
        for entry in self.staging_dir.iterdir():
            other = entry.name.removesuffix(".done")
            if entry.name == f"{load_id}.done" or not _earlier_or_same(other, load_id):
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def _earlier_or_same(other: str, load_id: str) -> bool:
    """Whether `other` is a dlt load id (a timestamp) no later than `load_id`."""
    try:
        return float(other) <= float(load_id)
    except ValueError:
        return False


def empty_course_schema(columns: list[str]) -> pa.Schema:
    """The schema of a course whose newest export is header-only: its columns, no rows."""
    return pa.schema([(name, pa.string()) for name in columns] + list(LINEAGE))
