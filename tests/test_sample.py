"""The sample landing zone is what upstream writes (SPEC §2), and a fresh load of it holds, for
every table, exactly its files' values and the six appended columns upstream computed."""

import hashlib

import pytest

from edxorg_s3_ingest.tables import TABLES, UPSTREAM_COLUMNS, destination_table

from conftest import SAMPLE, run_json
from oracle import export_fields, table_rows, unescape

APPENDED = 6


def prod_files(table: str):
    return sorted((SAMPLE / "db_table" / table / "prod").rglob("*.tsv"))


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    report = run_json("--data-dir", str(root / "data"), "--pipelines-dir", str(root / "p"))
    return root / "data", report


def test_a_fresh_load_materializes_all_44_tables_with_rows(loaded):
    _, report = loaded
    assert report["ok"] and list(report["tables"]) == list(TABLES)
    for table, entry in report["tables"].items():
        assert entry["status"] == "loaded" and entry["rows_loaded"] > 0, table
        assert entry["files_loaded"] == len(prod_files(table)) >= 3


def test_the_sample_has_both_quoting_eras():
    quoted = unquoted = 0
    for path in SAMPLE.rglob("*.tsv"):
        text = path.read_text(encoding="utf-8")
        quoted += '\t"' in text
        unquoted += '"' in text and '\t"' not in text
    assert quoted and unquoted


@pytest.mark.parametrize("table", TABLES)
def test_rows_carry_the_upstream_columns_and_load_exactly(loaded, table):
    data_dir, _ = loaded
    rows = {
        (r["_course_id"], r["_source_line"]): r
        for r in table_rows(data_dir, destination_table(table))
    }
    seen = 0
    for path in prod_files(table):
        course = path.parent.name
        header, *records = export_fields(path)
        own = header[:-APPENDED]
        assert header[-APPENDED:] == [name for name, _ in UPSTREAM_COLUMNS]
        # Organization and run never hold a dash; the number is what lies between.
        organization, rest = course.split("-", 1)
        number, run = rest.rsplit("-", 1)
        for line, record in enumerate(records, start=2):
            row = rows[(course, line)]
            # Upstream hashes the edX text as read (NULL and escapes as printed).
            expected_hash = hashlib.sha256("".join(record[: len(own)]).encode()).hexdigest()
            assert row["row_hash"] == record[-1] == expected_hash
            assert (
                row["extracted_course_key"],
                row["extracted_course_organization"],
                row["extracted_course_number"],
                row["extracted_course_run"],
                row["extracted_source_platform"],
            ) == (course, organization, number, run, "edxorg_prod")
            for name, value in zip(own, record, strict=False):
                assert row[name] == (None if value == "NULL" else unescape(value)), (path, name)
            seen += 1
    assert seen == len(rows)
