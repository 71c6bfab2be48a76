"""The lake's file layout (stores/iceberg_store.py): data files follow bytes, not courses, and a
re-export still replaces exactly its course's rows. The store commits staged files as dlt hands
them over; the tables are read back with pyiceberg's own Glue catalog on a moto server."""

from itertools import count

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.table.snapshots import Operation, Summary
from pyiceberg.transforms import IdentityTransform

from edxorg_s3_ingest.stores import LoadCommit, iceberg_files, iceberg_store
from edxorg_s3_ingest.stores.iceberg_store import IcebergStore
from edxorg_s3_ingest.stores.lake_state import read_lake_state
from edxorg_s3_ingest.tables import destination_table

from moto_server import (
    moto,  # noqa: F401 - the module's moto server fixture
    use_in_this_process,
)

pytestmark = pytest.mark.slow
DATABASE = "ol_warehouse_qa_raw"
LAKE = "s3://ol-data-lake-raw-qa/edxorg"
NAME = destination_table("auth_user")
# Longer than the 16 characters of Iceberg's default bounds, and alike in their first 16.
COURSES = [f"course-v1:MITx+6.00.{n:03d}x+2T2026" for n in range(40)]


@pytest.fixture
def lake(moto, monkeypatch):  # noqa: F811
    moto.fresh()
    use_in_this_process(moto.env(DAGSTER_ENVIRONMENT="qa"), monkeypatch)
    return moto


def staged(path, rows_by_course: dict[str, list[str]], load_id: str):
    """A staged Parquet file as dlt hands it over: the rows of one or more courses."""
    names, courses = [], []
    for course, values in rows_by_course.items():
        names += values
        courses += [course] * len(values)
    count = len(names)
    pq.write_table(
        pa.table(
            {
                "username": pa.array(names, pa.string()),
                "_source_line": pa.array(range(2, count + 2), pa.int64()),
                "_course_id": pa.array(courses, pa.string()),
                "_dlt_file_path": pa.array([f"s3://l/{c}/x.tsv" for c in courses], pa.string()),
                "_dlt_file_modified": pa.array([0] * count, pa.timestamp("us", tz="UTC")),
                "_dlt_load_id": pa.array([load_id] * count, pa.string()),
            }
        ),
        path,
    )
    return path


def load(store, load_id: str, files: list, courses: list[str], full_refresh=False) -> None:
    base = store.read_state(NAME).version
    entries = {course: {"columns": ["username"]} for course in courses}
    store.commit(LoadCommit(NAME, load_id, files, entries, {"load": load_id}, base, full_refresh))


def table_of(lake):
    return lake.catalog().load_table((DATABASE, NAME))


def rows_by_course(lake) -> dict[str, list[tuple]]:
    rows: dict[str, list[tuple]] = {}
    for row in table_of(lake).scan().to_arrow().to_pylist():
        key = (row["username"], row["_source_line"], row["_dlt_load_id"])
        rows.setdefault(row["_course_id"], []).append(key)
    return {course: sorted(values) for course, values in rows.items()}


def data_files(lake) -> dict[str, tuple[int, set[str]]]:
    """Each data file of the current snapshot: its rows and the courses its bounds allow."""
    table = table_of(lake)
    field = table.schema().find_field("_course_id").field_id
    return {
        task.file.file_path: (
            task.file.record_count,
            {task.file.lower_bounds[field].decode(), task.file.upper_bounds[field].decode()},
        )
        for task in table.scan().plan_files()
    }


def test_a_load_of_many_small_courses_is_one_file_with_exact_course_bounds(lake, tmp_path):
    store = IcebergStore(LAKE, DATABASE)
    packs = [
        staged(
            tmp_path / f"pack{n}.parquet", {c: [f"{c}-u{i}" for i in range(3)] for c in part}, "L1"
        )
        for n, part in enumerate([COURSES[:20], COURSES[20:]])
    ]
    load(store, "L1", packs, COURSES)
    (only,) = data_files(lake).values()
    assert only == (120, {COURSES[0], COURSES[-1]})
    assert sorted(rows_by_course(lake)) == COURSES


