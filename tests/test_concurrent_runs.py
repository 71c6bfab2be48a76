"""SPEC §10: two runs of one table in two pods (two pipelines dirs) at once, in dev and in the
lake. One commits; the other finds at its commit that the table moved on, commits nothing, plans
again from the new state and ends with nothing to do. Every row is in the table exactly once,
every reject once.

The first run is stopped at a point (crashpoints.py: FIFOs, no waiting on time) while the second
runs from start to end: in dev after planning (the store's commit lock then refuses its stale
plan), in the lake inside its Iceberg transaction, after the store's own check (pyiceberg's
commit, i.e. Glue's optimistic lock, refuses it).
"""

import json
import os
import subprocess
import sys

import pytest

from edxorg_s3_ingest.tables import REJECTS_TABLE, destination_table

from conftest import REPO
from moto_server import (
    BUCKET_URL,
    moto,  # noqa: F401 - the module's moto server fixture
    report_of,
    run_loads,
    upload,
    upload_sample,
)
from oracle import canonical
from pausing import Pause
from test_crash import Case, build_landing, expected, re_export
from test_iceberg import expected_rows


def overlapping(first: list[str], second: list[str], env: dict, pause: Pause, tmp_path):
    """Runs `first` stopped at the pause point, `second` to its end, then lets `first` go on;
    returns both reports and the first run's stderr."""

    def run_second() -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "edxorg_s3_ingest.loads", *second]
        return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)

    paused = pause.run_cli(first, env, run_second)
    other = paused.meanwhile
    assert other.returncode == 0, other.stderr
    assert paused.returncode == 0, paused.stderr
    return json.loads(paused.stdout), json.loads(other.stdout), paused.stderr


def assert_lost_the_race(report: dict, table: str, stderr: str) -> None:
    """The run that committed second: nothing of its first plan, one plan more, said so."""
    assert report["status"] == "unchanged" and report["files_loaded"] == 0
    assert report["replans"] == 1
    assert f"{destination_table(table)}: another run committed to the table" in stderr
    assert "planning the table again" in stderr


def test_two_pods_load_one_dev_table_at_once(tmp_path):
    land, rejects = build_landing(tmp_path / "landing")
    base = Case(land, tmp_path / "base")
    base.run()
    rejects += re_export(land)
    pod_a, pod_b = Case(land, tmp_path / "a"), Case(land, tmp_path / "b")
    pod_b.data = pod_a.data = base.data  # one store, two working areas
    pause = Pause(tmp_path / "fifos", "plan.done:1")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": ""}
    a, b, err = overlapping(pod_a.args(), pod_b.args(), env, pause, tmp_path)
    assert b["tables"]["teams"]["files_loaded"] == 4
    assert_lost_the_race(a["tables"]["teams"], "teams", err)
    assert pod_a.capture() == expected(land, sorted(rejects, key=repr))


@pytest.mark.slow
def test_two_pods_load_one_lake_table_at_once(moto, tmp_path):  # noqa: F811
    s3 = moto.fresh()
    upload_sample(s3, ["teams"])
    env = moto.env(DAGSTER_ENVIRONMENT="qa", PYTHONDONTWRITEBYTECODE="")
    args = ["--tables", "teams", "--bucket-url", BUCKET_URL, "--json"]
    first = run_loads(env, *args[:-1], "--pipelines-dir", str(tmp_path / "first"))
    assert first.returncode == 0, first.stderr
    upload(s3, "teams", "MITx-2.01x-2026_Fall", b"id\tname\n1\ta\n2\n3\tc\n")
    pause = Pause(tmp_path / "fifos", "iceberg.before_commit:1")
    a, b, err = overlapping(
        [*args, "--pipelines-dir", str(tmp_path / "a")],
        [*args, "--pipelines-dir", str(tmp_path / "b")],
        env,
        pause,
        tmp_path,
    )
    assert b["tables"]["teams"]["files_loaded"] == 1
    assert_lost_the_race(a["tables"]["teams"], "teams", err)
    catalog = moto.catalog()
    rows = catalog.load_table(("ol_warehouse_qa_raw", destination_table("teams"))).scan()
    expected = expected_rows(s3, "teams")
    columns = {name for row in expected for name in row}
    assert canonical(rows.to_arrow().to_pylist(), keep=columns) == canonical(expected, keep=columns)
    rejects = catalog.load_table(("ol_warehouse_qa_raw", REJECTS_TABLE)).scan().to_arrow()
    assert [(r["_source_line"], r["reason"]) for r in rejects.to_pylist()] == [(3, "ragged_line")]
    assert report_of(run_loads(env, *args[:-1]))["tables"]["teams"]["files_loaded"] == 0
