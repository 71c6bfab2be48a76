"""Tables loaded at once in worker processes (`--workers`), and the no-op run (SPEC §6, §7).

A parallel run loads exactly what a run in one process loads and reports the same; a table that
fails, and a worker process that is killed, fail only their own table; the live display shows
the tables running; a run with nothing new runs no dlt pipeline (no load package, no trace)."""

import fcntl
import json
import os
import pickle
import pty
import re
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import dlt
import pytest

from edxorg_s3_ingest.report import TableReport
from edxorg_s3_ingest.tables import REJECTS_TABLE, TABLES, destination_table

from conftest import REPO, SMALL, run_cli, run_probed
from landing import Landing
from oracle import canonical, table_rows
from pausing import Pause
from terminal import Screen

SAMPLE_TABLES = sorted(path.name for path in (SMALL / "db_table").iterdir())
# A few sample tables, one of which (teams) gets an export with a ragged line: the only table
# that writes rejects, so the only one to reach the `store.rejects_written` crash/pause point.
SOME = ["auth_user", "teams", "student_courseenrollment", "courseware_studentmodule"]
RAGGED = b"id\tteam_id\tname\n1\tt1\tAlpha\n2\tt2\n3\tt3\tGamma\n"
# What differs between two loads of the same data: when, where, and dlt's load ids.
RUN_SPECIFIC = {"seconds", "load_id", "destination"}


def folders(root: Path) -> tuple[str, ...]:
    return ("--data-dir", str(root / "data"), "--pipelines-dir", str(root / "pipelines"))


def run_report(*args: str, env: dict | None = None, status: int = 0) -> dict:
    """A CLI run's report (of the small landing zone, unless `args` name another)."""
    zone = () if "--bucket-url" in args else ("--bucket-url", str(SMALL))
    result = run_cli(*zone, *args, "--json", env=env, check=False)
    assert result.returncode == status, f"exit {result.returncode}:\n{result.stderr[-4000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-4000:]
    report = json.loads(result.stdout)
    report["stderr"] = result.stderr
    return report


def table_contents(data_dir: Path) -> dict[str, list]:
    """Every table folder of a data dir (and the rejects), as order-free multisets of rows."""
    names = [destination_table(table) for table in TABLES] + [REJECTS_TABLE]
    return {
        name: canonical(
            [
                {key: value for key, value in row.items() if key != "_dlt_load_id"}
                for row in table_rows(data_dir, name)
            ]
        )
        for name in names
        if list((data_dir / name).rglob("*.parquet"))
    }


def comparable(report: dict) -> dict:
    return {
        name: {key: value for key, value in table.items() if key not in RUN_SPECIFIC}
        for name, table in report["tables"].items()
    }


def lock_holders(pipelines: Path) -> set[str]:
    """The pids written into the lock files of the tables with exports: the processes that
    loaded them (the CLI itself finds the tables without any)."""
    return {(pipelines / f"edxorg_s3__{table}.lock").read_text().strip() for table in SAMPLE_TABLES}


def landing_with_rejects(root: Path) -> Landing:
    """SOME tables of the sample, and one more teams course whose export has a ragged line."""
    for table in SOME:
        shutil.copytree(SMALL / "db_table" / table, root / "db_table" / table)
    teams = Landing(root, "teams")
    teams.write("MITx-ragged-2026", RAGGED, 1_700_000_000)
    return teams


@pytest.fixture(scope="module")
def sample_runs(tmp_path_factory):
    """The whole sample loaded in one process, and in 2 worker processes."""
    root = tmp_path_factory.mktemp("parallel")
    one = run_report("--workers", "1", *folders(root / "one"))
    two = run_report("--workers", "2", *folders(root / "two"))
    return root, one, two


def test_parallel_run_loads_exactly_what_one_process_loads(sample_runs):
    root, one, two = sample_runs
    assert one["ok"] and two["ok"]
    contents = table_contents(root / "one" / "data")
    assert sorted(contents) == sorted(destination_table(table) for table in SAMPLE_TABLES)
    assert table_contents(root / "two" / "data") == contents


