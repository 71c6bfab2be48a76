"""qa and production: Iceberg tables on S3, registered in Glue, against a real endpoint (moto).

The CLI runs in a subprocess with `AWS_ENDPOINT_URL` pointing at the moto server; the tables are
then found through Glue and read back with pyiceberg's own Glue catalog, independently of the
project's store. Rows must equal SPEC §5's invariant after every step of a landing-zone history.
"""

from dataclasses import dataclass
from datetime import UTC

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.types import LongType, StringType, TimestamptzType

from edxorg_s3_ingest.settings import Settings
from edxorg_s3_ingest.stores import LoadCommit
from edxorg_s3_ingest.tables import REJECTS_TABLE, destination_table

from conftest import run_probed
from moto_server import (
    BUCKET_URL,
    LAKE_BUCKETS,
    LANDING_BUCKET,
    LANDING_PREFIX,
    glue_tables,
    landing_key,
    moto,  # noqa: F401 - the module's moto server fixture
    report_of,
    run_loads,
    upload,
    upload_sample,
    use_in_this_process,
)
from oracle import canonical, fields_of, unescape

pytestmark = pytest.mark.slow
QA_DATABASE = "ol_warehouse_qa_raw"
TABLES = ["auth_user", "teams"]
DEMO = "edX-DemoX-Demo_Course"
FALL = "MITx-6.002x-2012_Fall"
HANDMADE = "MITx-1.00x-2026_Spring"
# A hand-made export: an escape, a NULL and one ragged line (line 3), which goes to the rejects.
HANDMADE_TEAMS = (
    b"id\tteam_id\tname\tcourse_id\n"
    b"1\tt1\tAlpha\\tOne\tMITx/1.00x/2026_Spring\n"
    b"2\tt2\tBeta\n"
    b"3\tt3\tNULL\tMITx/1.00x/2026_Spring\n"
)


@pytest.fixture
def lake(moto):  # noqa: F811
    """A clean moto: the landing bucket and both lake buckets, no Glue database yet."""
    moto.fresh()
    return moto


# -- the oracle: a plain reading of the landing zone through boto3 ------------------------------


def newest_exports(s3, table: str) -> dict[str, dict]:
    """Per course, the newest non-empty prod file: greatest (LastModified, key) (SPEC §5)."""
    prefix = f"{LANDING_PREFIX}/db_table/{table}/prod/"
    objects = s3.list_objects_v2(Bucket=LANDING_BUCKET, Prefix=prefix).get("Contents", [])
    newest: dict[str, dict] = {}
    for item in objects:
        course = item["Key"][len(prefix) :].split("/")[0]
        current = newest.get(course)
        if item["Size"] and (
            current is None
            or (item["LastModified"], item["Key"]) > (current["LastModified"], current["Key"])
        ):
            newest[course] = item
    return newest


def read_rows(content: bytes) -> list[dict]:
    """oracle.read_export's reading, leaving ragged lines out (they are rejected, SPEC §6)."""
    rows = fields_of(content.decode())
    header = rows[0]
    return [
        {name: None if value == "NULL" else unescape(value) for name, value in pairs}
        for pairs in (zip(header, row, strict=True) for row in rows[1:] if len(row) == len(header))
    ]


def expected_rows(s3, table: str) -> list[dict]:
    rows = []
    for course, item in newest_exports(s3, table).items():
        content = s3.get_object(Bucket=LANDING_BUCKET, Key=item["Key"])["Body"].read()
        lineage = {
            "_course_id": course,
            "_dlt_file_path": f"s3://{LANDING_BUCKET}/{item['Key']}",
            "_dlt_file_modified": item["LastModified"].astimezone(UTC),
        }
        rows += [{**row, **lineage} for row in read_rows(content)]
    return rows


def table_rows(catalog, database: str, name: str) -> list[dict]:
    return catalog.load_table((database, name)).scan().to_arrow().to_pylist()


