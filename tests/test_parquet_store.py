"""The dev store's course replacement (parquet_store.py): a staged file of one course is
published as it is in the course's folder, a staged file of many courses as it is as a pack (a
link each); a re-export rewrites the earlier pack without its course, leaving the other
courses' rows as they were; a replacement killed at any step and repeated leaves exactly the
table it should, and nothing partial; the row count reads each file's footer once."""

import os
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from edxorg_s3_ingest.reading.lineage import single_course
from edxorg_s3_ingest.state.table_state import StateMovedError
from edxorg_s3_ingest.stores import LoadCommit, parquet_store
from edxorg_s3_ingest.stores.parquet_state import JOURNAL, LOCK, STATE, locked
from edxorg_s3_ingest.stores.parquet_store import (
    PACK_COURSES,
    PARTIAL,
    ROW_COUNTS,
    ParquetStore,
    course_folder,
)

from reliability import record

TABLE = "raw__edxorg__s3__tables__teams"
WHEN = datetime(2026, 1, 1, tzinfo=UTC)


def rows(*courses: tuple[str, int], load_id: str = "1.5", tag: str = "") -> pa.Table:
    """Consecutive runs of (course, number of rows), with the lineage columns."""
    ids, names = [], []
    for course, count in courses:
        ids += [f"{course}-{n}{tag}" for n in range(count)]
        names += [course] * count
    count = len(ids)
    return pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "_source_line": pa.array(range(2, count + 2), pa.int64()),
            "_course_id": pa.array(names, pa.string()),
            "_dlt_file_path": pa.array([f"s3://b/{name}/f.tsv" for name in names], pa.string()),
            "_dlt_file_modified": pa.array([WHEN] * count, pa.timestamp("us", tz="UTC")),
            "_dlt_load_id": pa.array([load_id] * count, pa.string()),
        }
    )


def staged(folder: Path, name: str, table: pa.Table, row_group_size: int = 4) -> Path:
    path = folder / "staged" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def manifest(*courses: str) -> dict:
    return {course: {"columns": ["id"]} for course in courses}


def commit(store: ParquetStore, load_id: str, paths: list[Path], courses: dict) -> None:
    """A load's commit as a run makes it: over the version it read, its courses' rows in the
    state."""
    base = store.read_state(TABLE).version
    state = {"rows": dict.fromkeys(courses, 1), "loads": dict.fromkeys(courses, load_id)}
    store.commit(LoadCommit(TABLE, load_id, paths, courses, state, base))


def table_files(store: ParquetStore) -> list[str]:
    """Every file of the table folder but its state and lock, by its path in it."""
    root = store.data_dir / TABLE
    found = (str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())
    return sorted(name for name in found if name not in (STATE, LOCK))


def table(store: ParquetStore) -> list[dict]:
    """The whole table (its `**/*.parquet` files), as sorted rows."""
    parts = [pq.read_table(path) for path in (store.data_dir / TABLE).rglob("*.parquet")]
    found = pa.concat_tables(parts, promote_options="permissive").to_pylist() if parts else []
    return sorted(found, key=lambda row: (row["_course_id"], row["id"]))


def sorted_rows(*tables: pa.Table) -> list[dict]:
    found = pa.concat_tables(tables).to_pylist()
    return sorted(found, key=lambda row: (row["_course_id"], row["id"]))


def test_one_course_file_is_published_as_it_is(tmp_path):
    path = staged(tmp_path, "own.parquet", rows(("A", 10)))
    assert single_course(path) == "A"
    store = ParquetStore(tmp_path / "data")
    commit(store, "1.5", [path], manifest("A"))
    assert table_files(store) == [f"{course_folder('A')}/1.5.0.parquet"]
    part = store.data_dir / TABLE / course_folder("A") / "1.5.0.parquet"
    assert os.stat(part).st_ino == os.stat(path).st_ino  # a link: the same bytes, no copy


def test_many_courses_file_is_published_as_it_is_as_a_pack(tmp_path):
    first = staged(tmp_path, "a.parquet", rows(("A", 3), ("B", 6), ("C", 1), ("A", 2)))
    second = staged(tmp_path, "b.parquet", rows(("D", 2), ("E", 1)))
    assert single_course(first) is None
    store = ParquetStore(tmp_path / "data")
    commit(store, "1.5", [first, second], manifest(*"ABCDE"))
    assert table_files(store) == ["1.5.0.parquet", "1.5.1.parquet"]
    assert os.stat(store.data_dir / TABLE / "1.5.0.parquet").st_ino == os.stat(first).st_ino
    assert table(store) == sorted_rows(pq.read_table(first), pq.read_table(second))