def test_parallel_run_reports_what_one_process_reports(sample_runs):
    _, one, two = sample_runs
    assert list(two["tables"]) == list(TABLES)  # the requested order, not the order of ending
    assert comparable(two) == comparable(one)
    assert two["totals"] == one["totals"]
    loaded = {name for name, table in two["tables"].items() if table["status"] == "loaded"}
    assert loaded == set(SAMPLE_TABLES)
    for name in SAMPLE_TABLES:
        assert two["tables"][name]["load_id"] and two["tables"][name]["table_rows"] > 0


def test_workers_are_processes_of_their_own(sample_runs):
    """Every table takes its lock in the process that loads it: one process for --workers 1,
    two worker processes (each loading several of the 44 tables) for --workers 2."""
    root, _, _ = sample_runs
    assert len(lock_holders(root / "one" / "pipelines")) == 1
    assert len(lock_holders(root / "two" / "pipelines")) == 2


def test_a_failing_table_fails_alone(tmp_path):
    """teams is held by "another run" (its lock): it fails; the other tables load; exit 1."""
    landing_with_rejects(tmp_path / "landing")
    args = ("--bucket-url", str(tmp_path / "landing"), "--tables", ",".join(SOME))
    pipelines = tmp_path / "run" / "pipelines"
    pipelines.mkdir(parents=True)
    with open(pipelines / "edxorg_s3__teams.lock", "a+") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        holder.write("4242")
        holder.flush()
        report = run_report(*args, "--workers", "2", *folders(tmp_path / "run"), status=1)
    assert report["failed_tables"] == ["teams"]
    assert "teams is being loaded by another run (pid 4242" in report["tables"]["teams"]["error"]
    assert not (tmp_path / "run" / "data" / destination_table("teams")).exists()
    reference = run_report(*args, "--workers", "1", *folders(tmp_path / "reference"))
    contents = table_contents(tmp_path / "reference" / "data")
    for table in SOME:
        if table != "teams":
            assert report["tables"][table]["status"] == "loaded"
            name = destination_table(table)
            assert table_contents(tmp_path / "run" / "data")[name] == contents[name]
            assert comparable(report)[table] == comparable(reference)[table]


def test_a_killed_worker_fails_only_its_table(tmp_path):
    """teams' worker is killed (SIGKILL) while it applies its load: teams fails, naming what
    happened; a new worker loads the tables left; exit 1. The next run completes teams."""
    landing_with_rejects(tmp_path / "landing")
    args = ("--bucket-url", str(tmp_path / "landing"), "--tables", ",".join(SOME))
    crash = {"EDXORG_S3_INGEST_CRASH_AT": "store.rejects_written:1"}
    report = run_report(*args, "--workers", "2", *folders(tmp_path / "run"), env=crash, status=1)
    assert report["failed_tables"] == ["teams"]
    error = report["tables"]["teams"]["error"]
    assert error.startswith("WorkerDied: the worker process loading teams (pid ")
    assert "was killed by SIGKILL (signal 9)" in error
    for table in SOME:
        if table != "teams":
            assert report["tables"][table]["status"] == "loaded"
    reference = run_report(*args, "--workers", "1", *folders(tmp_path / "reference"))
    again = run_report(*args, *folders(tmp_path / "run"))
    assert again["tables"]["teams"]["status"] in ("loaded", "unchanged")
    assert table_contents(tmp_path / "run" / "data") == table_contents(
        tmp_path / "reference" / "data"
    )
    assert again["tables"]["teams"]["table_rows"] == reference["tables"]["teams"]["table_rows"]


