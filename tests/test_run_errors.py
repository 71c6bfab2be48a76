"""When a run goes wrong it says so once, soon, and says what to check; what it shows on a
terminal, in its summary and in `--json` agree (issue 15).

The landing zone is checked once before any table starts (landing/check.py): an endpoint that
does not answer, missing credentials, a missing bucket or a missing folder end the run with one
message. Subprocess timeouts here guard against hanging; they are not timed assertions."""

import json
import re
import subprocess
import sys

import pytest

from edxorg_s3_ingest.report import RunReport, TableReport
from edxorg_s3_ingest.running.progress import summary
from edxorg_s3_ingest.tables import TABLES

from conftest import REPO, SMALL, run_cli
from moto_server import aws_environment, free_port, refusing_aws
from terminal import run_on_terminal

PREFIX = "edxorg-s3-ingest:"


def folders(tmp_path) -> tuple[str, ...]:
    return ("--data-dir", str(tmp_path / "d"), "--pipelines-dir", str(tmp_path / "p"))


def test_an_endpoint_that_does_not_answer_ends_the_run_once_and_soon(tmp_path):
    """All 44 tables against a closed port with fake credentials: the default retry policy,
    shown on the live line, then one message naming the endpoint and what to check; no table
    is started and no summary printed."""
    endpoint = f"http://127.0.0.1:{free_port()}"
    status, screen = run_on_terminal(
        ("--bucket-url", "s3://landing/edx", *folders(tmp_path)),
        tmp_path / "stdout",
        env=aws_environment(endpoint),
        timeout=90,
    )
    assert status == 1
    # Drawn a few times a second: the later, longer waits are seen.
    assert re.search(r"S3 not answering \(EndpointConnectionError\), retry [1-9]/9", screen)
    assert screen.count(PREFIX) == 1
    (message,) = [line for line in screen.splitlines() if PREFIX in line]
    assert f"endpoint {endpoint} (AWS_ENDPOINT_URL)" in message
    assert "credentials from the environment (AWS_ACCESS_KEY_ID)" in message
    assert "bucket landing" in message and "Check the network or VPN" in message
    assert "testing" not in message  # the fake keys' value
    assert (tmp_path / "stdout").read_text() == ""
    assert not (tmp_path / "p").exists() and not (tmp_path / "d").exists()


def test_missing_credentials_are_said_once(tmp_path):
    # The whole environment, not run_cli's merge with this process's: no AWS key at all.
    env = aws_environment(AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None)
    result = subprocess.run(
        [sys.executable, "-m", "edxorg_s3_ingest.loads", "--bucket-url", "s3://landing/edx"]
        + list(folders(tmp_path)),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 1
    assert result.stderr.count("no AWS credentials found") == 1
    assert result.stderr.count(PREFIX) == 1
    assert "no credentials found (environment, AWS_PROFILE" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("NoSuchBucket", "the bucket s3://landing does not exist"),
        ("AccessDenied", "the AWS identity needs s3:ListBucket on s3://landing"),
    ],
)
def test_a_missing_or_denied_bucket_is_said_once(tmp_path, code, expected):
    with refusing_aws(s3_code=code) as endpoint:
        result = run_cli(
            "--bucket-url",
            "s3://landing/edx",
            "--json",
            *folders(tmp_path),
            env=aws_environment(endpoint),
            check=False,
        )
    assert result.returncode == 1
    assert result.stderr.count(PREFIX) == 1 and expected in result.stderr
    assert f"endpoint {endpoint}" in result.stderr
    report = json.loads(result.stdout)
    assert expected in report["error"] and report["failed_tables"] == list(TABLES)


def test_a_missing_local_landing_zone_is_one_error_and_no_ok(tmp_path):
    result = run_cli("--bucket-url", "/nonexistent", *folders(tmp_path), check=False)
    assert result.returncode == 1
    assert result.stderr == (
        "edxorg-s3-ingest: the landing zone /nonexistent does not exist. Check --bucket-url, "
        "SOURCES__EDXORG_S3__BUCKET_URL or .dlt/config.toml.\n"
    )
    assert " ok " not in result.stdout and result.stdout == ""


