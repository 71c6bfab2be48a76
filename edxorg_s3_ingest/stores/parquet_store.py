"""The dev store: Parquet files under the data dir (SPEC §8), one folder per table.

```
<data-dir>/raw__edxorg__s3__tables__<table>/
    <load_id>.<n>.parquet                     a pack: the rows of many courses
    <load_id>.r<digest>.parquet               a pack rewritten without re-exported courses
    <quoted course id>/<load_id>.<n>.parquet  a large course's rows, alone
    .state.json                               the table's incremental state (table_state.py)
    .commit.json                              the commit under way, while there is one
    .row_counts.json  .pack_courses.json      caches (not Parquet: the table's glob skips them)
```

Small courses share packs: a pack is a staged file of the load as it is, a hard link
(staged_files.py writes the rows of small source files together, up to SHARED_FILE_BYTES of
them per file). A course of a large source file (one staged file of its own) gets a folder:
the course id percent-quoted, never `key=value` (DuckDB would read that as a hive partition
and add a column), never ending in `.parquet` (packs do). A table of 5,000 small courses is a
few files rather than 5,000 folders and files: writing one small file costs more than its rows.

A load replaces each course it read: its new rows are written under `.partial` names (invisible
to the `**/*.parquet` glob) and published, then its rows of earlier loads go: its folder's
files, and each earlier pack holding it, which is first rewritten without the replaced courses
(`<load_id>.r<digest of the pack's name>.parquet`, copy-on-write, as Iceberg does; the other
courses' rows keep their values and load ids). The table's state is saved last, and the whole
commit is journaled (`ParquetStore.commit`): a kill at any step is undone or finished by the
next commit, from the table folder alone.

Rejects: `<data-dir>/raw__edxorg__s3__rejected_rows/<table>/<quoted course id>/<file>.parquet`,
one file per source file that had rejects, named after the file's URL: reading a file again
replaces its rejects instead of adding them twice.
"""

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from edxorg_s3_ingest.crashpoints import crashpoint
from edxorg_s3_ingest.reading.lineage import empty_course_schema, single_course
from edxorg_s3_ingest.state.table_state import DamagedStateError, StoredState
from edxorg_s3_ingest.stores import LoadCommit
from edxorg_s3_ingest.stores.parquet_state import (
    JOURNAL,
    PARTIAL,
    STATE,
    locked,
    read_json,
    read_state,
    write_json,
)
from edxorg_s3_ingest.tables import REJECTS_TABLE

PARQUET = ".parquet"
MAX_NAME_BYTES = 200
ROW_COUNTS = ".row_counts.json"
"""Each Parquet file's row count (row_count), by its path in the table folder."""
PACK_COURSES = ".pack_courses.json"
"""Each pack's courses, by its name."""
LINEAGE_COLUMNS = ["_course_id", "_dlt_file_path", "_dlt_file_modified", "_dlt_load_id"]
WRITE_OPTIONS = {"version": "2.4", "compression": "snappy", "use_dictionary": LINEAGE_COLUMNS}
"""Packs rewritten without some courses: dlt's Parquet settings (as the staged files), with
dictionary encoding for the lineage columns, constant over each course's rows."""