def test_a_re_export_rewrites_the_pack_without_its_course(tmp_path):
    """C is re-exported: the pack of A, B, C is published again without C (A and B with their
    rows and load ids as they were), the pack of D and E is untouched, C's new rows are in."""
    store = ParquetStore(tmp_path / "data")
    abc = rows(("A", 3), ("B", 6), ("C", 2))
    de = rows(("D", 2), ("E", 1))
    first = [staged(tmp_path / "1", "a.parquet", abc), staged(tmp_path / "1", "b.parquet", de)]
    commit(store, "1.5", first, manifest(*"ABCDE"))
    untouched = os.stat(store.data_dir / TABLE / "1.5.1.parquet").st_mtime_ns
    c = rows(("C", 4), load_id="2.5", tag="new")
    commit(store, "2.5", [staged(tmp_path / "2", "c.parquet", c)], manifest("C"))
    files = table_files(store)
    (rewritten,) = [name for name in files if name.startswith("2.5.r")]
    # One course's staged file: its folder, as a large export's.
    assert files == [
        PACK_COURSES,
        "1.5.1.parquet",
        rewritten,
        f"{course_folder('C')}/2.5.0.parquet",
    ]
    assert os.stat(store.data_dir / TABLE / "1.5.1.parquet").st_mtime_ns == untouched
    kept = abc.filter(pa.compute.not_equal(abc["_course_id"], "C"))
    assert table(store) == sorted_rows(kept, de, c)
    assert store.row_count(TABLE) == 3 + 6 + 2 + 1 + 4
    # A course of a large export moves from a pack to its folder, and back into a pack.
    big = rows(("A", 5), load_id="3.5", tag="big")
    commit(store, "3.5", [staged(tmp_path / "3", "a.parquet", big)], manifest("A"))
    assert (store.data_dir / TABLE / course_folder("A")).is_dir()
    small = rows(("A", 1), ("B", 1), load_id="4.5", tag="small")
    commit(store, "4.5", [staged(tmp_path / "4", "ab.parquet", small)], manifest("A", "B"))
    assert not (store.data_dir / TABLE / course_folder("A")).exists()
    assert table(store) == sorted_rows(small, c, de)


def test_a_header_only_export_empties_its_course_and_keeps_its_columns(tmp_path):
    store = ParquetStore(tmp_path / "data")
    ab = staged(tmp_path / "1", "ab.parquet", rows(("A", 2), ("B", 2)))
    commit(store, "1.5", [ab], manifest("A", "B"))
    commit(store, "2.5", [], {"B": {"columns": ["id", "mascot"]}})
    assert table(store) == sorted_rows(rows(("A", 2)).append_column("mascot", pa.nulls(2)))
    assert (
        "mascot"
        in pq.read_schema(store.data_dir / TABLE / course_folder("B") / "2.5.0.parquet").names
    )


def load_three_times(tmp_path: Path, store: ParquetStore) -> list[dict]:
    """Loads 1.5 (packs and an own file), 2.5 (re-exports of packed and own courses) and 3.5;
    returns what the table must then hold."""
    loads = [
        ("1.5", [rows(("A", 3), ("B", 4), ("C", 1)), rows(("D", 6))], "ABCD"),
        (
            "2.5",
            [rows(("B", 2), ("E", 1), load_id="2.5", tag="x"), rows(("D", 2), load_id="2.5")],
            "BDE",
        ),
        ("3.5", [rows(("A", 1), ("E", 3), load_id="3.5", tag="y")], "AE"),
    ]
    for load_id, tables, courses in loads:
        paths = [staged(tmp_path / load_id, f"{n}.parquet", t) for n, t in enumerate(tables)]
        commit(store, load_id, paths, manifest(*courses))
    return table(store)


class Killed(Exception):
    pass


class KillOnce:
    """A crash point that stops the load the `at`-th time (from 0) any point is reached."""

    def __init__(self, at: int) -> None:
        self.at, self.reached = at, 0

    def __call__(self, name: str) -> None:
        self.reached += 1
        if self.reached - 1 == self.at:
            raise Killed(name)


class DoneAgainWhenKilled(ParquetStore):
    """A store whose commit, when stopped, is followed by what the next run does: if the
    killed commit did not count (the table is at the version it planned from), the same rows
    are committed again by a new load; if it did, the next commit finishes it (here: its
    recovery alone)."""

    def commit(self, load: LoadCommit) -> None:
        try:
            super().commit(load)
        except Killed:
            if self.read_state(load.table_name).version == load.load_id:
                with locked(self.data_dir / load.table_name):
                    self._recover(self.data_dir / load.table_name)
            else:  # the same rows, committed by a new load of the next run
                super().commit(replace(load, load_id=f"{load.load_id}1"))