def test_errors_many_tables_share_are_said_once_with_their_tables():
    reports = {
        table: TableReport(table, status="failed", error=f"S3 said no listing s3://b/{table}/")
        for table in ("course", "course_structure", "teams")
    }
    reports["auth_user"] = TableReport("auth_user", status="unchanged", table_rows=5)
    reports["wiki_article"] = TableReport("wiki_article", status="failed", error="disk full")
    text = summary(RunReport("dev", reports))
    assert "FAILED 3 tables (course, course_structure, teams): S3 said no listing" in text
    assert "s3://b/<table>/" in text
    assert "FAILED wiki_article: disk full" in text
    assert text.splitlines()[-1] == "4 of 5 table(s) failed (dev environment)"


def test_live_line_summary_and_json_agree_for_every_status(tmp_path):
    """A load, then a run with nothing new, each on a terminal (its live and per-table lines,
    then the summary) and, over a copy of the same tables, with `--json`: they show the same
    status, files seen and loaded, rows loaded and rows in the table, for a table that loads
    then is unchanged, and for one without prod files."""
    # The small landing zone has no `course` export.
    shown = ("--bucket-url", str(SMALL), "--tables", "teams,course", "--workers", "1")
    statuses = []
    for _ in ("first", "again"):
        status, screen = run_on_terminal((*shown, *folders(tmp_path / "a")), tmp_path / "out")
        assert status == 0
        text = (tmp_path / "out").read_text()
        report = json.loads(run_cli(*shown, *folders(tmp_path / "b"), "--json").stdout)
        for table in ("teams", "course"):
            expected = report["tables"][table]
            expected = {
                "status": expected["status"],
                "files": expected["files_seen"],
                "loaded": expected["files_loaded"],
                "rows": expected["rows_loaded"],
                "table_rows": expected["table_rows"],
            }
            assert _terminal_line(screen, table) == _summary_row(text, table) == expected
            statuses.append((table, expected["status"]))
    assert statuses == [
        ("teams", "loaded"),
        ("course", "no_prod_files"),
        ("teams", "unchanged"),
        ("course", "no_prod_files"),
    ]
    assert report["tables"]["teams"]["files_seen"] > 0 and report["tables"]["teams"]["table_rows"]


def _terminal_line(screen: str, table: str) -> dict:
    pattern = (
        rf"\[\d+/\d+\] {table}: (?P<status>\w+), (?P<loaded>\d+) of (?P<files>\d+) files "
        rf"loaded, (?P<rows>[\d,]+) rows loaded, [\d,]+ rejected, [\d.,]+ MB, [\d.]+s"
        rf"(; (?P<table_rows>[\d,]+) rows in the table)?"
    )
    (match,) = list(re.finditer(pattern, screen))
    values = match.groupdict()
    return {
        "status": values["status"],
        "files": int(values["files"]),
        "loaded": int(values["loaded"]),
        "rows": int(values["rows"].replace(",", "")),
        "table_rows": _number(values["table_rows"]),
    }


def _summary_row(text: str, table: str) -> dict:
    (cells,) = [line.split() for line in text.splitlines() if line.split()[:1] == [table]]
    return {
        "status": cells[1],
        "files": int(cells[2]),
        "loaded": int(cells[3]),
        "rows": int(cells[4].replace(",", "")),
        "table_rows": _number(cells[9] if len(cells) > 9 else None),
    }


def _number(text: str | None) -> int | None:
    return None if text is None else int(text.replace(",", ""))


def test_a_full_refresh_on_a_terminal_shows_no_third_party_warning(tmp_path):
    args = ("--tables", "teams,auth_user", *folders(tmp_path))
    run_cli(*args)
    status, screen = run_on_terminal((*args, "--full-refresh"), tmp_path / "stdout")
    assert status == 0
    assert "drop table" not in screen.lower()
    assert "warning" not in screen.lower()
    assert "2 of 2 table(s) ok" in (tmp_path / "stdout").read_text()
