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

from edxorg_s3_ingest.stores import LoadCommit, iceberg_files, iceberg_store, parquet_footer
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
    """Two small packs with the same columns: joined into one data file, which pyiceberg and
    DuckDB read whole."""
    store = IcebergStore(LAKE, DATABASE)
    packs = [
        staged(
            tmp_path / f"pack{n}.parquet", {c: [f"{c}-u{i}" for i in range(3)] for c in part}, "L1"
        )
        for n, part in enumerate([COURSES[:20], COURSES[20:]])
    ]
    load(store, "L1", packs, COURSES)
    (path, only), *_ = data_files(lake).items()
    assert len(data_files(lake)) == 1
    assert only == (120, {COURSES[0], COURSES[-1]})
    assert sorted(rows_by_course(lake)) == COURSES
    # Joined, not written again: both files' row groups as they were, one after the other.
    with table_of(lake).io.new_input(path).open() as stream:
        written = stream.read()
    row_groups = b"".join(
        pack.read_bytes()[4 : parquet_footer.read_footer(pack)[0]] for pack in packs
    )
    assert written.startswith(b"PAR1" + row_groups)
    columns = ("_course_id", "username", "_source_line")
    duckdb = duckdb_rows(lake, table_of(lake).metadata_location, columns)
    if duckdb is not None:
        pyiceberg = table_of(lake).scan().to_arrow().select(list(columns)).to_pylist()
        assert sorted(duckdb) == sorted(tuple(row.values()) for row in pyiceberg)
        assert len(duckdb) == 120


def test_a_large_course_has_a_data_file_of_its_own_as_it_was_staged(lake, tmp_path, monkeypatch):
    """A course's staged file of ALONE_BYTES or more is uploaded as it is (the same data
    pages, the table's field ids in its footer); the packs of the other courses are joined into
    one file; the large course's file is dropped whole when the course is exported again."""
    monkeypatch.setattr(iceberg_store, "ALONE_BYTES", 64 << 10)
    store = IcebergStore(LAKE, DATABASE)
    values = [f"x{i:07d}" * 4 for i in range(200_000)]
    big = staged(tmp_path / "big.parquet", {COURSES[0]: values}, "L1")
    packs = [
        staged(
            tmp_path / f"pack{n}.parquet",
            {c: [f"u{i:05d}" for i in range(4000)] for c in part},
            "L1",
        )
        for n, part in enumerate([COURSES[1:20], COURSES[20:]])
    ]
    assert all(path.stat().st_size >= 64 << 10 for path in [big, *packs])
    load(store, "L1", [big, *packs], COURSES)
    table = table_of(lake)
    ids = {field.name: field.field_id for field in table.schema().fields}
    files = {task.file.file_path: task.file for task in table.scan().plan_files()}
    assert sorted(file.record_count for file in files.values()) == [39 * 4000, 200_000]
    by_rows = {file.record_count: path for path, file in files.items()}
    for rows, pieces in ((200_000, [big]), (39 * 4000, packs)):
        with table.io.new_input(by_rows[rows]).open() as stream:
            written = stream.read()
        assert files[by_rows[rows]].file_size_in_bytes == len(written)
        copied = b"".join(p.read_bytes()[4 : parquet_footer.read_footer(p)[0]] for p in pieces)
        assert written.startswith(b"PAR1" + copied)
        footer = written[4 + len(copied) : -8]
        assert parquet_footer.field_ids(footer) == ids
    assert all(parquet_footer.field_ids(parquet_footer.read_footer(p)[1]) == {} for p in packs)
    assert data_files(lake)[by_rows[200_000]] == (200_000, {COURSES[0]})
    assert data_files(lake)[by_rows[39 * 4000]] == (39 * 4000, {COURSES[1], COURSES[-1]})
    rows = rows_by_course(lake)
    assert len(rows[COURSES[0]]) == 200_000 and len(rows[COURSES[30]]) == 4000

    again = staged(tmp_path / "again.parquet", {COURSES[0]: ["new"]}, "L2")
    load(store, "L2", [again], [COURSES[0]])
    after = data_files(lake)
    assert len(after) == 2 and by_rows[39 * 4000] in after
    assert rows_by_course(lake)[COURSES[0]] == [("new", 2, "L2")]


