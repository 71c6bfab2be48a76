"""Table upkeep in the lake (stores/iceberg_upkeep.py) against a moto server: compaction,
manifest merge, snapshot expiry and state-object cleanup leave every table's rows exactly as
they were (every column, load ids included), readable by pyiceberg's own Glue catalog, and its
state in place: the next load plans as if no upkeep had run. A kill anywhere in a compaction
leaves the table as it was; upkeep planned from a snapshot that is no longer current changes
nothing.
"""

import gzip
import inspect
import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pyiceberg
import pytest
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import EqualTo
from pyiceberg.partitioning import UNPARTITIONED_PARTITION_SPEC
from pyiceberg.table import Transaction

from edxorg_s3_ingest.crashpoints import CRASH_ENV
from edxorg_s3_ingest.settings import ConfigurationError
from edxorg_s3_ingest.tables import destination_table

from conftest import run_cli
from moto_server import (
    BUCKET_URL,
    moto,  # noqa: F401 - the module's moto server fixture
    report_of,
    run_loads,
    upload,
    upload_sample,
    use_in_this_process,
)
from pausing import Pause
from test_iceberg import DEMO, FALL, assert_rows_equal, current_content, expected_rows

pytestmark = pytest.mark.slow
QA_DATABASE = "ol_warehouse_qa_raw"
LAKE = "s3://ol-data-lake-raw-qa/edxorg"
LAKE_BUCKET = "ol-data-lake-raw-qa"
LATER = datetime.now(UTC) + timedelta(days=8)
"""A clock past the default 7 days' retention of everything the tests write."""


@pytest.fixture
def aws_env(moto, monkeypatch):  # noqa: F811
    """A clean moto, and this process pointed at it in qa, as the CLI subprocesses are."""
    moto.fresh()
    use_in_this_process(moto.env(DAGSTER_ENVIRONMENT="qa"), monkeypatch)
    return moto


def store():
    from edxorg_s3_ingest.stores.iceberg_store import IcebergStore

    return IcebergStore(LAKE, QA_DATABASE)


def counted(rows: list[dict]) -> Counter:
    """Rows as a multiset, every column compared."""
    return Counter(tuple(sorted(row.items())) for row in rows)


def lake_rows(moto, name: str) -> Counter:  # noqa: F811
    """The table's rows as pyiceberg's own Glue catalog reads them."""
    return counted(moto.catalog().load_table((QA_DATABASE, name)).scan().to_arrow().to_pylist())


def of_course(rows: Counter, course: str) -> Counter:
    return Counter({row: n for row, n in rows.items() if dict(row)["_course_id"] == course})


def state_keys(moto, name: str) -> set[str]:  # noqa: F811
    listing = moto.client("s3").list_objects_v2(
        Bucket=LAKE_BUCKET, Prefix=f"edxorg/_edxorg_s3_ingest_state/{name}/"
    )
    return {f"s3://{LAKE_BUCKET}/{item['Key']}" for item in listing.get("Contents", [])}


# -- a table of small loads, written with pyiceberg as a load writes it -------------------------

COLUMNS = pa.schema(
    [
        ("name", pa.string()),
        ("_course_id", pa.string()),
        ("_source_line", pa.int64()),
        ("_dlt_load_id", pa.string()),
    ]
)


def _rows_of_load(n: int) -> list[dict]:
    """Load n's rows: three of the course `course-<n>`."""
    course, load_id = f"course-{n}", f"L{n}"
    return [
        {
            "name": f"row {n}.{i}",
            "_course_id": course,
            "_source_line": i + 2,
            "_dlt_load_id": load_id,
        }
        for i in range(3)
    ]


