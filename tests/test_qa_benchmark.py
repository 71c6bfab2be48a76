"""The qa benchmark (benchmarks/qa.py) at CI's size: every approach reads the same rows.

It starts its own moto server and runs the dev and qa CLIs, the naive pyiceberg appends and the
many-courses scenario on the smoke set. Timing is never asserted (benchmarks/README.md has the
measurements); DuckDB's iceberg reader is left out (it installs duckdb 1.4.4 from PyPI).
"""

import json
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow
TABLES = {"auth_user", "student_courseenrollment", "courseware_studentmodule"}


def test_qa_benchmark_reads_the_same_rows_in_every_approach(tmp_path):
    out = tmp_path / "qa.json"
    command = [sys.executable, "-m", "benchmarks.qa", "--quick", "--no-duckdb", "--runs", "1"]
    command += ["--json", str(out), "--data-dir", str(tmp_path / "data")]
    command += ["--work-dir", str(tmp_path / "work")]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-5000:] + result.stdout

    report = json.loads(out.read_text())
    generated = report["input"]["rows_per_table"]
    assert set(generated) == TABLES and sum(generated.values()) == report["input"]["rows"] > 5_000
    rows = report["full_load"]["rows"]
    assert rows["dev"] == rows["qa"] == rows["naive"] == rows["naive_by_course"] == generated
    approaches = report["full_load"]["approaches"]
    for name in ("dev", "qa", "naive", "naive_by_course", "qa_noop", "listing"):
        assert approaches[name]["wall_s"] > 0
        assert approaches[name]["peak_rss_mb"] >= approaches[name]["largest_process_rss_mb"] > 0
    assert approaches["qa_noop_empty"]["empty_table_seconds"] >= 0

    many = report["many_courses"]
    assert many["rows"] == generated
    first, rerun = many["runs"]
    for table in TABLES:
        # The re-exported course's rows replaced its old ones: the table grew or shrank by the
        # difference only, and the one-file copy holds the same rows.
        after = rerun["tables"][table]
        assert after["courses_replaced"] == 1 and after["added_data_files"] >= 1
        assert after["manifests"] >= 1 and after["data_files"] >= 1
        read = many["reads"]["1"][table]
        assert read["rows"] == read["compacted_rows"] == after["table_rows"]
        assert read["compacted_data_files"] == 1
        assert first["tables"][table]["table_rows"] == generated[table]
    assert set(report["targets"]) >= {"qa_over_dev_wall", "qa_peak_rss_mb", "qa_empty_table_s"}
    assert "naive append, unpartitioned" in result.stdout