def assert_rows_equal(actual: list[dict], expected: list[dict], modified: bool = True) -> None:
    """Equal as multisets on the expected columns; `modified=False` leaves the file times out
    (an unchanged file re-uploaded later is not re-read, so its rows keep the time they had)."""
    columns = {name for row in expected for name in row}
    if not modified:
        columns.discard("_dlt_file_modified")
    assert canonical(actual, keep=columns) == canonical(expected, keep=columns)


# -- one landing-zone history, loaded step by step in qa ----------------------------------------


@dataclass
class Step:
    report: dict
    stderr: str
    snapshots: dict[str, list[int]]
    metadata: dict[str, str]
    rows: dict[str, list[dict]]
    expected: dict[str, list[dict]]
    schemas: dict[str, object]

    def new_snapshots(self, before: "Step", table: str) -> list[int]:
        return [s for s in self.snapshots[table] if s not in before.snapshots.get(table, [])]


def current_content(s3, table: str, course: str) -> tuple[str, bytes]:
    key = newest_exports(s3, table)[course]["Key"]
    return key, s3.get_object(Bucket=LANDING_BUCKET, Key=key)["Body"].read()


def older_looking_export(table: str, course: str, than_key: str, content: bytes) -> bytes:
    """Different content whose key sorts before `than_key`: should the two uploads share a
    LastModified second, the current file still wins the SPEC §5 tie-break."""
    for nonce in range(10_000):
        candidate = content + f"999{nonce}".encode() + b"\t" * content.split(b"\n")[0].count(b"\t")
        candidate += b"\n"
        if landing_key(table, course, candidate) < than_key:
            return candidate
    raise AssertionError("no smaller key found")


@pytest.fixture(scope="module")
def history(moto, tmp_path_factory):  # noqa: F811
    """Six runs of the CLI in qa: initial load, re-exports (one header-only), a late older
    file, a new column, a no-op run, and a full refresh; each, as in a new Kubernetes pod,
    with a new, empty pipelines dir (the state is the lake's)."""
    moto.reset()
    s3, glue, catalog = moto.client("s3"), moto.client("glue"), moto.catalog()
    for bucket in (LANDING_BUCKET, *LAKE_BUCKETS):
        s3.create_bucket(Bucket=bucket)
    env = moto.env(DAGSTER_ENVIRONMENT="qa")
    args = ("--tables", ",".join(TABLES), "--bucket-url", BUCKET_URL)

    def run(*extra: str) -> Step:
        pipelines = tmp_path_factory.mktemp("pipelines")
        result = run_loads(env, *args, "--pipelines-dir", str(pipelines), *extra)
        report = report_of(result)
        assert result.returncode == 0, result.stderr + result.stdout
        metadata = glue_tables(glue, QA_DATABASE)
        tables = {name: catalog.load_table((QA_DATABASE, name)) for name in metadata}
        return Step(
            report=report,
            stderr=result.stderr,
            snapshots={name: [s.snapshot_id for s in t.snapshots()] for name, t in tables.items()},
            metadata=metadata,
            rows={name: t.scan().to_arrow().to_pylist() for name, t in tables.items()},
            expected={destination_table(table): expected_rows(s3, table) for table in TABLES},
            schemas={name: t.schema() for name, t in tables.items()},
        )

    upload_sample(s3, TABLES)
    upload(s3, "teams", HANDMADE, HANDMADE_TEAMS)
    steps = {"initial": run()}

    # A course re-exported with different content, and a header-only re-export.
    _, content = current_content(s3, "auth_user", DEMO)
    lines = content.split(b"\n")
    upload(s3, "auth_user", DEMO, b"\n".join(lines[:2] + lines[3:]).replace(b"staff", b"STAFF"))
    upload(s3, "teams", HANDMADE, HANDMADE_TEAMS.split(b"\n")[0] + b"\n")
    steps["re-export"] = run()

    # A late file, older than the course's current one (which is re-uploaded after it).
    key, content = current_content(s3, "auth_user", FALL)
    upload(s3, "auth_user", FALL, older_looking_export("auth_user", FALL, key, content))
    s3.put_object(Bucket=LANDING_BUCKET, Key=key, Body=content)
    steps["late"] = run()

    # A re-export that brings a new column.
    _, content = current_content(s3, "teams", DEMO)
    header, *rows = content.rstrip(b"\n").split(b"\n")
    widened = [header + b"\tnew_column"] + [
        row + b"\tvalue " + b"%d" % n for n, row in enumerate(rows)
    ]
    upload(s3, "teams", DEMO, b"\n".join(widened) + b"\n")
    steps["new column"] = run()

    steps["no-op"] = run()
    steps["full refresh"] = run("--full-refresh")
    return steps