def small_loads(moto, name: str, loads: int, by_course: bool = False):  # noqa: F811
    """An unpartitioned edX table (the layout loads write from now on; `by_course`: the earlier
    one, partitioned by identity(_course_id)) of `loads` snapshots, each adding one course's
    rows and pointing, as a load's does, to a state object."""
    from edxorg_s3_ingest.stores.iceberg_store import (
        EDX_TABLE_PROPERTIES,
        LOAD_ID,
        OPERATION,
        STATE,
        glue_catalog,
        iceberg_schema,
        identity_spec,
    )

    catalog = glue_catalog()
    if QA_DATABASE not in {namespace[0] for namespace in catalog.list_namespaces()}:
        catalog.create_namespace(QA_DATABASE)
    table = catalog.create_table(
        (QA_DATABASE, name),
        schema=iceberg_schema(COLUMNS),
        location=f"{LAKE}/{name}",
        partition_spec=identity_spec(iceberg_schema(COLUMNS), "_course_id")
        if by_course
        else UNPARTITIONED_PARTITION_SPEC,
        properties=EDX_TABLE_PROPERTIES,
    )
    s3 = moto.client("s3")
    for n in range(loads):
        load_id = f"L{n}"
        rows = pa.Table.from_pylist(_rows_of_load(n), schema=COLUMNS)
        key = f"edxorg/_edxorg_s3_ingest_state/{name}/{load_id}.json.gz"
        state = {"loads": {f"course-{m}": f"L{m}" for m in range(n + 1)}}
        s3.put_object(Bucket=LAKE_BUCKET, Key=key, Body=gzip.compress(json.dumps(state).encode()))
        properties = {
            LOAD_ID: load_id,
            OPERATION: "replace-courses",
            STATE: f"s3://{LAKE_BUCKET}/{key}",
        }
        table.append(rows, snapshot_properties=properties)
    return table


def test_compaction_and_manifest_merge_keep_rows_and_state(aws_env):
    from edxorg_s3_ingest.stores.iceberg_store import LOAD_ID, OPERATION, STATE
    from edxorg_s3_ingest.stores.iceberg_upkeep import UpkeepPolicy, upkeep_table

    name = destination_table("teams")
    table = small_loads(aws_env, name, 6)
    before, state = lake_rows(aws_env, name), store().read_state(name).state
    last = table.current_snapshot().summary
    assert (
        len(table.inspect.files()) == 6 and len(table.current_snapshot().manifests(table.io)) == 6
    )

    # Manifests first (no file is small below a 0 MB target): six into one.
    merged = upkeep_table(store(), name, UpkeepPolicy(target_file_mb=0, max_manifests=1))
    assert (merged.files_compacted, merged.manifests_before, merged.manifests_after) == (0, 6, 1)
    assert lake_rows(aws_env, name) == before and store().read_state(name).state == state

    # Then the six small files into one; its two manifests (added, deleted) are few enough.
    report = upkeep_table(store(), name, UpkeepPolicy(max_manifests=1))
    assert (report.files_compacted, report.files_written, report.manifests_after) == (6, 1, 2)
    assert report.snapshots_expired == 0 and report.states_deleted == 0  # all within retention
    assert lake_rows(aws_env, name) == before
    table = aws_env.catalog().load_table((QA_DATABASE, name))
    assert len(table.inspect.files()) == 1
    operations = [snapshot.summary[OPERATION] for snapshot in table.snapshots()[-2:]]
    assert operations == ["merge-manifests", "compact"]
    current = table.current_snapshot().summary
    assert (current[STATE], current[LOAD_ID]) == (last[STATE], last[LOAD_ID])
    assert store().read_state(name).state == state

    # Nothing left to gain: no commit at all.
    again = upkeep_table(store(), name, UpkeepPolicy(max_manifests=1))
    assert (again.files_compacted, again.manifests_before, again.manifests_after) == (0, 2, 2)
    assert len(aws_env.catalog().load_table((QA_DATABASE, name)).snapshots()) == 8


def test_one_course_files_of_a_table_once_partitioned_by_course_are_packed(aws_env):
    """A table of the earlier layout (a file per course), moved to the unpartitioned one by a
    partition-spec change: its small one-course files become one unpartitioned file."""
    from edxorg_s3_ingest.stores.iceberg_upkeep import UpkeepPolicy, upkeep_table

    name = destination_table("teams")
    table = small_loads(aws_env, name, 5, by_course=True)
    with table.update_spec() as spec:
        spec.remove_field("_course_id")
    before, state = lake_rows(aws_env, name), store().read_state(name).state

    report = upkeep_table(store(), name, UpkeepPolicy())
    assert (report.files_compacted, report.files_written) == (5, 1)
    table = aws_env.catalog().load_table((QA_DATABASE, name))
    (file,) = [task.file for task in table.scan().plan_files()]
    assert file.spec_id == table.spec().spec_id and not table.spec().fields
    assert lake_rows(aws_env, name) == before and store().read_state(name).state == state