def test_a_column_added_later_is_null_in_the_older_as_is_files(lake, tmp_path, monkeypatch):
    """Files uploaded as they are read by field id: a column a later load adds is null for the
    rows of earlier files (pyiceberg, and DuckDB's iceberg reader where it can run)."""
    monkeypatch.setattr(iceberg_store, "ALONE_BYTES", 1)
    store = IcebergStore(LAKE, DATABASE)
    load(
        store, "L1", [staged(tmp_path / "a.parquet", {COURSES[0]: ["a", "b"]}, "L1")], [COURSES[0]]
    )
    later = tmp_path / "b.parquet"
    rows = pa.table(
        {
            "email": pa.array(["e@x"], pa.string()),
            "username": pa.array(["c"], pa.string()),
            "_source_line": pa.array([2], pa.int64()),
            "_course_id": pa.array([COURSES[1]], pa.string()),
            "_dlt_file_path": pa.array(["s3://l/b.tsv"], pa.string()),
            "_dlt_file_modified": pa.array([0], pa.timestamp("us", tz="UTC")),
            "_dlt_load_id": pa.array(["L2"], pa.string()),
        }
    )
    pq.write_table(rows, later)
    base = store.read_state(NAME).version
    entries = {COURSES[1]: {"columns": ["email", "username"]}}
    store.commit(LoadCommit(NAME, "L2", [later], entries, {"load": "L2"}, base))
    assert len(data_files(lake)) == 2
    expected = [
        (COURSES[0], "a", None, 2, "L1"),
        (COURSES[0], "b", None, 3, "L1"),
        (COURSES[1], "c", "e@x", 2, "L2"),
    ]
    read = table_of(lake).scan().to_arrow().to_pylist()
    columns = ("_course_id", "username", "email", "_source_line", "_dlt_load_id")
    assert sorted(tuple(row[c] for c in columns) for row in read) == expected
    duckdb = duckdb_rows(lake, table_of(lake).metadata_location, columns)
    if duckdb is not None:
        assert sorted(duckdb) == expected


def test_a_staged_file_of_other_types_is_written_again(lake, tmp_path, monkeypatch):
    """A staged file whose types are not the table's (here 32-bit line numbers, nanosecond
    times) is not uploaded as it is: its rows are written again in the table's types."""
    monkeypatch.setattr(iceberg_store, "ALONE_BYTES", 1)
    store = IcebergStore(LAKE, DATABASE)
    load(store, "L1", [staged(tmp_path / "a.parquet", {COURSES[0]: ["a"]}, "L1")], [COURSES[0]])
    odd = tmp_path / "odd.parquet"
    pq.write_table(
        pa.table(
            {
                "username": pa.array(["b"], pa.string()),
                "_source_line": pa.array([2], pa.int32()),
                "_course_id": pa.array([COURSES[1]], pa.string()),
                "_dlt_file_path": pa.array(["s3://l/b.tsv"], pa.string()),
                "_dlt_file_modified": pa.array([1_000], pa.timestamp("ns", tz="UTC")),
                "_dlt_load_id": pa.array(["L2"], pa.string()),
            }
        ),
        odd,
        version="2.6",
    )
    load(store, "L2", [odd], [COURSES[1]])
    table = table_of(lake)
    (written,) = [f for f in data_files(lake) if COURSES[1] in data_files(lake)[f][1]]
    with table.io.new_input(written).open() as stream:
        assert stream.read()[:-8] != odd.read_bytes()[:-8]
    assert rows_by_course(lake) == {
        COURSES[0]: [("a", 2, "L1")],
        COURSES[1]: [("b", 2, "L2")],
    }


DUCKDB_ENV = [
    "uv",
    "run",
    "--offline",
    "--no-project",
    "--with",
    "duckdb==1.4.4",
    *(f"--with=duckdb-ext-{name}==1.4.4.20260205" for name in ("iceberg", "httpfs", "avro")),
]
DUCKDB_READ = """
import json, sys
sys.path.insert(0, sys.argv[1])
from duckdb_iceberg_read import connect
connection = connect(sys.argv[2])
rows = connection.execute(f"SELECT {sys.argv[4]} FROM iceberg_scan('{sys.argv[3]}')").fetchall()
print(json.dumps(rows))
"""


def duckdb_rows(lake, metadata_location: str, columns) -> list[tuple] | None:
    """The table's rows as DuckDB 1.4.4's iceberg reader reads them (benchmarks/README: its
    own environment); None when that environment cannot be built offline here."""
    import json
    import shutil
    import subprocess
    from pathlib import Path

    if shutil.which("uv") is None:
        return None
    benchmarks = Path(__file__).resolve().parent.parent / "benchmarks"
    command = [*DUCKDB_ENV, "python", "-c", DUCKDB_READ, str(benchmarks), lake.endpoint]
    done = subprocess.run(
        [*command, metadata_location, ", ".join(columns)], capture_output=True, text=True
    )
    if done.returncode and "duckdb" in done.stderr and "offline" in done.stderr.lower():
        return None
    assert done.returncode == 0, done.stderr[-2000:]
    return [tuple(row) for row in json.loads(done.stdout)]


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
