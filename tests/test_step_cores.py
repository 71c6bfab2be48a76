"""Spare cores for Dagster's steps (loading/spare_cores.py, orchestration/step_cores.py): cores
are lock files that processes which know nothing of each other share; a step's load takes a
free one for its parse helper, and the table it loads is exactly what one process makes."""

import os
import subprocess
import sys

import pytest
from test_dagster_steps import materialize, materialized, step
from test_parallel import table_contents
from test_parse_helper import TABLE, landing

from edxorg_s3_ingest.loading.spare_cores import MachineCores, machine_cores, spare_cores
from edxorg_s3_ingest.running.runner import available_cpus, load_tables
from edxorg_s3_ingest.settings import Settings

HOLD_A_CORE = """
import sys
from pathlib import Path
from edxorg_s3_ingest.loading.spare_cores import MachineCores
cores = MachineCores(2, Path(sys.argv[1]))
print(cores.acquire(timeout=0), flush=True)
sys.stdin.read()
"""


def test_a_core_held_by_another_process_is_free_once_it_ends(tmp_path):
    other = subprocess.Popen(
        [sys.executable, "-c", HOLD_A_CORE, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert other.stdout.readline().strip() == "True"
    cores, late = MachineCores(2, tmp_path), MachineCores(2, tmp_path)
    assert cores.acquire(timeout=0)
    assert not late.acquire(timeout=0)  # both held: one by the other process
    other.kill()  # a killed process keeps no core
    other.wait()
    assert late.acquire(timeout=0)
    assert not cores.acquire(timeout=0)
    late.release()
    assert cores.acquire(timeout=0)


def test_a_load_takes_its_own_core_then_a_spare_one_once_ready(tmp_path):
    ready = {"now": False}
    with machine_cores(2, tmp_path, ready=lambda: ready["now"]) as own:
        assert own
        tokens = spare_cores()
        assert not tokens.acquire(timeout=0)  # a core is free, but not yet to be taken
        ready["now"] = True
        assert tokens.acquire(timeout=0)
        assert not MachineCores(2, tmp_path).acquire(timeout=0)  # both are this process's
        tokens.release()
    assert spare_cores() is None
    assert MachineCores(2, tmp_path).acquire(timeout=0)  # given back at the end


def test_no_free_core_the_load_runs_without_one_and_without_a_helper(tmp_path):
    held = MachineCores(2, tmp_path)
    assert held.acquire(timeout=0) and held.acquire(timeout=0)
    with machine_cores(2, tmp_path) as own:
        assert not own
        assert spare_cores() is None
    with machine_cores(1, tmp_path) as own:  # one CPU: nothing to share, nothing spare
        assert not own
        assert spare_cores() is None


def test_no_folder_for_the_cores_the_load_runs_without_a_helper(tmp_path):
    """A filesystem where the lock files cannot be made (here a file stands where the folder
    would be) costs the helper, never the load."""
    (tmp_path / "not-a-folder").write_text("")
    with machine_cores(2, tmp_path / "not-a-folder" / "cores") as own:
        assert not own
        assert spare_cores() is None


@pytest.mark.skipif(available_cpus() < 2, reason="a spare core needs 2 CPUs")
def test_a_dagster_step_alone_parses_with_a_helper_and_loads_the_same_rows(tmp_path):
    """`dagster asset materialize` of courseware_studentmodule alone: its step has a core free
    beside its own, so its load starts a parse helper (the run's timeline says so: a helper
    process parsed some files), and the table equals one process's load of the same files."""
    zone = landing(tmp_path / "landing")
    timeline = tmp_path / "timeline.txt"
    result, run, events = materialize(
        tmp_path,
        TABLE,
        env={
            "SOURCES__EDXORG_S3__BUCKET_URL": zone.bucket_url,
            "TMPDIR": str(tmp_path),  # this test's cores, not the machine's other users'
            "EDXORG_S3_INGEST_HELPER_MIN_MB": "1",  # the test's 18 MB are worth a helper
            "EDXORG_S3_INGEST_TIMELINE": str(timeline),
        },
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert materialized(events) == {TABLE: step(TABLE)}
    marks = [line.split(" ", 2)[2].strip() for line in timeline.read_text().splitlines()]
    (done,) = [mark for mark in marks if mark.startswith("helper-done")]
    assert "helper" in marks
    assert 1 <= int(done.split()[1]) <= 7
    alone = Settings.resolve(zone.bucket_url, tmp_path / "alone", tmp_path / "pipelines-alone")
    assert load_tables([TABLE], alone, workers=1).ok
    assert table_contents(tmp_path / "data") == table_contents(tmp_path / "alone")
    cores = tmp_path / f"edxorg-s3-ingest-cores-{os.getuid()}"
    assert {"core-0", "core-1"} <= set(os.listdir(cores))  # the step's and its helper's
