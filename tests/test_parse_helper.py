"""A table's large files parsed by a helper process on a spare core (loading/parse_helper.py):
the table, its rejects and its report are exactly what the loading process alone makes."""

import threading

import pytest
from test_parallel import table_contents

from benchmarks.generate import Shape, export_bytes
from edxorg_s3_ingest.loading import parse_helper, source
from edxorg_s3_ingest.running.runner import load_tables
from edxorg_s3_ingest.settings import Settings

from landing import Landing

TABLE = "courseware_studentmodule"
ANOMALIES = (
    b"1\tragged line\n"  # too few fields: rejected
    b'2\tproblem\tblock\t7\t{"bad": "\xff\xfe"}\tNULL\tx\ty\tNULL\tna\tc\n'  # invalid UTF-8
    b"3\tproblem\tblock\t8\tcarriage\rreturn\tNULL\tx\ty\tNULL\tna\tc\n"  # a raw CR, as data
)


def landing(root) -> Landing:
    """Seven studentmodule exports of ~2.5 MB (each gets a Parquet file of its own, so a helper
    may take it): quoted and not, dense escapes, one without course_id, anomalies at the end
    of two; and a small one (shared Parquet file, never the helper's)."""
    zone = Landing(root, TABLE)
    shape = Shape(state_words=(8, 40), escapes=6)
    for number in range(7):
        quoted = number != 3
        content, _ = export_bytes(
            TABLE, f"course-{number}", 2_500_000, number, number, quoted, shape
        )
        if number in (0, 5):  # variant 0: no course_id column, 10 fields a line
            content += ANOMALIES if number == 5 else b""
        zone.write(f"MITx-{number}.01x-2026", content, 1_700_000_000 + number)
    small, _ = export_bytes(TABLE, "small", 20_000, 99, 1, True)
    zone.write("MITx-small-2026", small, 1_700_000_100)
    return zone


def load(root, zone: Landing, workers: int):
    settings = Settings.resolve(zone.bucket_url, root / "data", root / "pipelines")
    return load_tables([TABLE], settings, workers=workers)


@pytest.fixture(scope="module")
def loads(tmp_path_factory):
    """The landing zone loaded by one process alone (`--workers 1`), then with one spare core
    (`--workers 2`, one table: its load runs in this process with a helper), the helper's files
    counted."""
    root = tmp_path_factory.mktemp("helper")
    zone = landing(root / "landing")
    alone = load(root / "alone", zone, workers=1)
    parsed: list[str] = []
    real_parse = parse_helper.HelperLane._parse

    def counted(self, file, path, order):
        parsed.append(file.url)
        return real_parse(self, file, path, order)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(source, "HELPER_MIN_BYTES", 1)  # the test's 18 MB are worth a helper
        patch.setattr(parse_helper.HelperLane, "_parse", counted)
        helped = load(root / "helped", zone, workers=2)
    return root, alone, helped, parsed


def test_a_helper_parses_some_of_the_large_files(loads):
    _, alone, helped, parsed = loads
    assert alone.ok and helped.ok
    assert 1 <= len(parsed) <= 7
    assert not any("small" in url for url in parsed)


def test_the_table_and_its_rejects_are_what_one_process_makes(loads):
    root, alone, helped, _ = loads
    contents = table_contents(root / "alone" / "data")
    assert table_contents(root / "helped" / "data") == contents
    # The anomalies are there: rejects (ragged, invalid UTF-8) and the CR kept as data.
    rejects = contents["raw__edxorg__s3__rejected_rows"]
    assert len(rejects) == 2
    table = contents[f"raw__edxorg__s3__tables__{TABLE}"]
    assert ("state", "carriage\rreturn") in {pair for row in table for pair in row}


def test_the_report_is_what_one_process_reports(loads):
    _, alone, helped, _ = loads
    one, two = alone.tables[TABLE], helped.tables[TABLE]
    for field in ("files_loaded", "rows_loaded", "rows_rejected", "bytes_read", "table_rows"):
        assert getattr(two, field) == getattr(one, field), field
    assert one.rows_loaded > 10_000


def test_no_spare_core_no_helper(tmp_path, monkeypatch):
    """With every token taken (no spare core), the load reads alone and ends."""
    tokens = threading.Semaphore(0)
    lane_tokens = []
    monkeypatch.setattr(source, "HELPER_MIN_BYTES", 1)
    monkeypatch.setattr(source, "spare_cores", lambda: lane_tokens.append(tokens) or tokens)
    monkeypatch.setattr(
        parse_helper.HelperLane, "_parse", lambda *args: pytest.fail("no core was spare")
    )
    zone = landing(tmp_path / "landing")
    report = load(tmp_path / "run", zone, workers=1)
    assert report.ok and lane_tokens == [tokens]
    assert report.tables[TABLE].files_loaded == 8


def test_no_helper_process_the_load_reads_alone(tmp_path, monkeypatch, caplog):
    """A helper process that cannot start (here: no such interpreter) leaves the load to read
    its files alone, and says so."""
    monkeypatch.setattr(source, "HELPER_MIN_BYTES", 1)
    monkeypatch.setattr(parse_helper.sys, "executable", str(tmp_path / "no-such-python"))
    zone = landing(tmp_path / "landing")
    report = load(tmp_path / "run", zone, workers=2)
    assert report.ok and report.tables[TABLE].files_loaded == 8
    assert "no parse helper process" in caplog.text


def test_the_lane_ends_with_the_last_file_not_at_its_next_look(tmp_path, monkeypatch):
    """Once the scan stage has offered its last file, the lane ends as soon as the helper's
    last answer is in: with looks an hour apart (WAIT), the load still ends, with the helper's
    files in it. (Before, the lane noticed the end at its next look, and the helper process
    then took ~0.1 s to end its interpreter: both on the load's critical path.)"""
    monkeypatch.setattr(parse_helper, "WAIT", 3600.0)
    monkeypatch.setattr(source, "HELPER_MIN_BYTES", 1)
    parsed: list[str] = []
    real_parse = parse_helper.HelperLane._parse

    def counted(self, file, path, order):
        parsed.append(file.url)
        return real_parse(self, file, path, order)

    monkeypatch.setattr(parse_helper.HelperLane, "_parse", counted)
    zone = landing(tmp_path / "landing")
    reports = []
    loading = threading.Thread(
        target=lambda: reports.append(load(tmp_path / "run", zone, workers=2)), daemon=True
    )
    loading.start()
    loading.join(timeout=300)  # a hang detector: the load takes seconds, a missed end an hour
    assert not loading.is_alive(), "the load waited for the lane's next look"
    assert reports[0].ok and reports[0].tables[TABLE].files_loaded == 8
    assert len(parsed) >= 1
