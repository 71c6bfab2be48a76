"""One Dagster step per table, run as a user runs it: `dagster asset materialize` in a process of
its own, with the default (multiprocess) executor and a Dagster home of its own; what happened is
read back from that instance's event log."""

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from edxorg_s3_ingest.tables import TABLES

from conftest import REPO, SMALL

DAGSTER = Path(sys.executable).with_name("dagster")


def key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["edxorg", "tables", table])


def step(table: str) -> str:
    return f"edxorg_s3__{table}"


def materialize(tmp_path: Path, *tables: str, env: dict | None = None):
    """Runs the tables in one run; returns the finished process and the run's events."""
    home = Path(os.environ["DAGSTER_HOME"])  # conftest: a fresh one, telemetry off
    selection = ",".join(f"edxorg/tables/{table}" for table in tables)
    result = subprocess.run(
        [str(DAGSTER), "asset", "materialize", "-m", "edxorg_s3_ingest.definitions"]
        + ["--select", selection],
        cwd=tmp_path,
        env={
            **os.environ,
            "EDXORG_S3_INGEST__DATA_DIR": str(tmp_path / "data"),
            "EDXORG_S3_INGEST__PIPELINES_DIR": str(tmp_path / "pipelines"),
            **(env or {}),
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs()
        events = list(instance.all_logs(run.run_id))
    return result, run, events


def of_type(events, event_type: dg.DagsterEventType) -> list:
    return [e for e in events if e.dagster_event and e.dagster_event_type == event_type]


def step_intervals(events) -> dict[str, tuple[float, float]]:
    starts = {e.step_key: e.timestamp for e in of_type(events, dg.DagsterEventType.STEP_START)}
    ends = {
        e.step_key: e.timestamp
        for kind in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE)
        for e in of_type(events, kind)
    }
    return {name: (starts[name], ends[name]) for name in starts}


def materialized(events) -> dict[str, str]:
    """Asset table → the step that materialized it."""
    return {
        e.dagster_event.asset_key.path[-1]: e.step_key
        for e in of_type(events, dg.DagsterEventType.ASSET_MATERIALIZATION)
    }


def test_the_definitions_have_one_op_per_table():
    from edxorg_s3_ingest.definitions import defs

    assets = [asset for asset in defs().assets if isinstance(asset, dg.AssetsDefinition)]
    tables = [asset for asset in assets if asset.is_executable]
    assert {asset.key for asset in tables} == {key(table) for table in TABLES}
    assert len({asset.op.name for asset in tables}) == len(TABLES)
    for asset in tables:
        table = asset.key.path[-1]
        assert asset.op.name == step(table)
        assert asset.op.pool == "edxorg_s3_tables"
        # The checks belong to the table's op, so they run in its step.
        assert {check.name for check in asset.check_keys} == {"rejected_rows", "reconciliation"}
    studentmodule = next(a for a in tables if a.key == key("courseware_studentmodule"))
    assert "dagster-k8s/config" in studentmodule.op.tags
    assert all("dagster-k8s/config" not in a.op.tags for a in tables if a is not studentmodule)


def test_two_tables_load_side_by_side_each_checked_in_its_own_step(tmp_path):
    result, run, events = materialize(tmp_path, "teams", "auth_user")
    assert result.returncode == 0, result.stderr[-4000:]
    assert run.status == dg.DagsterRunStatus.SUCCESS
    intervals = step_intervals(events)
    assert set(intervals) == {step("teams"), step("auth_user")}
    (first_start, first_end), (second_start, second_end) = intervals.values()
    assert max(first_start, second_start) < min(first_end, second_end), intervals
    assert materialized(events) == {"teams": step("teams"), "auth_user": step("auth_user")}
    checks = {
        (e.dagster_event.event_specific_data.asset_key.path[-1], e.step_key)
        for e in of_type(events, dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        if e.dagster_event.event_specific_data.passed
    }
    assert checks == {("teams", step("teams")), ("auth_user", step("auth_user"))}
    assert len(of_type(events, dg.DagsterEventType.ASSET_CHECK_EVALUATION)) == 4


def test_a_failing_table_fails_alone_and_the_run_names_it(tmp_path):
    """teams is held by another run (its lock taken here): its step fails with the reason, the
    other table materializes, and the run's failure names teams' step."""
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    with open(pipelines / "edxorg_s3__teams.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result, run, events = materialize(tmp_path, "teams", "auth_user")
    assert result.returncode != 0
    assert run.status == dg.DagsterRunStatus.FAILURE
    assert materialized(events) == {"auth_user": step("auth_user")}
    (failure,) = of_type(events, dg.DagsterEventType.STEP_FAILURE)
    assert failure.step_key == step("teams")
    error = failure.dagster_event.event_specific_data.error
    assert "teams is being loaded by another run" in error.to_string()
    (run_failure,) = of_type(events, dg.DagsterEventType.RUN_FAILURE)
    assert step("teams") in run_failure.message


def test_a_table_without_exports_is_not_materialized(tmp_path, monkeypatch):
    """No prod file yet: the step says so (an observation) and materializes nothing, so no
    green materialization points at a table that does not exist."""
    landing = tmp_path / "landing"
    shutil.copytree(SMALL, landing)
    shutil.rmtree(landing / "db_table" / "teams" / "prod")
    monkeypatch.setenv("SOURCES__EDXORG_S3__BUCKET_URL", str(landing))
    monkeypatch.setenv("EDXORG_S3_INGEST__DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EDXORG_S3_INGEST__PIPELINES_DIR", str(tmp_path / "pipelines"))
    from edxorg_s3_ingest.definitions import defs

    job = defs().resolve_implicit_global_asset_job_def()
    instance = dg.DagsterInstance.ephemeral()
    result = job.execute_in_process(asset_selection=[key("teams")], instance=instance)
    assert result.success
    assert result.get_asset_materialization_events() == []
    assert instance.get_latest_materialization_event(key("teams")) is None
    (observation,) = result.get_asset_observation_events()
    assert observation.asset_observation_data.asset_observation.metadata["status"].value == (
        "no exports yet"
    )
    assert not (tmp_path / "data" / "raw__edxorg__s3__tables__teams").exists()


def test_checks_run_alone_from_the_tables_step(tmp_path, monkeypatch):
    monkeypatch.setenv("EDXORG_S3_INGEST__DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EDXORG_S3_INGEST__PIPELINES_DIR", str(tmp_path / "pipelines"))
    from edxorg_s3_ingest.definitions import defs

    job = defs().resolve_implicit_global_asset_job_def()
    instance = dg.DagsterInstance.ephemeral()
    assert job.execute_in_process(asset_selection=[key("teams")], instance=instance).success
    checks = {dg.AssetCheckKey(key("teams"), name) for name in ("rejected_rows", "reconciliation")}
    only_checks = job.get_subset(asset_selection=set(), asset_check_selection=checks)
    alone = only_checks.execute_in_process(instance=instance)
    assert alone.success
    assert alone.get_asset_materialization_events() == []
    evaluations = alone.get_asset_check_evaluations()
    assert {evaluation.check_name for evaluation in evaluations} == {
        "rejected_rows",
        "reconciliation",
    }
    assert all(evaluation.passed for evaluation in evaluations)


def test_loading_the_definitions_writes_nothing(tmp_path):
    """Nothing in the working directory (dlt would create `.dlt/pipelines/<name>/` for a
    pipeline built at load time) nor in the home directory."""
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", "from edxorg_s3_ingest.definitions import defs; defs()"],
        cwd=work,
        env={**os.environ, "HOME": str(home), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert list(work.iterdir()) == []
    assert list(home.iterdir()) == []


def test_an_unknown_executor_stops_loading(monkeypatch):
    from edxorg_s3_ingest.definitions import EXECUTOR_VARIABLE, executor
    from edxorg_s3_ingest.settings import ConfigurationError

    monkeypatch.setenv(EXECUTOR_VARIABLE, "k8s")
    assert executor().name == "k8s"
    monkeypatch.setenv(EXECUTOR_VARIABLE, "celery")
    with pytest.raises(ConfigurationError, match="is not one of multiprocess, k8s"):
        executor()


def test_the_definitions_are_built_once_per_process_and_environment(monkeypatch):
    """Dagster asks `defs` again each time it reconstructs the code location (six times in one
    `dagster asset materialize`): the same environment gets the same definitions, another one
    definitions built for it."""
    from edxorg_s3_ingest.definitions import defs

    monkeypatch.delenv("DAGSTER_ENVIRONMENT", raising=False)
    dev = defs()
    assert defs() is dev
    monkeypatch.setenv("DAGSTER_ENVIRONMENT", "qa")
    qa = defs()
    assert qa is not dev
    kinds = {spec.key: spec.kinds for spec in qa.resolve_all_asset_specs()}
    assert kinds[key("auth_user")] == {"dlt", "iceberg"}


STEP_PROBE = '''
def step():
    """In a process forked from the step server: whether the server had built the definitions,
    how many times this process built them when Dagster asked for them, and whether its
    garbage collector runs (paused while the server imported), over what the server built."""
    import gc

    from edxorg_s3_ingest.definitions import built, defs

    server = built.cache_info()
    defs()
    frozen = gc.get_freeze_count() > 100_000
    return server.currsize, built.cache_info().misses - server.misses, gc.isenabled(), frozen
'''


def test_step_processes_use_the_definitions_their_fork_server_built(tmp_path):
    """The multiprocess executor's fork server imports `step_preload()`; a process forked from
    it, as each table step is, finds the definitions built and builds nothing (~1 s a step), and
    collects its garbage as any process does."""
    (tmp_path / "step_probe.py").write_text(STEP_PROBE)
    script = (
        "import multiprocessing, step_probe\n"
        "from edxorg_s3_ingest.definitions import step_preload\n"
        "context = multiprocessing.get_context('forkserver')\n"
        "context.set_forkserver_preload(step_preload())\n"
        "with context.Pool(1) as pool:\n"
        "    print(pool.apply(step_probe.step))\n"
    )
    assert run_probe(tmp_path, script) == "(1, 0, True, True)"


def run_probe(folder: Path, script: str) -> str:
    """What `python -c script` prints, run in `folder` with the probe modules written there."""
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=folder,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(REPO)])},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_run_process_starts_the_step_server_before_its_run_starts(tmp_path):
    """`dagster asset materialize` starts the step server as soon as it has built the
    definitions (`definitions.runs_here`), forked with them (step_server_fork), so that the
    server's imports overlap the run's own set-up: it is started by the command's process before
    RUN_START, and gets ready in a process of its own."""
    timeline = tmp_path / "timeline.txt"
    result, run, events = materialize(
        tmp_path, "teams", env={"EDXORG_S3_INGEST_TIMELINE": str(timeline)}
    )
    assert result.returncode == 0, result.stderr[-4000:]
    marks = {}
    for line in timeline.read_text().splitlines():
        at, pid, mark = line.split(" ", 2)
        marks.setdefault(mark, (float(at), int(pid)))
    started, ready = marks["step-server started"], marks["step-server ready"]
    (run_start,) = of_type(events, dg.DagsterEventType.RUN_START)
    assert marks["definitions built"][0] < started[0] < run_start.timestamp
    assert started[1] == marks["definitions built"][1] != ready[1]
    assert marks["read teams"][1] not in (started[1], ready[1])  # a step forked from it


FORKED_SERVER = """
import multiprocessing, signal, sys
import run_only  # in this process only: no preload module imports it

from edxorg_s3_ingest.orchestration import step_server_fork

signal.signal(signal.SIGINT, lambda *_: None)  # as dagster's command has its own
assert step_server_fork.start(["server_probe"])
with multiprocessing.get_context("forkserver").Pool(1) as pool:
    print(pool.apply(__import__("server_probe").step))
"""

SERVER_PROBE = """
import os, signal, sys

from edxorg_s3_ingest.orchestration.step_server_fork import serving

SERVER = os.getpid()


def step():
    return (
        "run_only" in sys.modules,
        serving(),
        os.getpid() != SERVER,
        signal.getsignal(signal.SIGINT) is signal.default_int_handler,
    )
"""


def test_the_step_server_is_a_fork_of_the_process_that_starts_it(tmp_path):
    """`step_server_fork.start`: the server is forked from the run's process, so it starts with
    what that process imported (dagster, the instance's storage) and imports only the rest; a
    step forked from it finds both, knows it runs under the server (so it never starts one
    itself), and has a new interpreter's interrupt handler, not the one of the run's process."""
    (tmp_path / "run_only.py").write_text("")
    (tmp_path / "server_probe.py").write_text(SERVER_PROBE)
    assert run_probe(tmp_path, FORKED_SERVER) == "(True, True, True, True)"


def test_with_other_threads_running_the_step_server_is_not_forked():
    """A fork copies whatever lock another thread holds at that instant, held for good: with a
    second thread alive, `start` forks nothing and says so (the caller starts a new
    interpreter, as multiprocessing does)."""
    import threading

    from edxorg_s3_ingest.orchestration import step_server_fork

    done = threading.Event()
    other = threading.Thread(target=done.wait)
    other.start()
    try:
        assert step_server_fork.start(["edxorg_s3_ingest.step_server"]) is False
    finally:
        done.set()
        other.join()
    assert not step_server_fork.serving()


TWO_MOMENTS = """
import multiprocessing, threading
from multiprocessing import forkserver
import run_only  # in this process only: no preload module imports it

from edxorg_s3_ingest import definitions

definitions.step_preload = lambda: ["server_probe"]  # the server's imports are not the point
done = threading.Event()
other = threading.Thread(target=done.wait)
if OTHER_THREAD:  # set by the test
    other.start()
definitions.serve_steps(built=False)
early = forkserver._forkserver._forkserver_pid
done.set()
definitions.serve_steps(built=True)
late = forkserver._forkserver._forkserver_pid
with multiprocessing.get_context("forkserver").Pool(1) as pool:
    in_step = pool.apply(__import__("server_probe").step)
print(early is not None, late == early, in_step[0])
"""


@pytest.mark.parametrize(
    ("other_thread", "printed"),
    [(False, "False False True"), (True, "True True False")],
    ids=["forked-once-built", "new-interpreter-early"],
)
def test_the_step_server_starts_once_at_the_first_moment_that_can_start_it(
    tmp_path, other_thread, printed
):
    """`definitions.serve_steps`, called before the definitions are built and once they are:
    where the run's process can fork, nothing starts early and the server is forked once built
    (its steps find what the run's process imported); with another thread running it starts
    early as a new interpreter (nothing of the run's process in its steps), and the second
    call finds it running."""
    (tmp_path / "run_only.py").write_text("")
    (tmp_path / "server_probe.py").write_text(SERVER_PROBE)
    assert run_probe(tmp_path, f"OTHER_THREAD = {other_thread}\n{TWO_MOMENTS}") == printed


INSTANCE_MODULES = """
import sys
from edxorg_s3_ingest.step_server import import_instance_modules
print("sqlalchemy" in sys.modules, sorted(set(import_instance_modules())))
"""


def test_the_step_server_imports_the_instance_storage_without_opening_it():
    """What each step imported to open the run's instance (~0.6 s a step): imported once in the
    server, from DAGSTER_HOME's configuration, which is never opened there."""
    home = Path(os.environ["DAGSTER_HOME"])  # conftest: a fresh one, nothing in it yet
    before = sorted(path.name for path in home.iterdir())
    result = subprocess.run(
        [sys.executable, "-c", INSTANCE_MODULES],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    imported, modules = result.stdout.strip().split(" ", 1)
    assert imported == "True"
    assert "dagster._core.storage.sqlite_storage" in modules
    assert sorted(path.name for path in home.iterdir()) == before


def test_a_landing_zone_without_any_table_fails_the_step(tmp_path, monkeypatch):
    """A wrong prefix (a folder with no `db_table/` of edX tables): the step fails and says to
    check the bucket URL, rather than report the table as not exported yet."""
    landing = tmp_path / "landing"
    (landing / "db_table" / "not_an_edx_table" / "prod").mkdir(parents=True)
    monkeypatch.setenv("SOURCES__EDXORG_S3__BUCKET_URL", str(landing))
    monkeypatch.setenv("EDXORG_S3_INGEST__DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EDXORG_S3_INGEST__PIPELINES_DIR", str(tmp_path / "pipelines"))
    from edxorg_s3_ingest.definitions import defs

    job = defs().resolve_implicit_global_asset_job_def()
    instance = dg.DagsterInstance.ephemeral()
    result = job.execute_in_process(
        asset_selection=[key("teams")], instance=instance, raise_on_error=False
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    message = failure.step_failure_data.error.to_string()
    assert f"no edX table folder under {landing}/db_table/" in message
    assert "is the bucket URL or prefix right?" in message
    assert result.get_asset_observation_events() == []