def test_worker_log_records_reach_stderr(tmp_path):
    """A warning logged in a worker reaches the CLI's stderr: teams' worker is paused once it
    has planned (`plan.done`; `validate`, with no prod files, never plans), a course's export is
    deleted, the worker goes on, finds the file gone and reads the table again (runner.py)."""
    landing = landing_with_rejects(tmp_path / "landing")
    pause = Pause(tmp_path / "fifos", "plan.done:1")
    (gone,) = landing.folder("MITx-ragged-2026").iterdir()
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "", **pause.env}
    args = ("--bucket-url", str(tmp_path / "landing"), "--tables", "teams,validate")
    run = [*args, "--workers", "2", "--json", *folders(tmp_path / "run")]
    paused = pause.run_cli(run, env, gone.unlink)
    assert paused.returncode == 0, paused.stderr
    err = paused.stderr
    assert f"teams: LandingChangedError: {gone} was listed but is gone" in err
    assert "planning the table again" in err
    report = json.loads(paused.stdout)["tables"]["teams"]
    assert report["status"] == "loaded" and report["rows_rejected"] == 0
    assert report["files_seen"] == len(list((SMALL / "db_table" / "teams" / "prod").iterdir()))


def test_no_op_run_runs_no_pipeline(tmp_path):
    """The second run over unchanged exports reports every table unchanged with the counts of
    the first, and writes nothing: no dlt load package, no new trace (dlt is not run)."""
    first = run_report(*folders(tmp_path))
    written = files_written(tmp_path)
    pipelines = tmp_path / "pipelines"
    before = {table: trace_and_packages(pipelines, table) for table in SAMPLE_TABLES}
    second = run_report(*folders(tmp_path))
    assert files_written(tmp_path) == written
    assert second["ok"]
    for name, table in second["tables"].items():
        loaded = first["tables"][name]
        assert table["status"] == ("unchanged" if name in SAMPLE_TABLES else "no_prod_files")
        assert table["files_seen"] == loaded["files_seen"] == table["files_skipped"]
        assert table["files_loaded"] == table["rows_loaded"] == table["files_planned"] == 0
        assert table["table_rows"] == loaded["table_rows"]
        assert table["load_id"] is None
    for table in SAMPLE_TABLES:
        assert trace_and_packages(pipelines, table) == before[table], table


def test_no_op_run_is_one_listing_in_the_cli_process(tmp_path):
    """In dev, a run with nothing new is decided in the CLI process from the listing and each
    table's state file: no loading code is imported and no worker process is started. (A table
    that a killed run left with a pending package is not such a run: test_crash.py re-runs
    with nothing new after each kill, and finds the load completed.)"""
    run_report(*folders(tmp_path))
    # Every setting given as a flag: dlt's configuration is not needed either (settings.py).
    report, imported = run_probed(None, "--bucket-url", str(SMALL), *folders(tmp_path))
    assert imported == "[]"
    statuses = {name: t["status"] for name, t in report["tables"].items()}
    assert {statuses[table] for table in SAMPLE_TABLES} == {"unchanged"}


def trace_and_packages(pipelines: Path, table: str) -> tuple:
    """The load ids dlt knows for the table: its packages (any stage) and its last run's."""
    pipeline = dlt.attach(f"edxorg_s3__{table}", pipelines_dir=str(pipelines))
    trace = pipeline.last_trace
    return (
        trace.transaction_id,
        sorted({load_id for step in trace.steps for load_id in step_load_ids(step)}),
        pipeline.list_extracted_load_packages(),
        pipeline.list_normalized_load_packages(),
        pipeline.list_completed_load_packages(),
    )


def step_load_ids(step) -> list[str]:
    return list(getattr(step.step_info, "loads_ids", None) or [])


def files_written(root: Path) -> dict[str, int]:
    """Every file of a run's folders but the lock files (each run takes each lock) and when it
    was last written."""
    return {
        str(path): path.stat().st_mtime_ns
        for path in root.rglob("*")
        if path.is_file() and path.suffix != ".lock"
    }