def test_tables_are_registered_in_glue_as_iceberg_under_the_lake(history, moto):  # noqa: F811
    step = history["initial"]
    assert step.report["ok"] is True and step.report["environment"] == "qa"
    tables = moto.client("glue").get_tables(DatabaseName=QA_DATABASE)["TableList"]
    by_name = {table["Name"]: table for table in tables}
    expected = {destination_table(table) for table in TABLES} | {REJECTS_TABLE}
    assert set(by_name) == expected
    for name, table in by_name.items():
        assert table["Parameters"]["table_type"] == "ICEBERG"
        location = f"s3://ol-data-lake-raw-qa/edxorg/{name}"
        assert table["StorageDescriptor"]["Location"] == location
        assert table["Parameters"]["metadata_location"].startswith(location + "/metadata/")
    assert "Glue database ol_warehouse_qa_raw did not exist: created it" in step.stderr
    for table in TABLES:
        report = step.report["tables"][table]
        assert (
            report["destination"] == f"s3://ol-data-lake-raw-qa/edxorg/{destination_table(table)}"
        )


def test_format_v2_athena_types_and_unpartitioned_layout(history, moto):  # noqa: F811
    table = moto.catalog().load_table((QA_DATABASE, destination_table("teams")))
    assert table.metadata.format_version == 2
    types = {field.name: field.field_type for field in table.schema().fields}
    assert types["_source_line"] == LongType()
    assert types["_dlt_file_modified"] == TimestamptzType()
    assert all(
        types[name] == StringType()
        for name in types
        if name not in {"_source_line", "_dlt_file_modified"}
    )
    # Files follow bytes, not courses (test_lake_layout.py): no partitions, exact course bounds.
    assert not table.spec().fields
    assert table.properties["write.metadata.metrics.column._course_id"] == "full"


@pytest.mark.parametrize(
    "step", ["initial", "re-export", "late", "new column", "no-op", "full refresh"]
)
@pytest.mark.parametrize("table", TABLES)
def test_rows_equal_the_newest_export_of_every_course(history, step, table):
    name = destination_table(table)
    assert history[step].expected[name]
    modified = step in ("initial", "full refresh")  # every newest file was just read
    assert_rows_equal(history[step].rows[name], history[step].expected[name], modified)


def test_source_lines_and_load_ids(history):
    rows = history["initial"].rows[destination_table("auth_user")]
    lines = sorted((row["_course_id"], row["_source_line"]) for row in rows)
    assert lines == [(course, line) for course in (FALL, DEMO) for line in range(2, 6)]
    load_id = history["initial"].report["tables"]["auth_user"]["load_id"]
    assert {row["_dlt_load_id"] for row in rows} == {load_id}


def test_ragged_line_goes_to_the_rejects_table(history):
    rejects = history["initial"].rows[REJECTS_TABLE]
    assert [(r["table"], r["_course_id"], r["_source_line"], r["raw_line"]) for r in rejects] == [
        ("teams", HANDMADE, 3, "2\tt2\tBeta")
    ]
    assert history["initial"].report["tables"]["teams"]["rows_rejected"] == 1


