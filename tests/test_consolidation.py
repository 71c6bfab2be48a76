"""SPEC §5 and §7 end to end: the real CLI over a landing zone that changes step by step.

After every step each table must equal, computed here independently from the files on disk,
the rows of every course's newest non-empty prod file (by modification time, then key), and the
run report must show exactly which files were read.
"""

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from edxorg_s3_ingest.tables import REJECTS_TABLE, destination_table

from conftest import run_cli, run_json
from landing import Export, Landing
from oracle import canonical, table_rows
from pausing import Pause

TABLE = "teams"
T = 1_700_000_000
COLUMNS = ["id", "team_name", "size"]
LINEAGE = {"_course_id", "_dlt_file_path", "_dlt_file_modified", "_source_line", "_dlt_load_id"}
# Subprocesses may cache bytecode even where the developer's shell forbids it: 3x faster runs.
FAST = {"PYTHONDONTWRITEBYTECODE": ""}
C1 = "course-v1:MITx+6.002x+2012_Fall"  # `:` and `+` as in real course ids
C2 = "HarvardX-CS50-2023"
C3 = "edX-DemoX-Demo_Course"


class Harness:
    """One table's landing zone, data dir and pipelines dir, and the CLI run over them.

    `new_pods`: each run gets a new, empty pipelines dir, as each run in Kubernetes is a new pod
    (the table's state is in its folder under the data dir)."""

    def __init__(self, root: Path, table: str = TABLE, new_pods: bool = False) -> None:
        self.table = table
        self.name = destination_table(table)
        self.landing = Landing(root / "landing", table)
        self.data = root / "data"
        self.root = root
        self.runs = 0
        self.new_pods = new_pods
        self.rejects: list[tuple] = []
        """Expected rejects: (file URL, reason, line), as a multiset."""
        self.modified_when_read: dict[str, int] = {}
        """Files whose mtime changed after their rows were loaded (re-uploads): the old mtime."""

    def args(self, *extra: str) -> tuple[str, ...]:
        return (
            "--tables",
            self.table,
            "--bucket-url",
            self.landing.bucket_url,
            "--data-dir",
            str(self.data),
            "--pipelines-dir",
            str(self.pipelines),
            *extra,
        )

    @property
    def pipelines(self) -> Path:
        return self.root / (f"pipelines-{self.runs}" if self.new_pods else "pipelines")

    def run(self, *extra: str, env: dict | None = None) -> dict:
        self.runs += 1
        report = run_json(*self.args(*extra), env={**FAST, **(env or {})})
        assert report["ok"] is True, report
        return report["tables"][self.table]

    def snapshot(self) -> dict[str, int]:
        """Every Parquet file of the data dir (the tables) and when it was last written."""
        return {
            str(path): path.stat().st_mtime_ns
            for path in sorted(self.data.rglob("*.parquet"))
            if path.is_file()
        }

    def course_rows(self, *courses: str) -> list[tuple]:
        """The given courses' rows, every column with its load id: what "untouched" means (a
        pack that held them may have been rewritten without another course)."""
        rows = [row for row in self.rows() if row["_course_id"] in courses]
        return sorted(tuple(sorted(row.items(), key=str)) for row in rows)

    def rows(self) -> list[dict]:
        return table_rows(self.data, self.name)

    def columns(self) -> list[str]:
        glob = f"{self.data}/{self.name}/**/*.parquet"
        return duckdb.sql(f"select * from read_parquet('{glob}', union_by_name=true)").columns

    def reject_rows(self) -> list[dict]:
        if not (self.data / REJECTS_TABLE).exists():
            return []
        return [row for row in table_rows(self.data, REJECTS_TABLE) if row["table"] == self.table]

    def check(self) -> list[dict]:
        """The SPEC §5 invariant, and the rejects expected so far; returns the table's rows."""
        actual = self.rows()
        expected = self.landing.expected()
        data_columns = self.landing.columns()
        columns = set(self.columns())
        assert data_columns | LINEAGE <= columns
        for extra in columns - data_columns - LINEAGE:
            assert all(row[extra] is None for row in actual), extra
        keep = data_columns | {"_course_id", "_dlt_file_path", "_source_line"}
        assert canonical(actual, keep=keep) == canonical(expected)
        for row in actual:
            assert row["_dlt_load_id"]
            url = row["_dlt_file_path"]
            seconds = self.modified_when_read.get(url)
            if seconds is None:
                seconds = Path(url.removeprefix("file://")).stat().st_mtime
            assert row["_dlt_file_modified"] == datetime.fromtimestamp(seconds, UTC)
        got = sorted(
            (row["_dlt_file_path"], row["reason"], row["_source_line"])
            for row in self.reject_rows()
        )
        assert got == sorted(self.rejects, key=repr)
        return actual

    def resource_state(self) -> dict:
        """The table's state, as its folder holds it (parquet_state.py)."""
        return json.loads((self.data / self.name / ".state.json").read_text())["state"]