def course_folder(course_id: str) -> str:
    """A folder name that is the course id, quoted so that no id can leave the table folder or
    be taken for a pack (a name with `.parquet` in it gets its dots quoted too)."""
    name = quote(course_id, safe="")
    if name.startswith("."):
        name = "%2E" + name[1:]
    if PARQUET in name:
        name = name.replace(".", "%2E")
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

    def read_state(self, table_name: str) -> StoredState:
        return read_state(self.data_dir / table_name)

    def early_uploads(self, table_name: str) -> None:
        """None: staged files are published by a hard link, at the commit."""

    def recover(self, table_name: str) -> None:
        """Finishes or undoes a commit that a kill interrupted (see `commit`)."""
        table_dir = self.data_dir / table_name
        if (table_dir / JOURNAL).exists():
            with locked(table_dir):
                self._recover(table_dir)

    def commit(self, load: LoadCommit) -> None:
        """Commits the load (the state saved beside its rows) if the table is still at
        `load.base`; otherwise raises StateMovedError and changes nothing.

        A commit is journaled (JOURNAL): its new files are written first, all named after the
        load; then the journal lists the files it replaces and the new state, and only then
        are those deleted and the state saved. A kill before that point is undone by the next
        commit (the load's files deleted), a kill after it is finished (the deletions done):
        either way no run needs anything of the killed run's working area.
        """
        table_dir = self.data_dir / load.table_name
        table_dir.mkdir(parents=True, exist_ok=True)
        with locked(table_dir):
            try:
                self._recover(table_dir)
                found = self.read_state(load.table_name).version
            except DamagedStateError:
                if not load.full_refresh:
                    raise
                (table_dir / JOURNAL).unlink(missing_ok=True)  # a rebuild replaces every file
                found = load.base
            if load.already_done(found, found):
                return
            write_json(table_dir / JOURNAL, {"load_id": load.load_id, "phase": "write"})
            crashpoint("store.journaled")
            earlier = self._write(table_dir, load)
            crashpoint("store.written")
            doomed = _published_files(table_dir, earlier, load)
            journal = {
                "load_id": load.load_id,
                "phase": "delete",
                "delete": doomed,
                "state": load.state,
            }
            write_json(table_dir / JOURNAL, journal)
            crashpoint("store.before_delete")
            self._finish(table_dir, journal)

    def _write(self, table_dir: Path, load: LoadCommit) -> list[str]:
        """Publishes the load's files; returns the earlier packs rewritten without the
        replaced courses (their rows of other courses are in this load's files now)."""
        ours = f"{load.load_id}."
        replaced = set(load.courses)
        written: list[Path] = []
        with_rows: set[str] = set()

        def unknown(found: set[str]) -> None:
            if found - replaced:
                names = ", ".join(sorted(map(repr, found - replaced)))
                raise RuntimeError(f"{load.table_name}: staged rows of {names} not in manifest")

        for number, path in enumerate(load.staged):
            course = single_course(path)
            if course is not None:  # a large source file's rows: the course's folder
                unknown({course})
                target = self._course_part(table_dir, course, load.load_id, number)
                with_rows.add(course)
            else:  # the rows of small source files, as they are: a pack
                found = _courses_of(path)
                unknown(found)
                with_rows |= found
                target = table_dir / f"{load.load_id}.{number}{PARQUET}{PARTIAL}"
            _link(path, target)
            written.append(target)
            crashpoint("store.linked")
        for course, entry in load.courses.items():
            if course not in with_rows:  # a header-only export: its columns, no rows
                target = self._course_part(table_dir, course, load.load_id, len(load.staged))
                pq.write_table(empty_course_schema(entry["columns"]).empty_table(), target)
                written.append(target)
        earlier = []
        if replaced and not load.full_refresh:
            packs = self._pack_courses(table_dir)
            earlier = [n for n in packs if not n.startswith(ours) and packs[n] & replaced]
        for name in earlier:
            digest = hashlib.sha256(name.encode()).hexdigest()[:16]
            target = table_dir / f"{load.load_id}.r{digest}{PARQUET}{PARTIAL}"
            if _write_without(table_dir / name, replaced, target):
                written.append(target)
            crashpoint("store.rest_written")
        for partial in written:
            os.replace(partial, partial.with_name(partial.name.removesuffix(PARTIAL)))
            crashpoint("store.published")
        return earlier

    def _course_part(self, table_dir: Path, course: str, load_id: str, number: int) -> Path:
        folder = table_dir / course_folder(course)
        os.makedirs(folder, exist_ok=True)
        return folder / f"{load_id}.{number}{PARQUET}{PARTIAL}"

    def _recover(self, table_dir: Path) -> None:
        """Undoes or finishes a commit that a kill interrupted (see `commit`)."""
        journal = read_json(table_dir / JOURNAL)
        if not journal:
            return
        if journal.get("phase") == "delete":
            self._finish(table_dir, journal)
            return
        ours = f"{journal['load_id']}."
        for path in _all_files(table_dir):
            if os.path.basename(path).startswith(ours):
                os.unlink(path)
                crashpoint("store.undone")
        _remove_empty_folders(table_dir)
        os.unlink(table_dir / JOURNAL)

    @staticmethod
    def _finish(table_dir: Path, journal: dict) -> None:
        """The second half of a commit: the replaced files go, the state is saved."""
        for name in journal["delete"]:
            with suppress(FileNotFoundError):  # deleted before a kill
                os.unlink(table_dir / name)
                crashpoint("store.deleted")
        _remove_empty_folders(table_dir)
        write_json(table_dir / STATE, {"load_id": journal["load_id"], "state": journal["state"]})
        crashpoint("store.state_saved")
        os.unlink(table_dir / JOURNAL)

    def _pack_courses(self, table_dir: Path) -> dict[str, set[str]]:
        """Each published pack's courses, each pack's `_course_id` column read once (cached in
        PACK_COURSES by the pack's size and modification time)."""
        with os.scandir(table_dir) as entries:
            packs = [e.path for e in entries if e.is_file() and e.name.endswith(PARQUET)]
        known = _cached(table_dir, PACK_COURSES, packs, lambda path: sorted(_courses_of(path)))
        return {name: set(courses) for name, courses in known.items()}

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

    def drop_rejects(self, table: str) -> None:
        shutil.rmtree(self.data_dir / REJECTS_TABLE / table, ignore_errors=True)

    def row_count(self, table_name: str) -> int:
        """The rows of every file of the table (the `**/*.parquet` glob), each file's count read
        from its footer once (cached in ROW_COUNTS by the file's size and modification time)."""
        folder = self.data_dir / table_name
        files = list(_parquet_files(folder))
        counts = _cached(folder, ROW_COUNTS, files, lambda path: pq.read_metadata(path).num_rows)
        return sum(counts.values())


