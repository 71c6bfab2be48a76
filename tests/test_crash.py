"""SPEC §7: a run killed at any point, then re-run, ends with SPEC §5 holding exactly; and two
runs of one table never overlap.

The CLI is killed with SIGKILL at named points (edxorg_s3_ingest/crashpoints.py): in our code
through `crashpoint()` calls, in dlt's steps and per source file through hooks that `launch()`
installs in the child before it runs the real CLI. After each kill the plain CLI runs once more
and then: the table equals the newest export of every course, no reject is recorded twice, the
state describes exactly that (so the next run reads nothing), and nothing half-written is left.
The run after the kill reads the re-exports again if the kill came before the store's commit
counted (parquet_store.ParquetStore.commit), and nothing otherwise. Every other case is run
once with the killed run's pipelines dir kept and once without it (as a new pod starts): the
state is the store's, and nothing of the working area is needed.
"""

import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from threading import Lock

import pytest

from edxorg_s3_ingest.tables import REJECTS_TABLE, destination_table

from conftest import REPO, run_cli, run_json
from landing import Landing
from oracle import canonical, table_rows
from pausing import Pause

TABLE = "teams"
NAME = destination_table(TABLE)
T = 1_700_000_000
COLUMNS = ["id", "team_name", "size"]
FAST = {"PYTHONDONTWRITEBYTECODE": ""}
DUCKDB = Lock()

# (point, n): the n-th time the point is reached in the run that loads the re-exports.
CRASH_POINTS = [
    ("plan.done", 1),
    ("test.fetch", 1),
    ("test.fetch", 3),
    ("test.file_read", 2),
    ("test.file_read", 4),
    ("test.commit_packages.before", 1),
    ("test.commit_packages.after", 1),
    ("test.state_half_written", 2),
    ("test.state_saved", 2),
    ("test.normalize", 1),
    ("test.normalized_commit.before", 1),
    ("test.normalized_commit.after", 1),
    ("test.load", 1),
    ("stage.start", 1),
    ("stage.linked", 2),
    ("stage.done", 1),
    ("complete.start", 1),
    ("store.rejects_written", 1),
    ("complete.rejects", 1),
    ("store.journaled", 1),
    ("store.linked", 1),
    ("store.rest_written", 1),
    ("store.written", 1),
    ("store.published", 1),
    ("store.before_delete", 1),
    ("store.deleted", 1),
    ("store.state_saved", 1),
    ("complete.committed", 1),
    ("test.package_completed", 1),
]
# Kill points while a `--full-refresh` applies its load (its rejects replaced, the table not).
REFRESH_POINTS = [("complete.rejects", 1), ("store.published", 2), ("store.deleted", 1)]
# Where the table's commit counts (its journal lists what it replaces): the next run finishes
# it and reads nothing. Killed anywhere before, the next run undoes what the killed one wrote
# and reads the re-exports again.
COMMITTED = {
    "store.before_delete",
    "store.deleted",
    "store.state_saved",
    "complete.committed",
    "test.package_completed",
}