def counts(report: dict) -> tuple[int, int, int, int]:
    return (
        report["files_loaded"],
        report["courses_replaced"],
        report["rows_loaded"],
        report["rows_rejected"],
    )


def paths(rows: list[dict], course: str) -> set[str]:
    return {row["_dlt_file_path"] for row in rows if row["_course_id"] == course}


@pytest.mark.parametrize("new_pods", [False, True], ids=["one working area", "new pods"])
def test_each_course_holds_exactly_its_newest_export(tmp_path, new_pods):
    h = Harness(tmp_path, new_pods=new_pods)
    land = h.landing

    # 1. First load: three courses; a duplicate record, a ragged line; edge files never read.
    c1 = land.export(C1, COLUMNS, [["1", "a", "3"], ["2", "b", "4"], ["2", "b", "4"]], T)
    c2 = land.export(C2, COLUMNS, [["10", "x", "1"], ["11", "y", "NULL"]], T)
    c3_text = b"id\tteam_name\tsize\n20\tp\t5\n21\tq\n22\tr\t6\n"
    c3 = land.write(C3, c3_text, T)
    land.export(C1, COLUMNS, [["99", "edge", "0"]], T + 5000, stage="edge")
    land.export("edge-only-course", COLUMNS, [["98", "edge", "0"]], T, stage="edge")
    h.rejects.append((c3.url, "ragged_line", 3))
    report = h.run()
    assert report["files_seen"] == 3
    assert counts(report) == (3, 3, 7, 1)
    rows = h.check()
    assert sum(1 for row in rows if (row["id"], row["_course_id"]) == ("2", C1)) == 2
    assert {row["_dlt_file_path"] for row in rows} == {c1.url, c2.url, c3.url}

    # 2. Re-export of C1: a changed, a removed and an added row; the old file stays.
    untouched = h.course_rows(C2, C3)
    c1b = land.export(C1, COLUMNS, [["1", "a", "30"], ["3", "c", "NULL"]], T + 100)
    report = h.run()
    assert (report["files_seen"], counts(report)) == (4, (1, 1, 2, 0))
    rows = h.check()
    assert paths(rows, C1) == {c1b.url}
    assert c1.path.exists() and h.course_rows(C2, C3) == untouched

    # 3. A late file for C2, older than its current file: nothing is read, nothing changes.
    before = h.snapshot()
    land.export(C2, COLUMNS, [["12", "late", "9"]], T - 100)
    report = h.run()
    assert (report["files_seen"], counts(report)) == (5, (0, 0, 0, 0))
    assert report["status"] == "unchanged"
    assert h.snapshot() == before
    assert paths(h.check(), C2) == {c2.url}

    # 4. A newer edge export of C2: never listed, never read.
    land.export(C2, COLUMNS, [["13", "edge", "1"]], T + 5000, stage="edge")
    report = h.run()
    assert (report["files_seen"], counts(report)) == (5, (0, 0, 0, 0))
    assert h.snapshot() == before
    h.check()

    # 5. A zero-byte file, newest in C3: rejected as empty_file, never counts as newest.
    table_before = h.course_rows(C1, C2, C3)
    empty = land.write(C3, b"", T + 600)
    h.rejects.append((empty.url, "empty_file", None))
    report = h.run()
    assert (report["files_seen"], counts(report)) == (6, (0, 0, 0, 1))
    assert h.course_rows(C1, C2, C3) == table_before
    assert paths(h.check(), C3) == {c3.url}

    # 6. A header-only re-export of C2 empties it; the other courses are untouched.
    untouched = h.course_rows(C1, C3)
    header_only = land.export(C2, COLUMNS, [], T + 700)
    report = h.run()
    assert counts(report) == (1, 1, 0, 0)
    rows = h.check()
    assert not [row for row in rows if row["_course_id"] == C2]
    assert h.course_rows(C1, C3) == untouched
    assert header_only.path.exists()

    # 7. C3's current file re-uploaded unchanged (same key and size, newer mtime): no read.
    before = h.snapshot()
    h.modified_when_read[c3.url] = c3.path.stat().st_mtime
    land.touch(c3, T + 800)
    report = h.run()
    assert counts(report) == (0, 0, 0, 0)
    assert h.snapshot() == before
    h.check()
    state = h.resource_state()
    uploaded = datetime.fromtimestamp(T + 800, UTC).isoformat()
    assert state["courses"][C3] == [c3.url, uploaded, len(c3_text)]
    assert state["files"][c3.url][1] == state["courses"][C3][1]

    # 8. A new column in C3's re-export: it appears, null for every other course.
    rows_with_mascot = [["20", "p", "5", "owl"], ["23", "s", "7", "NULL"]]
    c3b = land.export(C3, [*COLUMNS, "mascot"], rows_with_mascot, T + 900)
    report = h.run()
    assert counts(report) == (1, 1, 2, 0)
    rows = h.check()
    assert "mascot" in h.columns()
    assert {row["mascot"] for row in rows if row["_course_id"] != C3} == {None}
    assert sorted(row["mascot"] or "-" for row in rows if row["_course_id"] == C3) == ["-", "owl"]
    assert paths(rows, C3) == {c3b.url}

    # 9. Nothing new: one listing, nothing read or written.
    before = h.snapshot()
    report = h.run()
    assert report["status"] == "unchanged" and counts(report) == (0, 0, 0, 0)
    assert h.snapshot() == before

    # 10. --full-refresh rebuilds from scratch: every course's newest file read again; the
    # rejects of files no longer newest go, the empty file is recorded again, once.
    report = h.run("--full-refresh")
    assert counts(report) == (3, 3, 4, 1)
    h.rejects = [(empty.url, "empty_file", None)]
    rows = h.check()
    assert {row["_dlt_file_path"] for row in rows} == {c1b.url, c3b.url}
    assert len({row["_dlt_load_id"] for row in rows}) == 1
    assert h.run()["files_loaded"] == 0

    # 11. The pipelines dir is a working area: without it, nothing is read again (the state
    # is the table's). Without the table's state, each course is replaced once, in place: no
    # row or reject twice.
    shutil.rmtree(h.pipelines, ignore_errors=True)
    assert h.run()["files_loaded"] == 0
    (h.data / h.name / ".state.json").unlink()
    report = h.run()
    assert counts(report) == (3, 3, 4, 1)
    h.check()
    assert h.run()["files_loaded"] == 0


