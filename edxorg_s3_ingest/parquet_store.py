"""The dev store: Parquet folders under the data dir (SPEC §8), one folder per course.

`<data-dir>/raw__edxorg__s3__tables__<table>/<quoted course id>/<load_id>.<part>.parquet`

The folder is the course id percent-quoted, never `key=value`: DuckDB would read that as a hive
partition and add a column to the table.

A course is replaced by writing its new parts under a `.partial` name (invisible to the
`**/*.parquet` glob), then publishing them and deleting the course's files of earlier loads.
Every step can be repeated after a kill with the same result (consolidation.Consolidator).
A staged file that holds one course (a large source file's, source.py) becomes that course's
part as it is, a hard link: no second decoding and encoding of its rows. Staged files shared
by small courses are split by course, one part per run of rows.

`<data-dir>/raw__edxorg__s3__tables__<table>/.row_counts.json` keeps each file's row count for
`row_count` (not a Parquet file: the table's glob never reads it).

Rejects: `<data-dir>/raw__edxorg__s3__rejected_rows/<table>/<quoted course id>/<file>.parquet`,
one file per source file that had rejects, named after the file's URL: reading a file again
replaces its rejects instead of adding them twice.
"""

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from edxorg_s3_ingest.consolidation import batches_by_course, empty_course_schema, single_course
from edxorg_s3_ingest.crashpoints import crashpoint
from edxorg_s3_ingest.tables import REJECTS_TABLE

PARTIAL = ".partial"
MAX_NAME_BYTES = 200
ROW_COUNTS = ".row_counts.json"
"""Each file's row count (row_count), beside the course folders; not matched by the glob."""
LINEAGE_COLUMNS = ["_course_id", "_dlt_file_path", "_dlt_file_modified", "_dlt_load_id"]
WRITE_OPTIONS = {"version": "2.4", "compression": "snappy", "use_dictionary": LINEAGE_COLUMNS}
"""The course files split from shared staged files: dlt's Parquet settings (as the staged
files), dictionary encoding for the lineage columns, constant in a course file."""


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

        def part(course: str) -> Path:
            if course not in parts:
                raise RuntimeError(f"{table_name}: staged rows of {course!r} not in manifest")
            path = self._part(table_dir, course, load_id, len(parts[course]))
            parts[course].append(path)
            return path

        shared = []
        for path in staged:
            course = single_course(path)
            if course is None:
                shared.append(path)
                continue
            # One course's rows, written as the table's Parquet: published as they are.
            _link(path, part(course))
            crashpoint("store.batch_written")
        writer, writing = None, None
        try:
            for course, batch in batches_by_course(shared):
                if course != writing or batch.schema != writer.schema:
                    if writer:
                        writer.close()
                    writing = course
                    writer = pq.ParquetWriter(part(course), batch.schema, **WRITE_OPTIONS)
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
        os.makedirs(folder, exist_ok=True)
        return folder / f"{load_id}.{number}.parquet{PARTIAL}"

    @staticmethod
    def _publish(folder: Path, load_id: str, parts: list[Path]) -> None:
        for part in parts:
            os.replace(part, part.with_name(part.name.removesuffix(PARTIAL)))
            # A rename between two links of one file does nothing (POSIX): so it is when a run
            # killed after publishing a linked part links it again. The partial name goes.
            part.unlink(missing_ok=True)
            crashpoint("store.published")
        crashpoint("store.before_delete")
        with os.scandir(folder) as entries:
            for old in entries:
                if not old.name.startswith(f"{load_id}."):
                    os.unlink(old.path)
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
        """The rows of every file of the table (the `**/*.parquet` glob), each file's count read
        from its footer once: the counts are kept in the table folder's ROW_COUNTS, by file
        name, size and modification time (a table of 10,000 courses is 10,000 footers)."""
        folder = self.data_dir / table_name
        cache = folder / ROW_COUNTS
        try:
            known = json.loads(cache.read_text())
        except (OSError, ValueError):
            known = {}
        if not isinstance(known, dict):
            known = {}
        counts = {}
        for path in _parquet_files(folder):
            stat = os.stat(path)
            name = os.path.relpath(path, folder)
            entry = known.get(name)
            if not (isinstance(entry, list) and entry[:2] == [stat.st_size, stat.st_mtime_ns]):
                entry = [stat.st_size, stat.st_mtime_ns, pq.read_metadata(path).num_rows]
            counts[name] = entry
        if counts != known and folder.is_dir():
            with suppress(OSError):  # only a cache
                temporary = cache.with_name(cache.name + PARTIAL)
                temporary.write_text(json.dumps(counts))
                os.replace(temporary, cache)
        return sum(entry[2] for entry in counts.values())


def _link(source: Path, target: Path) -> None:
    """`target` holds `source`'s bytes: a hard link (no copy), or a copy across filesystems.
    Idempotent: a target left by a killed run is replaced."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _parquet_files(folder: Path) -> Iterator[str]:
    """The paths the table's glob `**/*.parquet` matches (os.scandir: no Path per entry)."""
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from _parquet_files(Path(entry.path))
        elif entry.name.endswith(".parquet"):
            yield entry.path