def test_expiry_keeps_the_current_snapshot_and_the_states_it_and_young_loads_name(aws_env):
    from edxorg_s3_ingest.stores.iceberg_upkeep import UpkeepPolicy, upkeep_table

    name = destination_table("teams")
    table = small_loads(aws_env, name, 3)
    current = table.current_snapshot()
    before = lake_rows(aws_env, name)
    # A state object of a load under way (written, its commit still to come): never named.
    pending = f"edxorg/_edxorg_s3_ingest_state/{name}/pending.json.gz"
    aws_env.client("s3").put_object(Bucket=LAKE_BUCKET, Key=pending, Body=b"...")
    assert len(state_keys(aws_env, name)) == 4

    policy = UpkeepPolicy(target_file_mb=0, max_manifests=100)  # expiry alone
    today = upkeep_table(store(), name, policy)
    assert (today.snapshots_expired, today.states_deleted) == (0, 0)

    later = upkeep_table(store(), name, policy, now=LATER)
    assert (later.snapshots_expired, later.states_deleted) == (2, 3)
    table = aws_env.catalog().load_table((QA_DATABASE, name))
    assert [snapshot.snapshot_id for snapshot in table.snapshots()] == [current.snapshot_id]
    assert state_keys(aws_env, name) == {current.summary["edxorg-s3-ingest.state"]}
    assert lake_rows(aws_env, name) == before
    assert store().read_state(name).state == {"loads": {f"course-{m}": f"L{m}" for m in range(3)}}


def test_the_rejects_table_is_compacted_and_its_loads_stay_idempotent(aws_env, tmp_path):
    """Three loads' rejects of one table (three files in its `table` partition) become one
    file; a load's rejects appended again after the upkeep are still found in the history."""
    from edxorg_s3_ingest.stores.iceberg_upkeep import UpkeepPolicy, upkeep_table
    from edxorg_s3_ingest.tables import REJECTS_TABLE

    lake = store()
    for n in range(3):
        staged = tmp_path / f"rejects-{n}.parquet"
        rows = {"table": ["teams"], "reason": ["ragged_line"], "_dlt_file_path": [f"s3://l/{n}"]}
        pq.write_table(pa.table(rows), staged)
        lake.append_rejects("teams", f"L{n}", [staged])
    before = lake_rows(aws_env, REJECTS_TABLE)

    report = upkeep_table(lake, REJECTS_TABLE, UpkeepPolicy())
    assert (report.files_compacted, report.files_written) == (3, 1)
    assert lake_rows(aws_env, REJECTS_TABLE) == before
    snapshots = len(aws_env.catalog().load_table((QA_DATABASE, REJECTS_TABLE)).snapshots())
    lake.append_rejects("teams", "L2", [staged])  # load L2 done again: nothing changes
    rejects = aws_env.catalog().load_table((QA_DATABASE, REJECTS_TABLE))
    assert len(rejects.snapshots()) == snapshots and len(rejects.inspect.files()) == 1
    assert lake_rows(aws_env, REJECTS_TABLE) == before


def test_upkeep_planned_from_a_moved_table_changes_nothing(aws_env):
    """Upkeep read the table, then a load committed: each upkeep commit is refused, and the
    table is exactly the load's."""
    from edxorg_s3_ingest.stores.iceberg_snapshots import expire_unless_moved
    from edxorg_s3_ingest.stores.iceberg_upkeep import (
        UpkeepReport,
        compact,
        merge_manifests,
    )

    name = destination_table("teams")
    small_loads(aws_env, name, 4)
    planned = store()._load(name)
    old = [snapshot.snapshot_id for snapshot in planned.snapshots()[:-1]]
    moved = aws_env.catalog().load_table((QA_DATABASE, name))
    moved.append(moved.scan().to_arrow().slice(0, 1), snapshot_properties={"by": "a load"})
    after = (lake_rows(aws_env, name), store()._load(name).metadata.snapshots)

    report = UpkeepReport(name)
    with pytest.raises(CommitFailedException):
        compact(planned, 64 << 20, report)
    with pytest.raises(CommitFailedException):
        merge_manifests(planned, 1, report)
    with pytest.raises(CommitFailedException):
        expire_unless_moved(planned, old, planned.current_snapshot().snapshot_id)
    assert (lake_rows(aws_env, name), store()._load(name).metadata.snapshots) == after


