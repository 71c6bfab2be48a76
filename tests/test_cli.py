"""The CLI on the sample landing zone: rows equal a plain reading of the prod files."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from edxorg_s3_ingest.state.table_state import LEDGER_COLUMNS
from edxorg_s3_ingest.tables import TABLES, destination_table

from conftest import REPO, SAMPLE, run_cli, run_json
from oracle import canonical, read_export, table_rows

SAMPLE_TABLES = sorted(path.name for path in (SAMPLE / "db_table").iterdir())


def expected_rows(table: str) -> list[dict]:
    """Each prod course's newest file (the sample has one per course), read plainly."""
    rows = []
    for course in sorted((SAMPLE / "db_table" / table / "prod").iterdir()):
        (export,) = course.glob("*.tsv")
        rows += [{**row, "_course_id": course.name} for row in read_export(export)]
    return rows


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """One full CLI run over the sample, then a second one, into a temporary data dir."""
    root = tmp_path_factory.mktemp("cli")
    args = ("--data-dir", str(root / "data"), "--pipelines-dir", str(root / "pipelines"))
    first = run_json(*args)
    files_after_first = snapshot(root / "data")
    second = run_json(*args)
    return root / "data", first, second, files_after_first


def snapshot(folder: Path) -> dict[str, int]:
    return {str(path): path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()}


def test_sample_has_at_least_six_tables_with_prod_and_edge():
    assert len(SAMPLE_TABLES) >= 6
    for table in SAMPLE_TABLES:
        courses = list((SAMPLE / "db_table" / table / "prod").iterdir())
        assert len(courses) >= 2
        assert list((SAMPLE / "db_table" / table / "edge").iterdir())


def test_first_run_reports_every_table(loaded):
    _, first, _, _ = loaded
    assert first["ok"] is True and first["failed_tables"] == []
    assert list(first["tables"]) == list(TABLES)
    for table, report in first["tables"].items():
        if table in SAMPLE_TABLES:
            courses = len(list((SAMPLE / "db_table" / table / "prod").iterdir()))
            assert report["status"] == "loaded"
            assert report["files_loaded"] == courses == report["courses_replaced"]
            assert report["rows_loaded"] == len(expected_rows(table))
            assert report["rows_rejected"] == 0
        else:
            assert report["status"] == "no_prod_files"


@pytest.mark.parametrize("table", SAMPLE_TABLES)
def test_table_equals_plain_reading_of_prod_files(loaded, table):
    data_dir, *_ = loaded
    expected = expected_rows(table)
    actual = table_rows(data_dir, destination_table(table))
    columns = {name for row in expected for name in row}
    assert canonical(actual, keep=columns) == canonical(expected)
    for row in actual:
        assert "/prod/" in row["_dlt_file_path"] and "/edge/" not in row["_dlt_file_path"]
        assert row["_dlt_file_path"].startswith("file://")
        assert row["_dlt_file_path"].split("/")[-2] == row["_course_id"]
        assert row["_dlt_load_id"]
        assert row["_dlt_file_modified"].tzinfo is not None


def test_source_line_is_the_physical_line(loaded):
    data_dir, *_ = loaded
    rows = table_rows(data_dir, destination_table("auth_user"))
    lines = sorted((row["_course_id"], row["_source_line"]) for row in rows)
    courses = sorted({row["_course_id"] for row in rows})
    assert lines == [(course, line) for course in courses for line in range(2, 6)]


def test_edge_content_never_appears(loaded):
    data_dir, *_ = loaded
    rows = table_rows(data_dir, destination_table("auth_user"))
    demo = [row for row in rows if row["_course_id"] == "edX-DemoX-Demo_Course"]
    # The edge copy of this course is the obfuscated export, whose emails are blank.
    assert sorted(row["email"] for row in demo) == [
        "audit@example.com",
        "honor@example.com",
        "staff@example.com",
        "verified@example.com",
    ]


def test_second_run_loads_nothing_and_writes_nothing(loaded):
    data_dir, _, second, files_after_first = loaded
    assert second["ok"] is True
    for report in second["tables"].values():
        assert report["files_loaded"] == 0
        assert report["rows_loaded"] == 0
        assert report["status"] in ("unchanged", "no_prod_files")
    assert snapshot(data_dir) == files_after_first


def test_loaded_packages_keep_no_copy_of_the_data(loaded):
    """Once a load is complete the store holds its rows: dlt keeps the package's state and
    schema, not its job files (a second copy of every load's data, kept forever)."""
    pipelines = loaded[0].parent / "pipelines"
    packages = list(pipelines.glob("*/load/loaded/*"))
    assert len(packages) >= len(SAMPLE_TABLES)
    assert [path for path in pipelines.glob("*/load/loaded/*/*_jobs/*") if path.is_file()] == []
    assert list(pipelines.glob("*/load/loaded/*/load_package_state.json"))


def test_loaded_files_show_where_each_course_comes_from(loaded):
    """The ledger read from each table's state (with no pipelines dir at all): one current
    file per course, its rows those the table holds for the course."""
    data_dir = loaded[0]
    args = ("--data-dir", str(data_dir), "--pipelines-dir", str(data_dir.parent / "none"))
    result = run_cli(*args, "--tables", "auth_user,teams", "--loaded-files", "--json")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert {row["table"] for row in rows} == {"auth_user", "teams"}
    for table in ("auth_user", "teams"):
        current = {row["course_id"]: row for row in rows if row["table"] == table}
        table_courses = Counter(
            row["_course_id"] for row in table_rows(data_dir, destination_table(table))
        )
        assert {course: row["rows"] for course, row in current.items()} == dict(table_courses)
        assert all(row["current"] and row["load_id"] for row in current.values())
        assert all(row["file"].endswith(".tsv") for row in current.values())
    assert not (data_dir.parent / "none").exists()
    text = run_cli(*args, "--tables", "teams", "--loaded-files").stdout.splitlines()
    assert text[0].split("\t") == ["table", *LEDGER_COLUMNS]
    assert len(text) == 1 + len([row for row in rows if row["table"] == "teams"])