def test_largest_load_starts_first(tmp_path):
    """The CLI lists every dev table before loading (runner._unchanged_tables): the bytes each
    table's load reads decide the order tables go to workers, largest first, also on a first
    run (no state to guess from) and whatever order the tables were asked in."""
    from edxorg_s3_ingest.running import runner
    from edxorg_s3_ingest.running.workers import load_order
    from edxorg_s3_ingest.settings import Settings

    tables = ["teams", "auth_user", "courseware_studentmodule"]
    for table, courses in zip(tables, (1, 2, 3), strict=True):
        landing = Landing(tmp_path / "landing", table)
        for course in range(courses):
            landing.write(f"MITx-{course}", b"id\tx\n" + b"1\tyy\n" * 100, 1_700_000_000)
    settings = Settings("dev", str(tmp_path / "landing"), tmp_path / "data", tmp_path / "pipes")
    sizes: dict[str, int] = {}
    assert runner._unchanged_tables(tables, settings, sizes) == {}
    assert sizes == {table: n * (5 + 5 * 100) for table, n in zip(tables, (1, 2, 3), strict=True)}
    assert load_order(tables, settings, sizes) == list(reversed(tables))
    # Without sizes and without state (qa, production: no listing before loading): as asked.
    assert load_order(tables, settings) == tables


def test_fork_server_starts_while_the_cli_lists(tmp_path, monkeypatch):
    """Once the CLI's listings show two tables to load, the workers' fork server starts (its
    imports overlap the listings left); one table to load or none: no server."""
    from edxorg_s3_ingest.running import runner, workers
    from edxorg_s3_ingest.settings import Settings

    tables = ["teams", "auth_user"]
    landings = [Landing(tmp_path / "landing", table) for table in tables]
    for landing in landings:
        landing.write("MITx-1", b"id\n1\n", 1_700_000_000)
    settings = Settings("dev", str(tmp_path / "landing"), tmp_path / "data", tmp_path / "pipelines")
    started = []
    monkeypatch.setattr(workers, "start_fork_server", lambda env: started.append(env == "dev"))
    runner._unchanged_tables(tables, settings, {})
    assert started == [True]  # never loaded: both must load
    started.clear()
    bucket = ("--bucket-url", settings.bucket_url, "--tables", ",".join(tables))
    run_report(*bucket, *folders(tmp_path), "--workers", "1")
    runner._unchanged_tables(tables, settings, {})
    assert started == []
    landings[0].write("MITx-1", b"id\n2\n", 1_700_000_100)
    runner._unchanged_tables(tables, settings, {})
    assert started == []
    landings[1].write("MITx-1", b"id\n2\n", 1_700_000_100)
    runner._unchanged_tables(tables, settings, {})
    assert started == [True]


def run_in_session(tmp_path: Path, *args: str) -> tuple[dict, int, list[tuple[int, str]]]:
    """A CLI run (--workers 2, with its timeline) as the leader of a session of its own: its
    report, its pid, and the timeline's (pid, event) marks. Asserts that no process of the
    session is left once the CLI has exited, whatever its parent now is."""
    timeline = tmp_path / "timeline.txt"
    timeline.unlink(missing_ok=True)
    command = [sys.executable, "-m", "edxorg_s3_ingest.loads", *args, "--workers", "2", "--json"]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "", "EDXORG_S3_INGEST_TIMELINE": str(timeline)}
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-4000:]
    assert session_processes(process.pid) == []
    marks = []
    for line in timeline.read_text().splitlines():
        _, pid, event = line.split(" ", 2)
        marks.append((int(pid), event))
    return json.loads(out), process.pid, marks