def test_damaged_local_files_are_rebuilt_and_a_damaged_state_names_its_fix(tmp_path):
    """Every JSON file of the working area truncated: the next run does not notice (it empties
    the area). The table's own state truncated: the table fails with an error naming the file
    and the command that fixes it, and that command does."""
    h = Harness(tmp_path)
    h.landing.export(C1, COLUMNS, [["1", "a", "3"]], T)
    h.run()
    damaged = list(h.pipelines.rglob("*.json"))
    assert damaged
    for path in damaged:
        path.write_text(path.read_text()[:20])
    h.landing.export(C2, COLUMNS, [["2", "b", "4"]], T)
    assert counts(h.run()) == (1, 1, 1, 0)
    h.check()
    state = h.data / h.name / ".state.json"
    state.write_text(state.read_text()[:100])
    result = run_cli(*h.args("--json"), check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    error = json.loads(result.stdout)["tables"][TABLE]["error"]
    assert str(state) in error and f"edxorg-s3-ingest --tables {TABLE} --full-refresh" in error
    assert counts(h.run("--full-refresh")) == (2, 2, 2, 0)
    h.check()
    assert h.run()["status"] == "unchanged"
    # A damaged schema (dlt's, in the working area) and --full-refresh: rebuilt all the same.
    schemas = list(h.pipelines.rglob("*.schema.json"))
    assert schemas
    for path in schemas:
        path.write_text(path.read_text()[:20])
    assert counts(h.run("--full-refresh")) == (2, 2, 2, 0)
    h.check()


def test_course_gone_from_the_landing_zone_stays_until_full_refresh(tmp_path):
    """Documented limitation: a course whose every file was deleted keeps its rows (nothing
    says its data is gone); `--full-refresh` rebuilds the table without it."""
    h = Harness(tmp_path)
    gone = h.landing.export(C1, COLUMNS, [["1", "a", "3"]], T)
    h.landing.export(C2, COLUMNS, [["2", "b", "4"]], T)
    h.run()
    h.check()
    shutil.rmtree(gone.path.parent)
    assert counts(h.run()) == (0, 0, 0, 0)
    assert paths(h.rows(), C1) == {gone.url}
    assert counts(h.run("--full-refresh")) == (1, 1, 1, 0)
    assert not paths(h.check(), C1)


def test_tie_on_modification_time_loads_the_greatest_key(tmp_path):
    h = Harness(tmp_path)
    h.landing.write(C1, b"id\n1\n", T, name="aaaa.tsv")
    winner = h.landing.write(C1, b"id\n2\n", T, name="ffff.tsv")
    h.landing.write(C1, b"id\n3\n", T, name="0000.tsv")
    assert counts(h.run()) == (1, 1, 1, 0)
    assert paths(h.check(), C1) == {winner.url}


def test_zero_byte_newest_file_in_a_new_course_loads_its_older_export(tmp_path):
    h = Harness(tmp_path)
    older = h.landing.export(C1, COLUMNS, [["1", "a", "3"]], T)
    empty = h.landing.write(C1, b"", T + 10)
    h.rejects.append((empty.url, "empty_file", None))
    assert counts(h.run()) == (1, 1, 1, 1)
    assert paths(h.check(), C1) == {older.url}
    # Re-uploading the zero-byte file (newer mtime) records nothing twice.
    h.landing.touch(Export(empty.path, C1), T + 20)
    report = h.run()
    assert report["files_loaded"] == 0
    h.check()


def test_a_job_dlt_runs_again_is_staged_once(tmp_path):
    """dlt runs a job that raised again, under a new file name (its retry count): the table
    holds its rows once (Consolidator.stage keys a job by its name without the count)."""
    h = Harness(tmp_path)
    h.landing.export(C1, COLUMNS, [["1", "a", "3"], ["2", "b", "4"]], T)
    h.landing.export(C2, COLUMNS, [["3", "c", "5"]], T)
    report = h.run(env={"EDXORG_S3_INGEST_FAIL_AT": "stage.done:1"})
    assert report["rows_loaded"] == 3
    assert len(h.check()) == 3


def test_a_load_whose_staged_rows_differ_from_its_files_commits_nothing(tmp_path):
    """A staged file twice (whatever put it there) fails the table with both counts; the table
    and its state stay as the last commit left them, and the next run loads it exactly."""
    h = Harness(tmp_path)
    h.landing.export(C1, COLUMNS, [["1", "a", "3"]], T)
    h.run()
    h.landing.export(C2, COLUMNS, [["3", "c", "5"], ["4", "d", "6"]], T)
    before = h.snapshot()

    def stage_twice() -> None:
        (staged,) = h.pipelines.rglob(f"consolidation/*/{h.name}/*.parquet")
        shutil.copyfile(staged, staged.with_name("again." + staged.name))

    pause = Pause(tmp_path / "pause", "complete.start:1")
    ended = pause.run_cli(list(h.args("--json")), {**os.environ, **FAST}, stage_twice)
    assert ended.returncode != 0
    message = f"{TABLE}: the load staged 4 rows, but the files it read hold 2: nothing committed"
    assert message in ended.stdout + ended.stderr
    assert h.snapshot() == before
    h.run()
    assert len(h.check()) == 3