def test_files_follow_bytes_and_a_large_course_has_files_of_its_own(lake, tmp_path, monkeypatch):
    monkeypatch.setattr(iceberg_store, "ALONE_BYTES", 1)  # every one-course staged file is large
    monkeypatch.setattr(iceberg_store, "TARGET_FILE_BYTES", 1 << 20)
    store = IcebergStore(LAKE, DATABASE)
    values = [f"x{i:07d}" * 4 for i in range(200_000)]  # ~2.5 MB per batch of 65,536 rows
    big = staged(tmp_path / "big.parquet", {COURSES[0]: values}, "L1")
    small = staged(tmp_path / "small.parquet", {c: ["a", "b"] for c in COURSES[1:]}, "L1")
    load(store, "L1", [big, small], COURSES)
    files = data_files(lake)
    mine = [rows for rows, courses in files.values() if courses == {COURSES[0]}]
    shared = [path for path, (_, courses) in files.items() if courses != {COURSES[0]}]
    # The large course: several files of about TARGET_FILE_BYTES, none shared.
    assert len(mine) == 4 and sum(mine) == 200_000
    assert [files[path][1] for path in shared] == [{COURSES[1], COURSES[-1]}]

    # Re-exported, its files (equal bounds: one course) are dropped whole; the others stay.
    again = staged(tmp_path / "again.parquet", {COURSES[0]: ["new"]}, "L2")
    load(store, "L2", [again], [COURSES[0]])
    after = data_files(lake)
    assert len(after) == 2 and shared[0] in after
    assert rows_by_course(lake)[COURSES[0]] == [("new", 2, "L2")]


def test_a_re_export_rewrites_only_the_files_holding_its_course(lake, tmp_path, monkeypatch):
    """Two packs of 20 courses; re-exporting one course of the first pack: the second pack's
    file is untouched, the first pack's other 19 courses keep their rows and load ids, and the
    course holds exactly its new rows."""
    store = IcebergStore(LAKE, DATABASE)
    first = {c: [f"{c}-u{i}" for i in range(3)] for c in COURSES[:20]}
    second = {c: [f"{c}-u{i}" for i in range(3)] for c in COURSES[20:]}
    load(store, "L1", [staged(tmp_path / "a.parquet", first, "L1")], COURSES[:20])
    load(store, "L2", [staged(tmp_path / "b.parquet", second, "L2")], COURSES[20:])
    before_files, before_rows = data_files(lake), rows_by_course(lake)
    assert len(before_files) == 2

    course = COURSES[7]
    load(store, "L3", [staged(tmp_path / "c.parquet", {course: ["new"]}, "L3")], [course])
    after_files, after_rows = data_files(lake), rows_by_course(lake)
    untouched = [path for path, (_, courses) in before_files.items() if COURSES[20] in courses]
    assert set(untouched) <= set(after_files)
    assert after_rows[course] == [("new", 2, "L3")]
    assert {c: v for c, v in after_rows.items() if c != course} == {
        c: v for c, v in before_rows.items() if c != course
    }
    assert len(after_files) == 2  # the first pack's kept rows and the new ones: one file
    assert sum(rows for rows, _ in after_files.values()) == 40 * 3 - 3 + 1


