"""The benchmark harness on its smoke set: every approach runs and reads the same rows.

Timing is never asserted here (CI machines vary); benchmarks/README.md has the measurements.
"""

import json
import subprocess
import sys

import pytest

from conftest import REPO

APPROACHES = ("project", "original", "duckdb", "noop", "baseline", "process_start")
RATIOS = (
    "project_over_original_wall",
    "speedup_vs_original",
    "project_over_duckdb_wall",
    "noop_over_baseline_wall",
)


def test_smoke_set_rows_equal_in_all_approaches(tmp_path):
    out = tmp_path / "smoke.json"
    command = [sys.executable, "-m", "benchmarks.run", "--set", "smoke", "--json", str(out)]
    command += ["--data-dir", str(tmp_path / "data"), "--work-dir", str(tmp_path / "work")]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr + result.stdout

    report = json.loads(out.read_text())
    rows = report["rows"]
    generated = report["input"]["rows_per_table"]
    assert sum(generated.values()) == report["input"]["rows"] > 5_000
    assert rows["project"] == rows["original"] == rows["duckdb"] == generated
    assert rows["project_report"] == generated
    assert report["rows_equal"] is True
    assert set(report["approaches"]) == set(APPROACHES)
    for name in APPROACHES:
        measured = report["approaches"][name]
        assert measured["wall_s"] > 0 and "cpu_s" in measured
        # The whole process tree's memory, never less than its largest process's.
        assert measured["peak_rss_mb"] >= measured["largest_process_rss_mb"] > 0
    for name in ("project", "original", "duckdb"):
        assert report["approaches"][name]["mb_per_s"] > 0
        assert report["approaches"][name]["rows_per_s"] > 0
    for ratio in RATIOS:
        assert report["ratios"][ratio] > 0
    assert set(report["targets"]) == {
        "speedup_vs_original",
        "project_over_duckdb_wall",
        "project_peak_rss_mb",
        "noop_over_baseline_wall",
    }
    # The table is printed for people.
    assert "DuckDB COPY" in result.stdout and "original" in result.stdout


def test_fixed_cost_run_reaches_its_milestones_in_order(tmp_path):
    """benchmarks/fixed_cost.py: a 3-table run's milestones (EDXORG_S3_INGEST_TIMELINE), each
    seen once, in the order a run reaches them, the last before the process exited."""
    from benchmarks import fixed_cost

    fixed_cost.tiny_zone(tmp_path / "zone")
    (tmp_path / "run").mkdir()
    seen = fixed_cost.one_run(tmp_path / "zone", tmp_path / "run")
    expected = [step for step in fixed_cost.STEPS if step != "worker" or step in seen]
    assert [step for step in fixed_cost.STEPS if step in seen] == expected
    times = [seen[step] for step in expected]
    assert times == sorted(times) and times[0] > 0
    lines = (tmp_path / "run" / "timeline.txt").read_text().splitlines()
    events = [line.split(" ", 2)[2].rpartition(" cpu=") for line in lines]
    assert all(float(cpu) > 0 for _, _, cpu in events)
    events = [event for event, _, _ in events]
    assert events.count("main") == 1
    assert sorted(event for event in events if event.startswith("committed ")) == [
        f"committed {table}" for table in sorted(fixed_cost.generate.TABLES)
    ]
    assert seen["cpu read"] > 0 and seen["cpu main"] > 0


TREE = """
import os, sys
shared = bytearray(100 << 20)  # touched before the fork: both processes map these pages
shared[:] = b"s" * len(shared)
if os.fork() == 0:
    own = bytearray(80 << 20)
    own[:] = b"g" * len(own)
    print("grandchild", flush=True)
    sys.stdin.read()
    os._exit(0)
own = bytearray(120 << 20)
own[:] = b"c" * len(own)
print("child", flush=True)
sys.stdin.read()
os.wait()
"""


def test_tree_memory_finds_the_whole_tree_and_counts_shared_pages_once():
    """benchmarks/measure.py: a child and the grandchild it forked, 100 MB shared between them,
    120 and 80 MB their own: ~300 MB plus two interpreters (their resident sizes add to ~400)."""
    from benchmarks.measure import TreeMemory

    child = subprocess.Popen(
        [sys.executable, "-c", TREE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert sorted([child.stdout.readline().strip(), child.stdout.readline().strip()]) == [
            "child",
            "grandchild",
        ]
        sampler = TreeMemory(child.pid)
        sampler.stop()  # the sampler's first pass runs whole before it looks at stop
    finally:
        child.stdin.close()
        child.wait(timeout=60)
    assert sampler.processes == 2
    assert 290 <= sampler.peak_mb <= 340, sampler.peak_mb


def test_a_set_stops_at_a_round_with_other_rows_and_keeps_its_outputs(tmp_path):
    """benchmarks/run.py and dagster_run.py: a round whose tables differ from what the generator
    wrote stops the set there, naming the work dir it keeps (the next round would remove it)."""
    from benchmarks import run

    files = [{"table": table, "rows": 10} for table in run.TABLES]
    right = dict.fromkeys(run.TABLES, 10)
    run.check_rows(files, {"rows": {"cli": right, "duckdb": right}}, tmp_path)
    doubled = {**right, run.TABLES[0]: 20}
    with pytest.raises(SystemExit, match=f"project loaded .* kept in {tmp_path}"):
        run.check_rows(files, {"rows": {"project": doubled, "duckdb": right}}, tmp_path)
