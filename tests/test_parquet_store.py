"""The dev store's course replacement (parquet_store.py, consolidation.py): a staged file of one
course is published as it is (same bytes, a link), staged files of many courses are split by
course, a replacement applied twice (a re-run after a kill) leaves the same files and nothing
partial, and the row count reads each file's footer once."""

import filecmp
import os
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from edxorg_s3_ingest.consolidation import batches_by_course, single_course
from edxorg_s3_ingest.parquet_store import ROW_COUNTS, ParquetStore, course_folder

TABLE = "raw__edxorg__s3__tables__teams"
WHEN = datetime(2026, 1, 1, tzinfo=UTC)


def rows(*courses: tuple[str, int]) -> pa.Table:
    """Consecutive runs of (course, number of rows), with the lineage columns."""
    ids, names = [], []
    for course, count in courses:
        ids += [f"{course}-{n}" for n in range(count)]
        names += [course] * count
    count = len(ids)
    return pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "_source_line": pa.array(range(2, count + 2), pa.int64()),
            "_course_id": pa.array(names, pa.string()),
            "_dlt_file_path": pa.array([f"s3://b/{name}/f.tsv" for name in names], pa.string()),
            "_dlt_file_modified": pa.array([WHEN] * count, pa.timestamp("us", tz="UTC")),
            "_dlt_load_id": pa.array(["1.5"] * count, pa.string()),
        }
    )


def staged(tmp_path: Path, name: str, table: pa.Table, row_group_size: int = 4) -> Path:
    path = tmp_path / "staged" / name
    path.parent.mkdir(exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def manifest(*courses: str) -> dict:
    return {course: {"columns": ["id"]} for course in courses}


def published(store: ParquetStore, course: str) -> list[Path]:
    return sorted((store.data_dir / TABLE / course_folder(course)).iterdir())


def test_one_course_file_is_published_as_it_is(tmp_path):
    path = staged(tmp_path, "own.parquet", rows(("A", 10)))
    assert single_course(path) == "A"
    store = ParquetStore(tmp_path / "data")
    store.replace_courses(TABLE, "1.5", [path], manifest("A"))
    (part,) = published(store, "A")
    assert part.name == "1.5.0.parquet"
    assert filecmp.cmp(part, path, shallow=False)
    assert os.stat(part).st_ino == os.stat(path).st_ino  # a link, same filesystem


def test_shared_files_are_split_by_course_in_runs(tmp_path):
    table = rows(("A", 3), ("B", 6), ("C", 1), ("A", 2))
    path = staged(tmp_path, "shared.parquet", table)
    assert single_course(path) is None
    runs = [(course, batch.num_rows) for course, batch in batches_by_course([path])]
    # Row groups of 4 rows: runs are cut at each course change and at each row group.
    assert runs == [("A", 3), ("B", 1), ("B", 4), ("B", 1), ("C", 1), ("A", 2)]
    store = ParquetStore(tmp_path / "data")
    store.replace_courses(TABLE, "1.5", [path], manifest("A", "B", "C"))
    for course in "ABC":
        got = pa.concat_tables(pq.read_table(part) for part in published(store, course))
        expected = table.filter(pa.compute.equal(table["_course_id"], course))
        assert got.to_pylist() == expected.to_pylist()
    assert [part.name for part in published(store, "A")] == ["1.5.0.parquet", "1.5.1.parquet"]


def test_replacing_twice_leaves_the_same_files_and_nothing_partial(tmp_path):
    own = staged(tmp_path, "own.parquet", rows(("A", 5)))
    shared = staged(tmp_path, "shared.parquet", rows(("B", 2), ("C", 2)))
    store = ParquetStore(tmp_path / "data")
    old = store.data_dir / TABLE / course_folder("A") / "0.9.0.parquet"
    old.parent.mkdir(parents=True)
    pq.write_table(rows(("A", 1)), old)
    for _ in range(2):  # the second time: as a run killed after publishing would do it again
        store.replace_courses(TABLE, "1.5", [own, shared], manifest("A", "B", "C"))
        files = sorted(p.relative_to(store.data_dir) for p in store.data_dir.rglob("*"))
        assert not [path for path in files if path.name.endswith(".partial")]
        assert [part.name for part in published(store, "A")] == ["1.5.0.parquet"]
    assert store.row_count(TABLE) == 9


def test_row_count_reads_each_footer_once(tmp_path, monkeypatch):
    path = staged(tmp_path, "shared.parquet", rows(("A", 3), ("B", 4)))
    store = ParquetStore(tmp_path / "data")
    store.replace_courses(TABLE, "1.5", [path], manifest("A", "B"))
    assert store.row_count(TABLE) == 7
    assert (store.data_dir / TABLE / ROW_COUNTS).is_file()
    reads = []
    original = pq.read_metadata
    monkeypatch.setattr(pq, "read_metadata", lambda p: reads.append(p) or original(p))
    assert store.row_count(TABLE) == 7
    assert reads == []
    # A file replaced under the same name, and a new file: read again.
    (part,) = published(store, "A")
    pq.write_table(rows(("A", 10)), part)
    pq.write_table(rows(("A", 1)), part.with_name("stray.parquet"))
    assert store.row_count(TABLE) == 4 + 10 + 1
    assert sorted(Path(p).name for p in reads) == ["1.5.0.parquet", "stray.parquet"]
    assert store.row_count("raw__edxorg__s3__tables__none") == 0
