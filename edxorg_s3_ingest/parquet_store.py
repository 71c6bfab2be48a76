"""The dev store: Parquet folders under the data dir (SPEC §8), one folder per course.

`<data-dir>/raw__edxorg__s3__tables__<table>/<quoted course id>/<load_id>.<part>.parquet`

The folder is the course id percent-quoted, never `key=value`: DuckDB would read that as a hive
partition and add a column to the table.

A course is replaced by writing its new parts under a `.partial` name (invisible to the
`**/*.parquet` glob), then publishing them and deleting the course's files of earlier loads.
Every step can be repeated after a kill with the same result (consolidation.Consolidator).

Rejects: `<data-dir>/raw__edxorg__s3__rejected_rows/<table>/<quoted course id>/<file>.parquet`,
one file per source file that had rejects, named after the file's URL: reading a file again
replaces its rejects instead of adding them twice.
"""

import hashlib
import os
import shutil
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from edxorg_s3_ingest.consolidation import batches_by_course, empty_course_schema
from edxorg_s3_ingest.crashpoints import crashpoint
from edxorg_s3_ingest.tables import REJECTS_TABLE

PARTIAL = ".partial"
MAX_NAME_BYTES = 200


def course_folder(course_id: str) -> str:
    """A folder name that is the course id, quoted so that no id can leave the table folder."""
    name = quote(course_id, safe="")
    if name.startswith("."):
        name = "%2E" + name[1:]
    if len(name.encode()) > MAX_NAME_BYTES:
        digest = hashlib.sha256(course_id.encode()).hexdigest()[:16]
        name = f"{name[: MAX_NAME_BYTES - 17]}~{digest}"
    if not name:
        raise ValueError("a course id cannot be empty")
    return name


def rejects_file(url: str) -> str:
    """The name of a source file's rejects: its key's name, made unique by a hash of its URL."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    stem = course_folder(url.rsplit("/", 1)[-1].removesuffix(".tsv"))[:80]
    return f"{stem}~{digest}.parquet"


class ParquetStore:
    def __init__(self, data_dir: str | os.PathLike) -> None:
        self.data_dir = Path(data_dir).absolute()

    def uri(self, table_name: str) -> str:
        return str(self.data_dir / table_name)

    def preflight(self) -> None:
        """Nothing to check: the data dir is created on first write."""

    def glob(self, table_name: str) -> str:
        """The DuckDB expression's path: the whole table (SPEC §8)."""
        return f"{self.uri(table_name)}/**/*.parquet"

    def replace_courses(
        self, table_name: str, load_id: str, staged: list[Path], courses: dict
    ) -> None:
        table_dir = self.data_dir / table_name
        parts: dict[str, list[Path]] = {course: [] for course in courses}
        writer, writing = None, None
        try:
            for course, batch in batches_by_course(staged):
                if course not in parts:
                    raise RuntimeError(f"{table_name}: staged rows of {course!r} not in manifest")
                if course != writing or batch.schema != writer.schema:
                    if writer:
                        writer.close()
                    writing = course
                    path = self._part(table_dir, course, load_id, len(parts[course]))
                    parts[course].append(path)
                    writer = pq.ParquetWriter(path, batch.schema)
                writer.write_batch(batch)
                crashpoint("store.batch_written")
        finally:
            if writer:
                writer.close()
        for course, entry in courses.items():
            if not parts[course]:
                path = self._part(table_dir, course, load_id, 0)
                pq.write_table(empty_course_schema(entry["columns"]).empty_table(), path)
                parts[course].append(path)
        crashpoint("store.written")
        for course in courses:
            self._publish(table_dir / course_folder(course), load_id, parts[course])
            crashpoint("store.course_done")

    def _part(self, table_dir: Path, course: str, load_id: str, number: int) -> Path:
        folder = table_dir / course_folder(course)
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{load_id}.{number}.parquet{PARTIAL}"

    @staticmethod
    def _publish(folder: Path, load_id: str, parts: list[Path]) -> None:
        for part in parts:
            os.replace(part, part.with_name(part.name.removesuffix(PARTIAL)))
            crashpoint("store.published")
        crashpoint("store.before_delete")
        for old in folder.iterdir():
            if not old.name.startswith(f"{load_id}."):
                old.unlink()
                crashpoint("store.deleted")

    def append_rejects(self, table: str, load_id: str, staged: list[Path]) -> None:
        folder = self.data_dir / REJECTS_TABLE / table
        rejects = pa.concat_tables(
            (pq.read_table(path) for path in staged), promote_options="permissive"
        )
        for url in pc.unique(rejects.column("_dlt_file_path")).to_pylist():
            rows = rejects.filter(pc.equal(rejects.column("_dlt_file_path"), url))
            course = rows.column("_course_id")[0].as_py()
            target = folder / course_folder(course) / rejects_file(url)
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(target.name + PARTIAL)
            pq.write_table(rows, temporary)
            crashpoint("store.rejects_written")
            os.replace(temporary, target)

    def drop(self, table_name: str) -> None:
        shutil.rmtree(self.data_dir / table_name, ignore_errors=True)

    def drop_rejects(self, table: str) -> None:
        shutil.rmtree(self.data_dir / REJECTS_TABLE / table, ignore_errors=True)

    def row_count(self, table_name: str) -> int:
        folder = self.data_dir / table_name
        return sum(pq.ParquetFile(path).metadata.num_rows for path in folder.rglob("*.parquet"))