def test_a_table_partitioned_by_course_moves_to_the_layout_keeping_its_rows(lake, tmp_path):
    """A table written by an earlier version (identity(_course_id), one file per course,
    retried commits, 16-character bounds) is changed once; its files stay until replaced."""
    catalog = lake.catalog()
    catalog.create_namespace(DATABASE)
    rows = pq.read_table(staged(tmp_path / "old.parquet", {c: ["old"] for c in COURSES[:3]}, "L0"))
    schema = iceberg_store.iceberg_schema(rows.schema)
    table = catalog.create_table(
        (DATABASE, NAME),
        schema=schema,
        location=f"{LAKE}/{NAME}",
        partition_spec=PartitionSpec(
            PartitionField(
                schema.find_field("_course_id").field_id, 1000, IdentityTransform(), "_course_id"
            )
        ),
        properties={"format-version": "2", "commit.retry.num-retries": "10"},
    )
    table.append(rows.cast(schema_to_pyarrow(schema, include_field_ids=False)))
    old_files = set(data_files(lake))
    assert len(old_files) == 3

    store = IcebergStore(LAKE, DATABASE)
    load(store, "L1", [staged(tmp_path / "new.parquet", {COURSES[1]: ["new"]}, "L1")], [COURSES[1]])
    table = table_of(lake)
    assert not table.spec().fields
    assert table.properties["commit.retry.num-retries"] == "0"
    assert table.properties["write.metadata.metrics.column._course_id"] == "full"
    assert rows_by_course(lake) == {
        COURSES[0]: [("old", 2, "L0")],
        COURSES[1]: [("new", 2, "L1")],
        COURSES[2]: [("old", 4, "L0")],
    }
    assert len(old_files & set(data_files(lake))) == 2  # the two other courses' files, as they were
    assert store.read_state(NAME).state == {"load": "L1"}


def commit_external(lake, operation, monkeypatch) -> None:
    """A snapshot another engine commits, without this loader's summary keys: every data file
    written again with the same rows (`replace`: Athena's OPTIMIZE, Glue's compaction), or
    with one row fewer (`overwrite`: rows changed). pyiceberg writes no `replace` snapshot: its
    summary is computed as an overwrite's, then named `replace`."""
    from pyiceberg.table.update import snapshot as producers

    summarize = producers.update_snapshot_summaries

    def as_replace(summary, previous_summary=None):
        if summary.operation != Operation.REPLACE:
            return summarize(summary, previous_summary)
        overwrite = Summary(Operation.OVERWRITE, **summary.additional_properties)
        return Summary(
            Operation.REPLACE, **summarize(overwrite, previous_summary).additional_properties
        )

    monkeypatch.setattr(producers, "update_snapshot_summaries", as_replace)

    table = table_of(lake)
    rows = table.scan().to_arrow()
    if operation == Operation.OVERWRITE:
        rows = rows.slice(1)
    with table.transaction() as transaction:
        producer = producers._OverwriteFiles(
            operation=operation, transaction=transaction, io=table.io, snapshot_properties={}
        )
        with producer as snapshot:
            for task in table.scan().plan_files():
                snapshot.delete_data_file(task.file)
            metadata = transaction.table_metadata
            written = iceberg_files.data_files(
                metadata, rows, table.io, snapshot.commit_uuid, count()
            )
            for file in written:
                snapshot.append_data_file(file)


def test_the_state_survives_a_compaction_by_another_engine(lake, tmp_path, monkeypatch):
    """A `replace` snapshot changes no row: both readers of the state (the store's, and the
    CLI's boto3 one) pass it to the last snapshot naming a state; a snapshot of another writer
    that changed rows leaves no state (the next load reads every course once)."""
    store = IcebergStore(LAKE, DATABASE)
    load(
        store, "L1", [staged(tmp_path / "a.parquet", {COURSES[0]: ["a", "b"]}, "L1")], [COURSES[0]]
    )

    def states():
        current = table_of(lake).current_snapshot().snapshot_id
        quick = read_lake_state(LAKE, DATABASE, NAME)
        stored = store.read_state(NAME)
        assert quick.version == stored.version == current
        assert quick.state == stored.state
        return stored.state

    assert states() == {"load": "L1"}
    commit_external(lake, Operation.REPLACE, monkeypatch)
    assert table_of(lake).current_snapshot().summary.operation == Operation.REPLACE
    assert states() == {"load": "L1"}
    commit_external(lake, Operation.OVERWRITE, monkeypatch)
    assert states() == {}