def fragment(moto, name: str, course: str) -> None:  # noqa: F811
    """The course's rows split into two files, in snapshots that keep the table's state: a
    table drifted below the target size."""
    from edxorg_s3_ingest.stores.iceberg_upkeep import carried

    table = moto.catalog().load_table((QA_DATABASE, name))
    rows = table.scan(row_filter=EqualTo("_course_id", course)).to_arrow()
    marker = carried(table, "test-fragment")
    with table.transaction() as transaction:
        transaction.delete(EqualTo("_course_id", course), snapshot_properties=marker)
        transaction.append(rows.slice(0, 2), snapshot_properties=marker)
        transaction.append(rows.slice(2), snapshot_properties=marker)


def test_after_upkeep_loads_plan_as_if_it_had_not_run(aws_env, tmp_path):
    """CLI loads (a new pod each), upkeep with every step doing work, then a no-op run reads
    nothing and a re-export replaces exactly its course."""
    from edxorg_s3_ingest.stores.iceberg_upkeep import UpkeepPolicy, upkeep_table

    s3 = aws_env.client("s3")
    upload_sample(s3, ["auth_user"])
    env = aws_env.env(DAGSTER_ENVIRONMENT="qa")
    runs = iter(range(100))

    def load() -> dict:
        pipelines = tmp_path / f"pipelines-{next(runs)}"
        args = ("--tables", "auth_user", "--bucket-url", BUCKET_URL, "--pipelines-dir")
        result = run_loads(env, *args, str(pipelines))
        assert result.returncode == 0, result.stderr[-3000:]
        return report_of(result)["tables"]["auth_user"]

    def re_export() -> None:
        _, content = current_content(s3, "auth_user", DEMO)
        lines = content.split(b"\n")
        upload(s3, "auth_user", DEMO, b"\n".join(lines[:2] + lines[3:]))

    name = destination_table("auth_user")
    load()
    re_export()
    assert load()["files_loaded"] == 1
    fragment(aws_env, name, FALL)
    before, state = lake_rows(aws_env, name), store().read_state(name).state
    assert len(state_keys(aws_env, name)) == 2
    files = len(aws_env.catalog().load_table((QA_DATABASE, name)).inspect.files())
    assert files >= 3  # the other course's, and the two halves of FALL's

    report = upkeep_table(store(), name, UpkeepPolicy(max_manifests=1), now=LATER)
    assert (report.files_compacted, report.files_written) == (files, 1)
    assert report.manifests_after <= 2  # the compaction's added and deleted files
    table = aws_env.catalog().load_table((QA_DATABASE, name))
    (current,) = table.snapshots()  # every other one expired
    assert report.snapshots_expired == 5  # 2 loads, 3 of the fragmenting; the compaction is current
    assert state_keys(aws_env, name) == {current.summary["edxorg-s3-ingest.state"]}
    assert lake_rows(aws_env, name) == before
    assert store().read_state(name).state == state

    no_op = load()
    assert (no_op["status"], no_op["files_loaded"]) == ("unchanged", 0)
    assert [
        s.snapshot_id for s in aws_env.catalog().load_table((QA_DATABASE, name)).snapshots()
    ] == [current.snapshot_id]

    re_export()
    replaced = load()
    assert (replaced["files_loaded"], replaced["courses_replaced"]) == (1, 1)
    rows = aws_env.catalog().load_table((QA_DATABASE, name)).scan().to_arrow().to_pylist()
    assert_rows_equal(rows, expected_rows(s3, "auth_user"), modified=False)
    assert of_course(counted(rows), FALL) == of_course(before, FALL)