def _cached(folder: Path, cache_name: str, paths: list[str], fact: Callable) -> dict:
    """`fact(path)` of each path, by its path relative to `folder`; kept in the JSON file
    `cache_name` there with each file's size and modification time, and computed again only
    for a file that is new or changed (a table of many files is as many footers)."""
    cache = folder / cache_name
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    entries = {}
    for path in paths:
        stat = os.stat(path)
        name = os.path.relpath(path, folder)
        entry = known.get(name)
        if not (isinstance(entry, list) and entry[:2] == [stat.st_size, stat.st_mtime_ns]):
            entry = [stat.st_size, stat.st_mtime_ns, fact(path)]
        entries[name] = entry
    if entries != known and folder.is_dir():
        with suppress(OSError):  # only a cache
            temporary = cache.with_name(cache.name + PARTIAL)
            temporary.write_text(json.dumps(entries))
            os.replace(temporary, cache)
    return {name: entry[2] for name, entry in entries.items()}


def _courses_of(path: str | os.PathLike) -> set[str]:
    """The courses with rows in a Parquet file of the table (its `_course_id` column)."""
    parquet = pq.ParquetFile(path)
    if "_course_id" not in parquet.schema_arrow.names:
        return set()
    column = parquet.read(columns=["_course_id"], use_threads=False).column(0)
    return set(pc.unique(column).drop_null().to_pylist())


def _write_without(source: Path, courses: set[str], target: Path) -> bool:
    """`source`'s rows but those of `courses`, into `target`, a row group at a time; False
    (and no target) when no row is left."""
    parquet = pq.ParquetFile(source)
    drop = pa.array(sorted(courses), pa.string())
    rows = 0
    with pq.ParquetWriter(target, parquet.schema_arrow, **WRITE_OPTIONS) as writer:
        for group in range(parquet.num_row_groups):
            batch = parquet.read_row_group(group, use_threads=False)
            kept = batch.filter(pc.invert(pc.is_in(batch.column("_course_id"), drop)))
            if kept.num_rows:
                writer.write_table(kept, row_group_size=kept.num_rows)
                rows += kept.num_rows
    if not rows:
        target.unlink()
    return bool(rows)


def _published_files(table_dir: Path, packs: list[str], load: LoadCommit) -> list[str]:
    """The files a commit replaces, relative to the table folder: the replaced courses'
    folders' files and the earlier `packs` that held them; with a full refresh, every file not
    of this load."""
    ours = f"{load.load_id}."
    if load.full_refresh:
        paths = [path for path in _all_files(table_dir) if path.endswith(PARQUET)]
    else:
        paths = [str(table_dir / name) for name in packs]
        for course in load.courses:
            with suppress(FileNotFoundError), os.scandir(table_dir / course_folder(course)) as it:
                paths.extend(entry.path for entry in it)
    return sorted(
        os.path.relpath(path, table_dir)
        for path in paths
        if not os.path.basename(path).startswith(ours)
    )


def _all_files(folder: Path) -> Iterator[str]:
    """Every file in the table folder and its course folders, hidden ones included."""
    for entry in os.scandir(folder):
        if entry.is_dir(follow_symlinks=False):
            yield from _all_files(Path(entry.path))
        else:
            yield entry.path


def _remove_empty_folders(table_dir: Path) -> None:
    for entry in os.scandir(table_dir):
        if entry.is_dir(follow_symlinks=False):
            with suppress(OSError):
                os.rmdir(entry.path)


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
        elif entry.name.endswith(PARQUET):
            yield entry.path