def test_initial_load_is_one_snapshot_per_table(history):
    for name, snapshots in history["initial"].snapshots.items():
        assert len(snapshots) == 1, name


def test_re_export_replaces_the_course_in_one_snapshot(history):
    before, after = history["initial"], history["re-export"]
    for table in TABLES:
        name = destination_table(table)
        assert len(after.new_snapshots(before, name)) == 1
        report = after.report["tables"][table]
        # Only the new file is read, though this run's pipelines dir is new and empty.
        assert (report["courses_replaced"], report["files_loaded"]) == (1, 1)
    demo = [r for r in after.rows[destination_table("auth_user")] if r["_course_id"] == DEMO]
    assert len(demo) == 3 and any(r["username"] == "STAFF" for r in demo)
    # The header-only re-export empties its course and leaves the others alone.
    teams = after.rows[destination_table("teams")]
    assert {row["_course_id"] for row in teams} == {DEMO, FALL}
    assert after.new_snapshots(before, REJECTS_TABLE) == []


def test_late_older_file_changes_nothing(history):
    """No row changes; the table's state records the late file's version (in a snapshot that
    adds and deletes no data), so that the next run does not ask again."""
    before, after = history["re-export"], history["late"]
    name = destination_table("auth_user")
    assert canonical(after.rows[name]) == canonical(before.rows[name])
    assert len(after.new_snapshots(before, name)) == 1
    others = {table: ids for table, ids in after.snapshots.items() if table != name}
    assert others == {table: ids for table, ids in before.snapshots.items() if table != name}
    report = after.report["tables"]["auth_user"]
    assert report["status"] == "unchanged" and report["files_loaded"] == 0
    assert history["new column"].new_snapshots(after, name) == []


def test_new_column_evolves_the_schema(history):
    before, after = history["late"], history["new column"]
    name = destination_table("teams")
    assert "new_column" not in before.schemas[name].column_names
    assert after.schemas[name].find_field("new_column").field_type == StringType()
    assert len(after.new_snapshots(before, name)) == 1
    values = {row["_course_id"]: row["new_column"] for row in after.rows[name]}
    assert values[FALL] is None and values[DEMO].startswith("value ")
    assert after.new_snapshots(before, destination_table("auth_user")) == []


def test_a_loaded_tables_report_counts_the_rows_its_commit_left(history):
    """The report's table rows of a loaded table (from the snapshot the load committed) are
    the rows the table holds after the run, at every run that loaded something."""
    loaded = 0
    for step in history.values():
        for table, report in step.report["tables"].items():
            if report["status"] == "loaded":
                assert report["table_rows"] == len(step.rows[destination_table(table)])
                loaded += 1
    assert loaded >= len(TABLES)  # the initial load's, at least


def test_no_op_run_adds_no_snapshot(history):
    before, after = history["new column"], history["no-op"]
    assert after.snapshots == before.snapshots
    assert after.metadata == before.metadata
    assert all(report["status"] == "unchanged" for report in after.report["tables"].values())


def test_no_op_run_is_decided_in_the_cli_process_from_the_lake(history, moto):  # noqa: F811
    """A fresh pod's run with nothing new lists, reads each table's state with boto3 and ends:
    neither pyiceberg nor pyarrow nor dlt is imported, no worker starts, nothing is written."""
    env = moto.env(DAGSTER_ENVIRONMENT="qa")
    before = glue_tables(moto.client("glue"), QA_DATABASE)
    report, imported = run_probed(env, "--tables", ",".join(TABLES), "--bucket-url", BUCKET_URL)
    assert imported == "['boto3', 'botocore']"
    assert glue_tables(moto.client("glue"), QA_DATABASE) == before
    for table in TABLES:
        found, loaded = report["tables"][table], history["no-op"].report["tables"][table]
        assert found["status"] == "unchanged" and found["files_loaded"] == 0
        assert (
            found["table_rows"]
            == loaded["table_rows"]
            == len(history["no-op"].rows[destination_table(table)])
        )
        assert found["destination"] == loaded["destination"]