def test_a_load_racing_with_upkeep_plans_again_and_stays_exact(aws_env, tmp_path):
    """A load pauses after planning (its state object written); upkeep compacts the table
    meanwhile; the load's commit is refused, it plans again from the upkeep's snapshot (the
    same state) and the table ends exact."""
    from edxorg_s3_ingest.stores.iceberg_upkeep import UpkeepPolicy, upkeep_table

    s3 = aws_env.client("s3")
    upload_sample(s3, ["auth_user"])
    env = aws_env.env(DAGSTER_ENVIRONMENT="qa")
    args = ["--tables", "auth_user", "--bucket-url", BUCKET_URL]
    assert run_loads(env, *args, "--pipelines-dir", str(tmp_path / "p0")).returncode == 0
    name = destination_table("auth_user")
    fragment(aws_env, name, FALL)
    fall = of_course(lake_rows(aws_env, name), FALL)
    _, content = current_content(s3, "auth_user", DEMO)
    lines = content.split(b"\n")
    upload(s3, "auth_user", DEMO, b"\n".join(lines[:2] + lines[3:]))

    pause = Pause(tmp_path / "fifos", "iceberg.state_written:1")
    load = pause.run_cli(
        [*args, "--json", "--pipelines-dir", str(tmp_path / "p1")],
        env,
        lambda: upkeep_table(store(), name, UpkeepPolicy()),
    )
    report = load.meanwhile
    assert load.paused_pid == str(load.pid)
    assert report.files_compacted == 3  # the other course's file and the two halves of FALL's
    assert load.returncode == 0, load.stderr[-3000:]
    loaded = json.loads(load.stdout)["tables"]["auth_user"]
    assert (loaded["replans"], loaded["files_loaded"]) == (1, 1)
    rows = aws_env.catalog().load_table((QA_DATABASE, name)).scan().to_arrow().to_pylist()
    assert_rows_equal(rows, expected_rows(s3, "auth_user"), modified=False)
    assert of_course(counted(rows), FALL) == fall  # untouched: the same rows and load ids
    no_op = report_of(run_loads(env, *args, "--pipelines-dir", str(tmp_path / "p2")))
    assert no_op["tables"]["auth_user"]["files_loaded"] == 0


def test_upkeep_racing_with_a_load_plans_again_from_the_loads_snapshot(aws_env, tmp_path):
    """The upkeep CLI pauses with its compaction written; a load commits meanwhile (a new
    course, a new state); the upkeep's commit is refused, it plans again, and its snapshot
    carries the load's state, not the one it first planned from."""
    from edxorg_s3_ingest.stores.iceberg_store import LOAD_ID, STATE

    name = destination_table("teams")
    small_loads(aws_env, name, 4)
    pause = Pause(tmp_path / "fifos", "upkeep.before_commit:1")
    env = {**aws_env.env(DAGSTER_ENVIRONMENT="qa"), "EDXORG_S3_INGEST_UPKEEP_MAX_MANIFESTS": "100"}
    key = f"edxorg/_edxorg_s3_ingest_state/{name}/L4.json.gz"
    state = {"loads": {"course-4": "L4"}}
    marker = {LOAD_ID: "L4", STATE: f"s3://{LAKE_BUCKET}/{key}"}

    def load_meanwhile() -> dict:
        """A load's commit while the upkeep is paused; the summary the upkeep planned from."""
        table = aws_env.catalog().load_table((QA_DATABASE, name))
        loaded = table.current_snapshot().summary
        aws_env.client("s3").put_object(
            Bucket=LAKE_BUCKET, Key=key, Body=gzip.compress(json.dumps(state).encode())
        )
        table.append(pa.Table.from_pylist(_rows_of_load(4), schema=COLUMNS), marker)
        return loaded

    upkeep = pause.run_cli(["--upkeep", "--tables", "teams", "--json"], env, load_meanwhile)
    loaded = upkeep.meanwhile
    assert upkeep.paused_pid == str(upkeep.pid)
    assert upkeep.returncode == 0, upkeep.stderr[-3000:]
    report = json.loads(upkeep.stdout)
    assert (report["replans"], report["files_compacted"]) == (1, 5)
    expected = counted([row for n in range(5) for row in _rows_of_load(n)])
    assert lake_rows(aws_env, name) == expected
    current = aws_env.catalog().load_table((QA_DATABASE, name)).current_snapshot().summary
    assert (current[LOAD_ID], current[STATE]) == ("L4", marker[STATE])
    assert current[STATE] != loaded[STATE]  # not the state the upkeep first planned from
    assert store().read_state(name).state == state


