"""The README's commands and DuckDB queries work as written."""

import os
import re

import duckdb

from conftest import REPO, run_cli

README = (REPO / "README.md").read_text()


def sql_blocks() -> list[str]:
    return re.findall(r"```sql\n(.*?)```", README, flags=re.S)


def test_readme_documents_the_two_commands():
    assert "uv run edxorg-s3-ingest " in README
    assert "uv run pytest " in README
    ci = (REPO / ".ci" / "run").read_text()
    assert ci.strip().endswith("uv run pytest")


def test_readme_queries_run_against_a_sample_load(tmp_path, monkeypatch):
    run_cli(
        "--tables",
        "auth_user,student_courseenrollment",
        cwd=tmp_path,
        env={"PYTHONPATH": os.fspath(REPO)},
    )
    rejects = tmp_path / ".dlt" / "data" / "raw__edxorg__s3__rejected_rows" / "auth_user"
    rejects.mkdir(parents=True)
    duckdb.sql(
        "COPY (SELECT 'auth_user' AS \"table\", 'ragged_line' AS reason) "
        f"TO '{rejects}/example.parquet' (FORMAT parquet)"
    )
    blocks = sql_blocks()
    assert len(blocks) == 4
    monkeypatch.chdir(tmp_path)
    first, count, joined, reasons = (duckdb.sql(block).fetchall() for block in blocks)
    assert len(first) == 10
    assert count == [(20,)]
    # 5 courses of 4 enrolled users each; 4 generated learners are in two of them.
    assert joined[:4] == [("chen.wei", 2), ("dmitri_v", 2), ("esra.k", 2), ("fatima_z", 2)]
    assert len(joined) == 10 and {courses for _, courses in joined[4:]} == {1}
    assert ("ana_lima", 1) in joined
    assert reasons == [("auth_user", "ragged_line", 1)]