def test_list_tables():
    result = run_cli("--list-tables")
    assert result.stdout.split() == list(TABLES)


def folders(tmp_path) -> tuple[str, ...]:
    return ("--data-dir", str(tmp_path / "d"), "--pipelines-dir", str(tmp_path / "p"))


def test_human_summary_names_every_table(tmp_path):
    result = run_cli("--tables", "auth_user,teams", *folders(tmp_path))
    assert "auth_user" in result.stdout and "teams" in result.stdout
    assert "2 of 2 table(s) ok (dev environment)" in result.stdout


def test_unknown_table_is_a_usage_error():
    result = run_cli("--tables", "auth_user,nope", check=False)
    assert result.returncode == 2
    assert "unknown table(s): nope" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("--tables", ""),
        ("--tables", " , "),
        ("--bucket-url", ""),
        ("--bucket-url", "s3://"),
        ("--bucket-url", "://x"),
        ("--data-dir", ""),
        ("--pipelines-dir", " "),
        ("--workers", "0"),
        ("--workers", ""),
    ],
)
def test_empty_or_malformed_flag_values_are_usage_errors(args):
    result = run_cli(*args, check=False)
    assert result.returncode == 2
    assert f"argument {args[0]}:" in result.stderr
    assert result.stdout == ""


def test_unknown_environment_is_a_clear_error():
    result = run_cli("--tables", "auth_user", env={"DAGSTER_ENVIRONMENT": "staging"}, check=False)
    assert result.returncode == 2
    assert "DAGSTER_ENVIRONMENT='staging' is not one of dev, qa, production" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_prod_files_anywhere_names_the_bucket(tmp_path):
    empty = tmp_path / "landing"
    (empty / "db_table" / "auth_user" / "edge" / "c1").mkdir(parents=True)
    (empty / "db_table" / "auth_user" / "edge" / "c1" / "x.tsv").write_text("id\n1\n")
    result = run_cli(
        "--bucket-url", str(empty), "--tables", "auth_user,teams", *folders(tmp_path), check=False
    )
    assert result.returncode == 1
    assert f"no prod files for any of the 2 requested table(s) under {empty}" in result.stderr


def test_bucket_url_from_environment_variable(tmp_path):
    landing = tmp_path / "landing" / "db_table" / "teams" / "prod" / "c9"
    landing.mkdir(parents=True)
    (landing / "abc.tsv").write_text("id\tname\n7\tseven\n")
    report = run_json(
        "--tables",
        "teams",
        *folders(tmp_path),
        env={"SOURCES__EDXORG_S3__BUCKET_URL": str(tmp_path / "landing")},
    )
    assert report["tables"]["teams"]["rows_loaded"] == 1
    rows = table_rows(tmp_path / "d", destination_table("teams"))
    assert [(row["id"], row["name"], row["_course_id"]) for row in rows] == [("7", "seven", "c9")]


def test_default_data_dir_is_dot_dlt_data_under_the_working_directory(tmp_path):
    run_cli("--tables", "teams", cwd=tmp_path, env={"PYTHONPATH": os.getcwd()})
    assert list((tmp_path / ".dlt" / "data" / destination_table("teams")).rglob("*.parquet"))
    assert (tmp_path / ".dlt" / "pipelines" / "edxorg_s3__teams").is_dir()


def test_settings_are_read_as_dlt_reads_them_without_dlt(tmp_path, monkeypatch):
    """The environment variable, then .dlt/secrets.toml, then .dlt/config.toml; dlt is not
    imported for it (a subprocess: this one has dlt imported already)."""
    (tmp_path / ".dlt").mkdir()
    (tmp_path / ".dlt" / "config.toml").write_text(
        '[sources.edxorg_s3]\nbucket_url = "from-config"\n'
        '[edxorg_s3_ingest]\ndata_dir = "config-data"\npipelines_dir = "config-pipes"\n'
    )
    (tmp_path / ".dlt" / "secrets.toml").write_text('[edxorg_s3_ingest]\ndata_dir = "secret"\n')
    code = (
        "import sys; from edxorg_s3_ingest.settings import Settings; s = Settings.resolve(); "
        "print(s.bucket_url, s.data_dir, s.pipelines_dir, 'dlt' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "EDXORG_S3_INGEST__PIPELINES_DIR": "env"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.stdout.split() == ["from-config", "secret", "env", "False"], result.stderr


def test_dlt_sends_no_usage_events_from_the_project(tmp_path):
    """.dlt/config.toml turns dlt's telemetry off (dlt's default is on): an unattended load in
    the platform reports nothing to dltHub. Outside the project folder dlt's default shows."""
    script = (
        "from dlt.common.configuration import resolve_configuration\n"
        "from dlt.common.configuration.specs import RuntimeConfiguration\n"
        "print(resolve_configuration(RuntimeConfiguration()).dlthub_telemetry)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNTIME__", "DLT_"))}
    seen = {}
    for folder in (REPO, tmp_path):
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=folder, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        seen[folder] = done.stdout.strip()
    assert seen == {REPO: "False", tmp_path: "True"}