def launch() -> None:
    """The child of a crash run: dlt and source hooks, then the real CLI with its arguments.

    Runs as `python -c <this function's source>`: it must import everything it uses."""
    import functools
    import os
    import sys

    from dlt.common.storages.file_storage import FileStorage
    from dlt.common.storages.load_storage import LoadStorage
    from dlt.extract.extract import Extract
    from dlt.load.load import Load
    from dlt.pipeline.pipeline import Pipeline

    import edxorg_s3_ingest.loading.source as source
    from edxorg_s3_ingest import cli
    from edxorg_s3_ingest.crashpoints import crashpoint
    from edxorg_s3_ingest.reading.tsv import TsvFile

    def around(owner: type, name: str, before: str | None, after: str | None = None) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def hooked(*args, **kwargs):
            if before:
                crashpoint(before)
            result = original(*args, **kwargs)
            if after:
                crashpoint(after)
            return result

        setattr(owner, name, hooked)

    around(source, "fetch", "test.fetch")
    original_batches = TsvFile.batches

    def batches(self):
        yield from original_batches(self)
        crashpoint("test.file_read")

    TsvFile.batches = batches
    around(Extract, "commit_packages", "test.commit_packages.before", "test.commit_packages.after")
    around(Pipeline, "_save_state", None, "test.state_saved")
    original_save = FileStorage.save_atomic

    def save_atomic(storage_path, relative_path, data, file_type="t"):
        if relative_path == Pipeline.STATE_FILE:
            # Killed mid-write: dlt writes a temporary file, then renames it over the state.
            half = os.path.join(storage_path, "crash-test.tmp")
            with open(half, "w") as partial:
                partial.write(data[: len(data) // 2])
            crashpoint("test.state_half_written")
            os.unlink(half)
        return original_save(storage_path, relative_path, data, file_type)

    FileStorage.save_atomic = staticmethod(save_atomic)
    around(Pipeline, "normalize", "test.normalize")
    around(
        LoadStorage,
        "commit_new_load_package",
        "test.normalized_commit.before",
        "test.normalized_commit.after",
    )
    around(Pipeline, "load", "test.load")
    around(Load, "complete_package", None, "test.package_completed")
    sys.exit(cli.main(sys.argv[1:]))


LAUNCHER = f"{inspect.getsource(launch)}\nlaunch()\n"


class Case:
    """One table's landing zone, data and pipelines dirs; runs of the CLI over them."""

    def __init__(self, landing: Landing, root: Path) -> None:
        self.landing = landing
        self.data = root / "data"
        self.pipelines = root / "pipelines"

    def args(self, *extra: str, json: bool = True) -> list[str]:
        return [
            "--tables",
            TABLE,
            "--bucket-url",
            self.landing.bucket_url,
            "--data-dir",
            str(self.data),
            "--pipelines-dir",
            str(self.pipelines),
            *(["--json"] if json else []),
            *extra,
        ]

    def run(self, *extra: str) -> dict:
        report = run_json(*self.args(*extra, json=False), env=FAST)
        assert report["ok"], report
        return report["tables"][TABLE]

    def crash(self, point: str, n: int, *extra: str) -> subprocess.CompletedProcess:
        """Runs the CLI with hooks, to be killed at the n-th `point`; fails if it was not."""
        env = {**os.environ, **FAST, "EDXORG_S3_INGEST_CRASH_AT": f"{point}:{n}"}
        result = subprocess.run(
            [sys.executable, "-c", LAUNCHER, *self.args(*extra)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == -signal.SIGKILL, (
            f"{point}:{n} was not reached (exit {result.returncode}):\n"
            f"{result.stderr[-3000:]}\n{result.stdout[-2000:]}"
        )
        return result

    def resource_state(self) -> dict:
        """The table's state, as its folder holds it (parquet_state.py)."""
        return json.loads((self.data / NAME / ".state.json").read_text())["state"]

    def staging(self) -> Path:
        return self.pipelines / f"edxorg_s3__{TABLE}" / "consolidation"

    def scratch(self) -> list[str]:
        """What the table's scratch folder holds (source.scratch_root)."""
        root = self.pipelines / f"edxorg_s3__{TABLE}" / "scratch"
        return sorted(path.name for path in root.iterdir()) if root.exists() else []

    def capture(self) -> tuple[list, list]:
        """The table and the rejects, as canonical multisets."""
        with DUCKDB:
            rows = table_rows(self.data, NAME)
            rejects = (
                table_rows(self.data, REJECTS_TABLE) if (self.data / REJECTS_TABLE).exists() else []
            )
        keep = self.landing.columns() | {"_course_id", "_dlt_file_path", "_source_line"}
        return canonical(rows, keep=keep), sorted(
            (row["_dlt_file_path"], row["reason"], row["_source_line"]) for row in rejects
        )


def build_landing(root: Path) -> tuple[Landing, list[tuple]]:
    """Four courses, a ragged line; returns the landing and its expected rejects."""
    land = Landing(root, TABLE)
    land.export("c1", COLUMNS, [["1", "a", "1"], ["2", "b", "2"], ["2", "b", "2"]], T)
    land.export("c2", COLUMNS, [["3", "c", "3"], ["4", "d", "NULL"]], T)
    c3 = land.write("c3", b"id\tteam_name\tsize\n5\te\t5\n6\tf\n7\tg\t7\n", T)
    land.export("c4", COLUMNS, [["8", "h", "8"], ["9", "i", "9"]], T)
    return land, [(c3.url, "ragged_line", 3)]


def re_export(land: Landing) -> list[tuple]:
    """Re-exports of several courses (changed, emptied, new column), a new course, an empty
    file and a late file; returns the rejects they add."""
    land.export("c1", COLUMNS, [["1", "a", "10"], ["11", "k", "11"], ["12", "l", "NULL"]], T + 10)
    land.export("c2", COLUMNS, [], T + 10)
    c3 = land.write(
        "c3", b"id\tteam_name\tsize\tmascot\n5\te\t5\towl\n13\tm\n14\tn\t14\tNULL\n", T + 10
    )
    land.export("c4", COLUMNS, [["0", "late", "0"]], T - 10)
    empty = land.write("c4", b"", T + 10)
    land.export("c5", COLUMNS, [["15", "o", "15"], ["16", "p", "16"]], T + 10)
    return [(c3.url, "ragged_line", 3), (empty.url, "empty_file", None)]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """The landing zone after the re-exports, and the dirs of the load before them."""
    root = tmp_path_factory.mktemp("crash")
    land, rejects = build_landing(root / "landing")
    base = Case(land, root / "base")
    base.run()
    rejects += re_export(land)
    return land, base, sorted(rejects, key=repr)


def expected(land: Landing, rejects: list[tuple]) -> tuple[list, list]:
    return canonical(land.expected()), sorted(rejects)


def fresh(base: Case, root: Path) -> Case:
    case = Case(base.landing, root)
    shutil.copytree(base.data, case.data)
    shutil.copytree(base.pipelines, case.pipelines)
    return case


def crash_and_recover(
    base: Case, root: Path, point: str, n: int, *extra: str, fresh_pod: bool = False
) -> dict:
    """Killed at `point`, then run again (`fresh_pod`: without the killed run's pipelines
    dir)."""
    case = fresh(base, root)
    case.crash(point, n, *extra)
    scratch_after_kill = case.scratch()
    if fresh_pod:
        shutil.rmtree(case.pipelines)
    recovered = case.run()
    return {
        "recovered": recovered,
        "scratch_after_kill": scratch_after_kill,
        "scratch": case.scratch(),
        "tables": case.capture(),
        "state": case.resource_state(),
        "partial": sorted(str(path) for path in case.data.rglob("*.partial")),
        "staging": sorted(path.name for path in case.staging().iterdir())
        if case.staging().exists()
        else [],
    }


@pytest.fixture(scope="module")
def outcomes(loaded, tmp_path_factory, request):
    """The selected crash cases, two at a time (each case is two CLI processes)."""
    _, base, _ = loaded
    root = tmp_path_factory.mktemp("cases")
    tests = {
        "test_killed_run_is_finished_by_the_next": (),
        "test_killed_full_refresh_is_finished_by_the_next": ("--full-refresh",),
    }
    selected = [
        (item.callspec.params["point"], item.callspec.params["n"], tests[item.originalname])
        for item in request.session.items
        if getattr(item, "originalname", None) in tests
    ]

    def one(index_case):
        index, (point, n, extra) = index_case
        try:
            case = root / f"case{index}"
            return crash_and_recover(base, case, point, n, *extra, fresh_pod=index % 2 == 1)
        except BaseException as error:  # noqa: BLE001 - reported by the test of this point
            return error

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(one, enumerate(selected)))
    return dict(zip(selected, results, strict=True))


def expected_state(land: Landing) -> dict:
    """The incremental state that describes the table: every prod file's version, and per
    course the newest one (SPEC §7: the next run then reads nothing)."""

    def version(path: Path) -> list:
        stat = path.stat()
        modified = datetime.fromtimestamp(stat.st_mtime, UTC).isoformat()
        return [f"file://{path}", modified, stat.st_size]

    return {
        "files": {f"file://{path}": version(path) for path in land.prod_files()},
        "courses": {course: version(path) for course, path in land.newest().items()},
    }


@pytest.mark.faults
@pytest.mark.parametrize(("point", "n"), CRASH_POINTS, ids=[f"{p}:{n}" for p, n in CRASH_POINTS])
def test_killed_run_is_finished_by_the_next(loaded, outcomes, point, n):
    land, _, rejects = loaded
    outcome = outcomes[(point, n, ())]
    if isinstance(outcome, BaseException):
        raise outcome
    assert outcome["tables"] == expected(land, rejects)
    assert_clean(land, outcome)
    assert outcome["recovered"]["files_loaded"] == (0 if point in COMMITTED else 4)
    if point in ("test.fetch", "test.file_read"):  # killed while reading: its scratch is left
        assert outcome["scratch_after_kill"], "the killed run's scratch is not where expected"
    assert outcome["scratch"] == []  # ... and the next run's start wiped it


def assert_clean(land: Landing, outcome: dict) -> None:
    """The state describes the table; nothing half-written or staged is left."""
    state = expected_state(land)
    assert outcome["state"]["files"] == state["files"]
    assert outcome["state"]["courses"] == state["courses"]
    assert outcome["partial"] == []
    assert outcome["staging"] == []


@pytest.mark.faults
@pytest.mark.parametrize(
    ("point", "n"), REFRESH_POINTS, ids=[f"{p}:{n}" for p, n in REFRESH_POINTS]
)
def test_killed_full_refresh_is_finished_by_the_next(loaded, outcomes, point, n):
    """Killed while a `--full-refresh` applies its load: the next (plain) run leaves the table
    as the rebuild would: its rows, and the rejects of the newest and empty files only (the
    rebuild replaced them before the table)."""
    land, _, rejects = loaded
    outcome = outcomes[(point, n, ("--full-refresh",))]
    if isinstance(outcome, BaseException):
        raise outcome
    newest = {f"file://{path}" for path in land.newest().values()}
    rebuilt = [reject for reject in rejects if reject[0] in newest or reject[1] == "empty_file"]
    assert outcome["tables"] == expected(land, rebuilt)
    assert rebuilt != rejects
    assert_clean(land, outcome)
    assert outcome["recovered"]["files_loaded"] == (0 if point in COMMITTED else 4)


def test_at_least_twenty_kill_points():
    assert len(set(CRASH_POINTS)) >= 20


@pytest.mark.faults
def test_killed_run_then_new_exports_one_run_loads_everything(loaded, tmp_path):
    """The run after a kill reads what the killed run did not commit AND what arrived since."""
    land, base, rejects = loaded
    landing = Landing(tmp_path / "landing", TABLE)
    shutil.copytree(land.root, landing.root)
    case = Case(landing, tmp_path)
    shutil.copytree(base.data, case.data)
    shutil.copytree(base.pipelines, case.pipelines)
    case.crash("test.normalized_commit.after", 1)
    newer = landing.export("c5", COLUMNS, [["17", "q", "17"]], T + 20)
    report = case.run()
    assert report["files_loaded"] == 5 and report["courses_replaced"] == 5
    actual = case.capture()
    assert actual[0] == canonical(landing.expected())
    assert {row[1] for row in actual[0] if ("_course_id", "c5") in row} == {
        ("_dlt_file_path", newer.url)
    }


@pytest.mark.faults
def test_full_refresh_after_a_killed_run_rebuilds(loaded, tmp_path):
    """`--full-refresh` rebuilds after a killed run, and whatever happened to the table."""
    land, base, _ = loaded
    case = fresh(base, tmp_path)
    case.crash("complete.start", 1)
    # Damage that only a rebuild repairs: a Parquet file of the table gone.
    min((case.data / NAME).rglob("*.parquet")).unlink()
    report = case.run("--full-refresh")
    assert report["files_loaded"] == 5
    rows, rejects = case.capture()
    assert rows == canonical(land.expected())
    # Rebuilt from scratch: the rejects are those of the newest files and of the empty file.
    newest = {f"file://{path}" for path in land.newest().values()}
    assert all(url in newest or reason == "empty_file" for url, reason, _ in rejects)


def lock_path(case: Case) -> Path:
    return case.pipelines / f"edxorg_s3__{TABLE}.lock"


def test_run_fails_cleanly_while_another_holds_the_table(loaded, tmp_path):
    import fcntl

    land, base, rejects = loaded
    case = fresh(base, tmp_path)
    before = sorted(str(path) for path in case.data.rglob("*"))
    with open(lock_path(case), "a+") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        holder.truncate(0)
        holder.write("4242")
        holder.flush()
        result = run_cli(*case.args(), check=False)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)["tables"][TABLE]
    assert report["status"] == "failed"
    assert "teams is being loaded by another run (pid 4242" in report["error"]
    assert "Traceback" not in result.stderr
    assert sorted(str(path) for path in case.data.rglob("*")) == before
    case.run()
    assert case.capture() == expected(land, rejects)


def test_two_overlapping_runs_of_a_table(loaded, tmp_path):
    """Run A pauses mid-load (holding the table); run B starts, fails at once naming the table
    and A; A then finishes and the table is exactly right."""
    land, base, rejects = loaded
    case = fresh(base, tmp_path)
    pause = Pause(tmp_path / "fifos", "store.written:1")
    env = {**os.environ, **FAST}
    first = pause.run_cli(case.args(), env, lambda: run_cli(*case.args(), check=False))
    second = first.meanwhile
    assert first.paused_pid == str(first.pid)
    assert second.returncode == 1
    error = json.loads(second.stdout)["tables"][TABLE]["error"]
    assert f"teams is being loaded by another run (pid {first.pid}" in error
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["tables"][TABLE]["files_loaded"] == 4
    assert case.capture() == expected(land, rejects)