def session_processes(session: int) -> list[str]:
    """The processes of a session still in the process table (zombies too)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        if int(fields[3]) == session:  # state, ppid, pgrp, session
            found.append(f"{stat.parent.name} {fields[0]}")
    return found


def test_the_cli_forks_the_fork_server_before_listing_and_its_workers_come_from_it(tmp_path):
    """The CLI starts the workers' fork server as a fork of itself before it lists (cli.
    start_workers_early): one server imports the loading code, the tables are read in worker
    processes forked from it, and none of them outlives the run."""
    tables = ("--tables", "teams,auth_user", "--bucket-url", str(SMALL), *folders(tmp_path))
    report, cli, marks = run_in_session(tmp_path, *tables)
    assert {t["status"] for t in report["tables"].values()} == {"loaded"}
    events = [event for _, event in marks]
    assert events.index("server") < events.index("listed")
    assert [pid for pid, event in marks if event == "server"] == [cli]
    (server,) = [pid for pid, event in marks if event == "preloaded"]
    readers = {pid for pid, event in marks if event.startswith("read ")}
    assert len(readers) == 2 and not readers & {cli, server}


def test_a_run_with_nothing_new_ends_the_fork_server_it_started(tmp_path):
    """A run with nothing new forked a fork server before it listed, parked: it ends it there
    (no worker needed; the server imported no loading code) and leaves no process behind; one
    table to load is loaded in the CLI process."""
    landings = [Landing(tmp_path / "landing", table) for table in ("teams", "auth_user")]
    for landing in landings:
        landing.write("MITx-1", b"id\n1\n", 1_700_000_000)
    tables = ("--tables", "teams,auth_user", "--bucket-url", landings[0].bucket_url)
    run_report(*tables, *folders(tmp_path))
    report, cli, marks = run_in_session(tmp_path, *tables, *folders(tmp_path))
    assert {t["status"] for t in report["tables"].values()} == {"unchanged"}
    assert (cli, "server") in marks
    assert not any(event.startswith(("preloaded", "worker", "read")) for _, event in marks)
    landings[0].write("MITx-1", b"id\n2\n", 1_700_000_100)
    report, cli, marks = run_in_session(tmp_path, *tables, *folders(tmp_path))
    assert report["tables"]["teams"]["status"] == "loaded"
    assert report["tables"]["auth_user"]["status"] == "unchanged"
    assert (cli, "server") in marks and (cli, "read teams") in marks
    assert not any(event == "preloaded" for _, event in marks)


def test_full_refresh_is_never_a_no_op(tmp_path):
    run_report("--tables", "teams,auth_user", *folders(tmp_path))
    report = run_report("--tables", "teams,auth_user", "--full-refresh", *folders(tmp_path))
    for table in ("teams", "auth_user"):
        assert report["tables"][table]["status"] == "loaded"
        assert report["tables"][table]["files_loaded"] == report["tables"][table]["files_seen"]


# -- the live display -------------------------------------------------------------------------


def test_terminal_shows_the_running_tables(tmp_path):
    """On a terminal the live line lists the running tables and how many are done. teams'
    worker is paused while it applies its load (a pause point, no sleeping): the line then reads
    `1 running: teams <loaded>/<planned> files ...; 3/4 done` until it goes on."""
    landing_with_rejects(tmp_path / "landing")
    pause = Pause(tmp_path / "fifos", "store.rejects_written:1")
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "", **pause.env}
    args = ("--bucket-url", str(tmp_path / "landing"), "--tables", ",".join(SOME))
    with open(tmp_path / "stdout", "w") as stdout:
        process = subprocess.Popen(
            [sys.executable, "-m", "edxorg_s3_ingest.loads", *args, "--workers", "2"]
            + list(folders(tmp_path / "run")),
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=terminal,
        )
    os.close(terminal)
    screen = Screen(controller, process)
    try:
        worker = pause.wait(process)
        line = screen.wait_for(r"1 running: teams \d+/\d+ files [\d.]+ MB; 3/4 done")
        assert worker.isdigit() and "\n" not in line
        pause.resume()
        screen.wait_for(r"\[4/4\] teams: loaded, 3 of 3 files loaded, \d+ rows loaded, 1 rejected")
        screen.read_to_end()
        assert process.wait(timeout=300) == 0
    finally:
        if process.poll() is None:
            process.kill()
        os.close(controller)
    for table in SOME:
        assert re.search(rf"\[\d/4\] {table}: loaded, ", screen.text)
    summary = (tmp_path / "stdout").read_text()
    assert "4 of 4 table(s) ok (dev environment)" in summary


# -- interfaces -------------------------------------------------------------------------------


def test_table_report_pickles_whole():
    report = TableReport("teams", files_seen=3, misplaced_files=["x (empty course id)"])
    report.start()
    copy = pickle.loads(pickle.dumps(report))
    assert copy == report and copy._started == report._started > 0
    report.finish("loaded")
    assert pickle.loads(pickle.dumps(report)) == report


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "150000 100000\n"}, 2),  # cgroup v2, a limit of 1.5 CPUs
        ({"cpu.max": "100000 100000\n"}, 1),
        ({"cpu.max": "max 100000\n"}, None),  # no limit: the CPUs it may run on
        ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3),  # v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),  # no cgroup files
    ],
)
def test_default_workers_follow_the_container_cpu_limit(tmp_path, files, expected):
    from edxorg_s3_ingest.running.runner import available_cpus

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    cpus = len(os.sched_getaffinity(0))
    assert available_cpus(tmp_path) == (cpus if expected is None else min(expected, cpus))


def test_workers_must_be_a_positive_number():
    result = run_cli("--workers", "0", check=False)
    assert result.returncode == 2
    assert "--workers: must be a whole number of at least 1, not '0'" in result.stderr


def help_text() -> str:
    return run_cli("--help").stdout


def test_help_and_readme_document_workers_alike():
    """The README's CLI section carries the usage line and the --workers help of `--help`."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## The CLI", 1)[1].split("\n## ", 1)[0]
    text = help_text()
    match = re.search(r"--workers N\s+(.*?)\n  --", text, re.S)
    assert match, text
    flat = " ".join(match.group(1).split())
    assert "the number of CPUs" in flat and "1 loads them one after the other" in flat
    assert flat in " ".join(section.split())
    assert "[--workers N]" in section