def test_full_refresh_rebuilds_the_tables_in_place(history):
    before, after = history["no-op"], history["full refresh"]
    assert set(after.metadata) == set(before.metadata)  # same Glue tables, same locations
    for table in TABLES:
        name = destination_table(table)
        # One snapshot, the old files out and the new in: the table's history is kept.
        assert len(after.new_snapshots(before, name)) == 1
        assert set(before.snapshots[name]) < set(after.snapshots[name])
    # Every course with a prod export, the emptied (header-only) one included.
    courses = {
        table: report["courses_replaced"] for table, report in after.report["tables"].items()
    }
    assert courses == {"auth_user": 2, "teams": 3}
    # The rejected line's file is no longer the newest of its course: its reject is gone.
    assert after.rows[REJECTS_TABLE] == []


def test_checks_and_sensor_answer_from_a_pod_that_never_loaded(
    history,
    moto,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    """The reconciliation check and the landing-zone sensor in a process whose pipelines dir is
    empty (the code-server pod, a checks-only run): both read the state from the lake."""
    from edxorg_s3_ingest.orchestration.automation import reconciliation_result
    from edxorg_s3_ingest.orchestration.sensor import has_new_prod_files

    use_in_this_process(moto.env(DAGSTER_ENVIRONMENT="qa"), monkeypatch)
    settings = Settings.resolve(BUCKET_URL, pipelines_dir=tmp_path / "empty")
    for table in TABLES:
        rows = len(history["full refresh"].rows[destination_table(table)])
        check = reconciliation_result(settings, table, dg.AssetKey(["edxorg", "tables", table]))
        assert check.passed, table
        assert check.metadata["rows_in_newest_files"].value == rows > 0
        assert not has_new_prod_files(settings, table)
    upload(moto.client("s3"), "teams", "MITx-9.99x-2026_Fall", b"id\tname\n1\ta\n")
    assert has_new_prod_files(settings, "teams")
    assert not (tmp_path / "empty").exists()


# -- production, Dagster, and the store's own guarantees ----------------------------------------


def test_production_uses_its_bucket_and_database(lake, tmp_path):
    s3 = lake.client("s3")
    upload_sample(s3, ["teams"])
    result = run_loads(
        lake.env(DAGSTER_ENVIRONMENT="production"),
        "--tables",
        "teams",
        "--bucket-url",
        BUCKET_URL,
        "--pipelines-dir",
        str(tmp_path / "pipelines"),
    )
    assert result.returncode == 0, result.stderr
    name = destination_table("teams")
    assert set(glue_tables(lake.client("glue"), "ol_warehouse_production_raw")) == {name}
    assert glue_tables(lake.client("glue"), QA_DATABASE) == {}
    table = lake.catalog().load_table(("ol_warehouse_production_raw", name))
    assert table.metadata.location == f"s3://ol-data-lake-raw-production/edxorg/{name}"
    assert_rows_equal(table.scan().to_arrow().to_pylist(), expected_rows(s3, "teams"))


@pytest.fixture
def aws_env(lake, monkeypatch):
    """This process pointed at the moto server, as the CLI subprocesses are."""
    env = lake.env(DAGSTER_ENVIRONMENT="qa")
    use_in_this_process(env, monkeypatch)
    return lake


@pytest.mark.parametrize("environment", ["qa", "production"])
def test_dagster_materialization(environment, aws_env, tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_ENVIRONMENT", environment)
    s3 = aws_env.client("s3")
    upload_sample(s3, ["teams"])
    monkeypatch.setenv("SOURCES__EDXORG_S3__BUCKET_URL", BUCKET_URL)
    monkeypatch.setenv("EDXORG_S3_INGEST__PIPELINES_DIR", str(tmp_path / "pipelines"))
    from edxorg_s3_ingest.definitions import defs

    definitions = defs()
    key = dg.AssetKey(["edxorg", "tables", "teams"])
    job = definitions.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(asset_selection=[key], instance=dg.DagsterInstance.ephemeral())
    assert result.success
    (event,) = result.get_asset_materialization_events()
    metadata = event.materialization.metadata
    assert metadata["rows_loaded"].value == 8
    name = destination_table("teams")
    assert metadata["destination"].value == f"s3://ol-data-lake-raw-{environment}/edxorg/{name}"
    rows = table_rows(aws_env.catalog(), f"ol_warehouse_{environment}_raw", name)
    assert_rows_equal(rows, expected_rows(s3, "teams"))
    assert metadata["dagster/row_count"].value == len(rows) == 8


def test_landing_zone_sensor_on_s3(aws_env, tmp_path, monkeypatch):
    """The optional sensor over the S3 landing zone: new prod files request their table only."""
    s3 = aws_env.client("s3")
    upload_sample(s3, ["teams", "auth_user"])
    monkeypatch.setenv("SOURCES__EDXORG_S3__BUCKET_URL", BUCKET_URL)
    monkeypatch.setenv("EDXORG_S3_INGEST__PIPELINES_DIR", str(tmp_path / "pipelines"))
    from edxorg_s3_ingest.definitions import defs
    from edxorg_s3_ingest.orchestration.sensor import TABLE_TAG
    from edxorg_s3_ingest.running.runner import load_table
    from edxorg_s3_ingest.settings import Settings

    definitions = defs()
    sensor = definitions.resolve_sensor_def("edxorg_landing_zone_sensor")

    def requested(instance) -> list[str]:
        context = dg.build_sensor_context(instance=instance, definitions=definitions)
        return sorted(request.tags[TABLE_TAG] for request in sensor(context) or [])

    with dg.instance_for_test() as instance:
        assert requested(instance) == ["auth_user", "teams"]
        for table in ("auth_user", "teams"):
            assert load_table(table, Settings.resolve()).status == "loaded"
        assert requested(instance) == []
        upload(s3, "auth_user", DEMO, b"id\n99\n", system="edge")
        assert requested(instance) == []
        upload(s3, "teams", HANDMADE, HANDMADE_TEAMS)
        assert requested(instance) == ["teams"]


def staged_file(path, course: str, load_id: str, values: list[str]):
    """A normalized Parquet file as dlt hands it to the destination."""
    count = len(values)
    table = pa.table(
        {
            "name": pa.array(values, pa.string()),
            "_source_line": pa.array(range(2, count + 2), pa.int64()),
            "_course_id": pa.array([course] * count, pa.string()),
            "_dlt_file_path": pa.array([f"s3://l/{course}/x.tsv"] * count, pa.string()),
            "_dlt_file_modified": pa.array([0] * count, pa.timestamp("us", tz="UTC")),
            "_dlt_load_id": pa.array([load_id] * count, pa.string()),
        }
    )
    pq.write_table(table, path)
    return path


def test_store_commits_the_state_with_the_rows_and_refuses_a_moved_table(aws_env, tmp_path):
    """A commit carries its state (read back from the current snapshot); one planned from a
    snapshot that is no longer current is refused, naming the table, and changes nothing; the
    same load committed twice changes nothing; a rebuild replaces every row in one snapshot."""
    from edxorg_s3_ingest.state.table_state import StateMovedError
    from edxorg_s3_ingest.stores.iceberg_store import IcebergStore

    store = IcebergStore("s3://ol-data-lake-raw-qa/edxorg", QA_DATABASE)
    name = destination_table("teams")
    assert store.read_state(name).version is None
    courses = {"c1": {"columns": ["name"]}, "c2": {"columns": ["name"]}}
    first = [staged_file(tmp_path / "1.parquet", "c1", "L1", ["a", "b"])]
    first.append(staged_file(tmp_path / "2.parquet", "c2", "L1", ["c"]))
    for _ in range(2):  # the same load again (its snapshot is the table's): nothing changes
        store.commit(LoadCommit(name, "L1", first, courses, {"rows": {"c1": 2, "c2": 1}}, None))
    table = aws_env.catalog().load_table((QA_DATABASE, name))
    assert len(table.snapshots()) == 1 and store.row_count(name) == 3
    stored = store.read_state(name)
    assert stored.state == {"rows": {"c1": 2, "c2": 1}}
    assert stored.version == table.current_snapshot().snapshot_id

    late = [staged_file(tmp_path / "x.parquet", "c1", "L9", ["late"])]
    with pytest.raises(StateMovedError, match=name):
        store.commit(
            LoadCommit(name, "L9", late, {"c1": {"columns": ["name"]}}, {"rows": {}}, None)
        )
    assert store.row_count(name) == 3 and store.read_state(name).state["rows"]["c1"] == 2

    rejects = [tmp_path / "r.parquet"]
    pq.write_table(pa.table({"table": ["teams"], "reason": ["ragged_line"]}), rejects[0])
    for _ in range(2):
        store.append_rejects("teams", "L1", rejects)
    assert store.row_count(REJECTS_TABLE) == 1

    second = [staged_file(tmp_path / "3.parquet", "c1", "L2", ["z"])]
    base = store.read_state(name).version
    store.commit(
        LoadCommit(
            name, "L2", second, {"c1": {"columns": ["name"]}}, {"rows": {"c1": 1}}, base, True
        )
    )
    rows = table_rows(aws_env.catalog(), QA_DATABASE, name)
    assert [(row["_course_id"], row["name"]) for row in rows] == [("c1", "z")]
    assert len(aws_env.catalog().load_table((QA_DATABASE, name)).snapshots()) == 2
    assert store.read_state(name).state == {"rows": {"c1": 1}}


def test_a_big_load_is_written_in_chunks_within_one_snapshot(aws_env, tmp_path, monkeypatch):
    from edxorg_s3_ingest.stores import iceberg_store

    # Every staged file a data file of its own, as it is; written again, every batch one.
    monkeypatch.setattr(iceberg_store, "ALONE_BYTES", 1)
    monkeypatch.setattr(iceberg_store, "TARGET_FILE_BYTES", 1)
    store = iceberg_store.IcebergStore("s3://ol-data-lake-raw-qa/edxorg", QA_DATABASE)
    staged = [
        staged_file(tmp_path / f"{n}.parquet", "c1", "L1", [f"row {n}.{i}" for i in range(3)])
        for n in range(4)
    ]
    name = destination_table("teams")
    store.commit(LoadCommit(name, "L1", staged, {"c1": {"columns": ["name"]}}, {}, None))
    table = aws_env.catalog().load_table((QA_DATABASE, name))
    assert len(table.snapshots()) == 1
    assert len(table.inspect.files()) == 4 and store.row_count(name) == 12


def test_glue_table_elsewhere_is_a_clear_error(aws_env, tmp_path):
    from edxorg_s3_ingest.stores.iceberg_store import IcebergStore, LakeError

    catalog = aws_env.catalog()
    catalog.create_namespace(QA_DATABASE)
    name = destination_table("teams")
    catalog.create_table(
        (QA_DATABASE, name),
        schema=pa.schema([("id", pa.string())]),
        location="s3://ol-data-lake-raw-qa/elsewhere/teams",
    )
    store = IcebergStore("s3://ol-data-lake-raw-qa/edxorg", QA_DATABASE)
    staged = [staged_file(tmp_path / "1.parquet", "c1", "L1", ["a"])]
    with pytest.raises(LakeError, match="points to s3://ol-data-lake-raw-qa/elsewhere/teams"):
        store.commit(LoadCommit(name, "L1", staged, {"c1": {"columns": ["name"]}}, {}, None))