def test_kills_during_compaction_leave_the_table_exact(aws_env):
    """The upkeep CLI killed (SIGKILL) at each point of its compaction in turn (a data file
    written, the snapshot about to be committed, just committed), then run to the end: the same
    rows and state after every kill, and the last run finishes the work."""
    name = destination_table("teams")
    small_loads(aws_env, name, 4)
    before, state = lake_rows(aws_env, name), store().read_state(name).state
    env = aws_env.env(DAGSTER_ENVIRONMENT="qa")

    for point in ("upkeep.compacted_file_written", "upkeep.before_commit", "upkeep.compacted"):
        killed = run_loads({**env, CRASH_ENV: f"{point}:1"}, "--upkeep", "--tables", "teams")
        assert killed.returncode == -9, f"{point}: {killed.stderr[-3000:]}"
        assert lake_rows(aws_env, name) == before, point
        assert store().read_state(name).state == state, point
    table = aws_env.catalog().load_table((QA_DATABASE, name))
    assert len(table.inspect.files()) == 1  # the last kill came after the compaction's commit

    result = run_loads(env, "--upkeep", "--tables", "teams")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert (report["table"], report["files_compacted"]) == (name, 0)
    assert lake_rows(aws_env, name) == before and store().read_state(name).state == state


def test_the_upkeep_job_and_its_schedule(aws_env, monkeypatch):
    """qa: the schedule runs by default and each table's step upkeeps its table; dev: the
    schedule is stopped and the steps do nothing."""
    from edxorg_s3_ingest.definitions import defs
    from edxorg_s3_ingest.orchestration.upkeep import JOB, SCHEDULE

    name = destination_table("teams")
    small_loads(aws_env, name, 3)
    definitions = defs()
    schedule = definitions.resolve_schedule_def(SCHEDULE)
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 5 * * *", "UTC")
    job = definitions.resolve_job_def(JOB)
    assert len(job.nodes) == 45
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral())
    assert result.success
    assert result.output_for_node("upkeep_teams")["files_compacted"] == 3
    assert result.output_for_node("upkeep_auth_user")["note"] == "no table yet"
    assert lake_rows(aws_env, name) == counted([row for n in range(3) for row in _rows_of_load(n)])

    monkeypatch.setenv("DAGSTER_ENVIRONMENT", "dev")
    definitions = defs()
    schedule = definitions.resolve_schedule_def(SCHEDULE)
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    job = definitions.resolve_job_def(JOB)
    result = job.execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), op_selection=["upkeep_teams"]
    )
    assert result.success and result.output_for_node("upkeep_teams") == {}


def test_upkeep_in_dev_says_there_is_nothing_to_do(tmp_path):
    result = run_cli("--upkeep", "--data-dir", str(tmp_path / "data"))
    assert result.stdout == "edxorg-s3-ingest: dev keeps Parquet tables, which need no upkeep\n"
    assert not (tmp_path / "data").exists()


def test_policy_comes_from_the_environment(monkeypatch):
    from edxorg_s3_ingest.stores.iceberg_upkeep import UpkeepPolicy

    assert UpkeepPolicy.from_environment() == UpkeepPolicy(7, 64, 10)
    monkeypatch.setenv("EDXORG_S3_INGEST_UPKEEP_RETENTION_DAYS", "2.5")
    monkeypatch.setenv("EDXORG_S3_INGEST_UPKEEP_TARGET_FILE_MB", "128")
    policy = UpkeepPolicy.from_environment()
    assert (policy.retention, policy.target_file_bytes) == (timedelta(days=2.5), 128 << 20)
    monkeypatch.setenv("EDXORG_S3_INGEST_UPKEEP_MAX_MANIFESTS", "many")
    with pytest.raises(ConfigurationError, match="EDXORG_S3_INGEST_UPKEEP_MAX_MANIFESTS='many'"):
        UpkeepPolicy.from_environment()


def test_the_private_api_is_the_one_checked():
    """A new pyiceberg may move or change it: check stores/iceberg_snapshots.py, then this."""
    assert pyiceberg.__version__.startswith("0.12.")
    assert list(inspect.signature(Transaction._apply).parameters) == [
        "self",
        "updates",
        "requirements",
    ]