def test_a_run_whose_stderr_reader_goes_away_still_loads_every_table(tmp_path):
    """`edxorg-s3-ingest 2>&1 | head -1`: once the pipe's reader has gone, the next table's line
    cannot be written. The run goes on quietly and loads every table (it ended with a broken
    pipe mid-run, and could wait forever for a worker that outlived its SIGTERM)."""
    command = [sys.executable, "-m", "edxorg_s3_ingest.loads", "--bucket-url", str(SMALL)]
    tables = ("--tables", ",".join(SAMPLE_TABLES))
    command += [*tables, *folders(tmp_path), "--workers", "2"]
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        first = process.stderr.readline()
        process.stderr.close()
        assert process.wait(timeout=300) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert first.startswith(f"[1/{len(SAMPLE_TABLES)}] ")
    again = run_report(*tables, *folders(tmp_path))
    assert sorted(again["tables"]) == SAMPLE_TABLES
    assert {table["status"] for table in again["tables"].values()} == {"unchanged"}


def test_a_preload_module_that_fails_is_left_to_the_process_that_needs_it(tmp_path, monkeypatch):
    """running/preload.import_paused: a module that raises at import (not only an ImportError)
    is skipped and the next ones imported: the fork server lives, where it died before and
    each worker failed to start with a bare `EOFError`; the process that needs the module
    meets the error itself."""
    import importlib

    from edxorg_s3_ingest.running.preload import import_paused

    (tmp_path / "fails_at_import.py").write_text('raise RuntimeError("broken at import")\n')
    (tmp_path / "after_it.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    import_paused(["fails_at_import", "after_it"])
    assert "after_it" in sys.modules and "fails_at_import" not in sys.modules
    with pytest.raises(RuntimeError, match="broken at import"):
        importlib.import_module("fails_at_import")
