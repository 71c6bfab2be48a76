"""Keeping each table equal to the newest export of every course (SPEC §5).

dlt hands every normalized Parquet file of a load to `Consolidator.stage`, which only sets it
aside; when dlt completes the load package, `Consolidator.complete` applies the whole load to the
store: each course named in the package's manifest (source.py) is replaced by exactly the rows of
its newest file, in one step per course. Completing the same load twice gives the same result, so
a run killed at any point is finished by the next one (dlt resumes the pending package).
"""

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from dlt.common.schema import TTableSchema
from dlt.common.storages.load_package import load_package_state

from edxorg_s3_ingest.report import TableReport
from edxorg_s3_ingest.source import MANIFEST_KEY, TIMESTAMP
from edxorg_s3_ingest.tables import REJECTS_TABLE

LINEAGE = pa.schema(
    [
        ("_source_line", pa.int64()),
        ("_course_id", pa.string()),
        ("_dlt_file_path", pa.string()),
        ("_dlt_file_modified", TIMESTAMP),
        ("_dlt_load_id", pa.string()),
    ]
)


class TableStore(Protocol):
    """Where consolidated tables live: a Parquet folder (dev) or Iceberg + Glue (qa, production)."""

    def uri(self, table_name: str) -> str: ...

    def replace_courses(
        self, table_name: str, load_id: str, staged: list[Path], courses: dict
    ) -> None:
        """Makes each course in `courses` hold exactly its rows in `staged`; idempotent."""

    def append_rejects(self, table: str, load_id: str, staged: list[Path]) -> None:
        """Adds the rejected rows of one edX table's load; idempotent."""

    def drop(self, table_name: str) -> None: ...

    def drop_rejects(self, table: str) -> None: ...

    def row_count(self, table_name: str) -> int: ...


def batches_by_course(staged: list[Path]) -> Iterator[tuple[str, pa.RecordBatch]]:
    """The staged rows as (course, batch) runs, in load order, one course per batch."""
    for path in staged:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=65_536):
            courses = batch.column("_course_id")
            first = courses[0].as_py() if batch.num_rows else None
            if pc.all(pc.equal(courses, first)).as_py():
                yield first, batch
                continue
            for course in pc.unique(courses).to_pylist():
                yield course, batch.filter(pc.equal(courses, course))


class Consolidator:
    """The dlt custom destination's two halves: staging files, then completing loads."""

    def __init__(self, store: TableStore, staging_dir: str | os.PathLike, report: TableReport):
        self.store = store
        self.staging_dir = Path(staging_dir)
        self.report = report

    def stage(self, items: str, table: TTableSchema) -> None:
        """Called by dlt with the path of each normalized Parquet file (batch_size=0)."""
        load_id = load_package_state()["load_id"]
        folder = self.staging_dir / load_id / table["name"]
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / Path(items).name
        if target.exists():
            return
        temporary = target.with_suffix(".partial")
        try:
            os.link(items, temporary)
        except OSError:
            shutil.copyfile(items, temporary)
        os.replace(temporary, target)

    def complete(self, load_id: str) -> None:
        """Applies one load package to the store; dlt calls it once every job is staged."""
        done = self.staging_dir / f"{load_id}.done"
        if done.exists():
            return
        package = load_package_state()["state"]
        for dropped in package.get("dropped_tables", []):
            if dropped["name"] == REJECTS_TABLE:
                self.store.drop_rejects(self.report.table)
            else:
                self.store.drop(dropped["name"])
        staged_root = self.staging_dir / load_id
        for table_name, courses in package.get(MANIFEST_KEY, {}).items():
            staged = sorted((staged_root / table_name).glob("*.parquet"))
            self.store.replace_courses(table_name, load_id, staged, courses)
            self.report.courses_replaced += len(courses)
        rejects = sorted((staged_root / REJECTS_TABLE).glob("*.parquet"))
        if rejects:
            self.store.append_rejects(self.report.table, load_id, rejects)
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        done.touch()
        shutil.rmtree(staged_root, ignore_errors=True)


def empty_course_schema(columns: list[str]) -> pa.Schema:
    """The schema of a course whose newest export is header-only: its columns, no rows."""
    return pa.schema([(name, pa.string()) for name in columns] + list(LINEAGE))