@pytest.mark.faults
def test_a_replacement_killed_at_any_step_and_repeated_is_exact(tmp_path, monkeypatch, request):
    """Every crash point of the store, each time it is reached in three loads: the load is
    stopped there and done again; the table ends exactly as three loads never stopped leave
    it, with nothing partial."""
    expected = load_three_times(tmp_path / "clean", ParquetStore(tmp_path / "clean" / "data"))
    hits: list[str] = []
    monkeypatch.setattr(parquet_store, "crashpoint", hits.append)
    load_three_times(tmp_path / "count", ParquetStore(tmp_path / "count" / "data"))
    assert {
        "store.journaled",
        "store.linked",
        "store.rest_written",
        "store.published",
        "store.before_delete",
        "store.deleted",
        "store.state_saved",
    } <= set(hits)
    for stop_at, point in enumerate(hits):
        monkeypatch.setattr(parquet_store, "crashpoint", KillOnce(stop_at))
        root = tmp_path / f"kill-{stop_at}"
        store = DoneAgainWhenKilled(root / "data")
        assert load_three_times(root, store) == expected, point
        assert not [name for name in table_files(store) if name.endswith(PARTIAL)], point
        assert JOURNAL not in table_files(store), point
        assert store.read_state(TABLE).state["loads"]["A"].startswith("3.5"), point
    record(
        request,
        "Kills (dev, Parquet)",
        "the store's commit stopped at each step it reaches in three loads (packs, a course's "
        "own file, packs rewritten without re-exported courses, its state), then undone and "
        "loaded again, or finished, by the next commit from the table folder alone",
        len(hits),
        "table exact (every row once, other courses' rows and load ids as they were), its "
        "state that of the last load; nothing partial left",
    )


@pytest.mark.parametrize(
    "course", ["1.5.0.parquet", "x.parquet.partial", ".parquet", "..", "a/b", "%2E"]
)
def test_no_course_folder_can_be_taken_for_a_pack(course):
    name = course_folder(course)
    assert ".parquet" not in name and not name.startswith(".") and "/" not in name
    assert name != course_folder(course + "x")


def test_row_count_reads_each_footer_once(tmp_path, monkeypatch):
    path = staged(tmp_path, "shared.parquet", rows(("A", 3), ("B", 4)))
    store = ParquetStore(tmp_path / "data")
    commit(store, "1.5", [path], manifest("A", "B"))
    assert store.row_count(TABLE) == 7
    assert (store.data_dir / TABLE / ROW_COUNTS).is_file()
    reads = []
    original = pq.read_metadata
    monkeypatch.setattr(pq, "read_metadata", lambda p: reads.append(p) or original(p))
    assert store.row_count(TABLE) == 7
    assert reads == []
    # A file replaced under the same name, and a new file: read again.
    pack = store.data_dir / TABLE / "1.5.0.parquet"
    pack.unlink()  # a link to the staged file: replaced, not written into
    pq.write_table(rows(("A", 10)), pack)
    pq.write_table(rows(("A", 1)), pack.with_name("stray.parquet"))
    assert store.row_count(TABLE) == 10 + 1
    assert sorted(Path(p).name for p in reads) == ["1.5.0.parquet", "stray.parquet"]
    assert store.row_count("raw__edxorg__s3__tables__none") == 0


def test_a_commit_over_a_version_that_moved_on_changes_nothing(tmp_path):
    """Two runs planned from the same version: the first commits, the second is refused
    (StateMovedError naming the table) and the table and its state stay the first's."""
    store = ParquetStore(tmp_path / "data")
    commit(store, "1.5", [staged(tmp_path / "1", "a.parquet", rows(("A", 2)))], manifest("A"))
    base = store.read_state(TABLE).version
    first = staged(tmp_path / "2", "a.parquet", rows(("A", 3), load_id="2.5"))
    store.commit(LoadCommit(TABLE, "2.5", [first], manifest("A"), {"rows": {"A": 3}}, base))
    second = staged(tmp_path / "3", "a.parquet", rows(("A", 4), load_id="3.5"))
    with pytest.raises(StateMovedError, match=TABLE):
        store.commit(LoadCommit(TABLE, "3.5", [second], manifest("A"), {"rows": {"A": 4}}, base))
    assert table(store) == sorted_rows(rows(("A", 3), load_id="2.5"))
    assert store.read_state(TABLE).state == {"rows": {"A": 3}}
    assert store.read_state(TABLE).version == "2.5"


def test_a_full_refresh_replaces_every_file_and_recovers_a_damaged_state(tmp_path):
    store = ParquetStore(tmp_path / "data")
    commit(
        store,
        "1.5",
        [staged(tmp_path / "1", "ab.parquet", rows(("A", 2), ("B", 1)))],
        manifest("A", "B"),
    )
    (store.data_dir / TABLE / STATE).write_text('{"load_id": "1.5", "sta')
    with pytest.raises(Exception, match="--full-refresh"):
        store.read_state(TABLE)
    fresh = staged(tmp_path / "2", "c.parquet", rows(("C", 2), load_id="2.5"))
    rebuild = LoadCommit(TABLE, "2.5", [fresh], manifest("C"), {"rows": {"C": 2}}, "damaged", True)
    store.commit(rebuild)
    assert table(store) == sorted_rows(rows(("C", 2), load_id="2.5"))
    assert store.read_state(TABLE).state == {"rows": {"C": 2}}
