"""Hostile paths (SPEC §2, §4, §8): course folders and table folders named with spaces, unicode,
`.`, `..`, quotes, `%`, `=`, control characters, bytes that are not UTF-8, and lengths up to and
past what a filesystem or the lake allows.

Every course folder is either loaded with its exact name in `_course_id`, or reported in
`misplaced_files` with the reason; nothing is written outside the data dir (every file under it
resolves inside it) and the lake's object keys stay within S3's 1,024 bytes. Folders under
`db_table/` that are not known tables are never read, and the run says it ignored them.
"""

import os
from pathlib import Path

import pytest

from edxorg_s3_ingest.tables import destination_table

from conftest import run_cli
from landing import Landing, tsv
from moto_server import (
    BUCKET_URL,
    LANDING_BUCKET,
    LANDING_PREFIX,
    moto,  # noqa: F401 - the module's moto server fixture
    report_of,
    run_loads,
)
from oracle import canonical, table_rows
from reliability import record
from test_iceberg import expected_rows

pytestmark = pytest.mark.faults

TABLE = "teams"
NAME = destination_table(TABLE)
T = 1_700_000_000
COLUMNS = ["id", "name"]
# Course folder names a local filesystem can hold: each must load under exactly this id.
LOCAL_COURSES = [
    "course-v1:MITx+6.002x+2012_Fall",
    "with spaces",
    " leading and trailing ",
    "ünïcødé-课程-😀",
    "e\u0301-decomposed",
    "\u00e9-composed",
    "quote'single\"double`back",
    "percent%2F%2e%2e%25",
    "key=value",
    ".hidden",
    "...",
    "..dots..",
    "back\\slash",
    "tab\there",
    "new\nline",
    "semi;colon&amp|pipe$HOME*?",
    "L" * 255,
    "é" * 127,
]
# S3 keys: course ids a filesystem cannot hold, and path syntax.
S3_LOADED = [
    "with spaces",
    "ünïcødé-课程",
    "quote'\"",
    "%2e%2e",
    "..%2F..",
    "a=b",
    "L" * 255,
    "é" * 127,
    "x" * 200 + "€" * 18,
]
S3_REFUSED = {
    "..": "not a course id: the folder name '..'",
    ".": "not a course id: the folder name '.'",
    "": "not a course id: the folder name ''",
    "L" * 256: "not a course id: 256 bytes, over 255",
    "M" * 600: "not a course id: 600 bytes, over 255",
    "é" * 300: "not a course id: 600 bytes, over 255",
}
UNKNOWN_TABLES = ["Teams", "teams_v2", "te ams", "..%2Fteams"]


def inside(root: Path) -> list[str]:
    """Every path under `root` that does not resolve inside it (or is a link)."""
    outside = []
    real = os.path.realpath(root)
    for folder, names, files in os.walk(root):
        for name in names + files:
            path = os.path.join(folder, name)
            resolved = os.path.realpath(path)
            if os.path.islink(path) or not resolved.startswith(real + os.sep):
                outside.append(path)
    return outside


def export(course: str, number: int) -> bytes:
    return tsv(COLUMNS, [[str(number), f"row {number}"], [str(number + 1000), "NULL"]])


def test_hostile_local_course_folders(tmp_path, request):
    land = Landing(tmp_path / "landing", TABLE)
    for number, course in enumerate(LOCAL_COURSES):
        land.write(course, export(course, number), T + number)
    # A folder name that is not UTF-8, and a nested folder.
    bad = os.fsencode(land.folder("x").parent) + b"/bad\xff\xfe"
    os.makedirs(bad)
    with open(bad + b"/f.tsv", "wb") as handle:
        handle.write(export("bad", 99))
    nested = land.folder("outer") / "inner"
    nested.mkdir(parents=True)
    (nested / "f.tsv").write_bytes(export("nested", 98))
    for name in UNKNOWN_TABLES[:3]:
        folder = land.root / "db_table" / name / "prod" / "c"
        folder.mkdir(parents=True)
        (folder / "f.tsv").write_bytes(export("unknown", 97))
    data = tmp_path / "data"
    args = ["--tables", TABLE, "--bucket-url", land.bucket_url, "--data-dir", str(data)]
    args += ["--pipelines-dir", str(tmp_path / "pipelines"), "--json"]
    result = run_cli(*args)
    report = report_of(result)["tables"][TABLE]
    assert report["status"] == "loaded" and report["files_loaded"] == len(LOCAL_COURSES)
    misplaced = report["misplaced_files"]
    assert len(misplaced) == 2
    assert any("bad" in entry and "not valid UTF-8" in entry for entry in misplaced)
    assert any("outer/inner/f.tsv" in entry and "nested folder" in entry for entry in misplaced)
    rows = table_rows(data, NAME)
    assert sorted({row["_course_id"] for row in rows}) == sorted(LOCAL_COURSES)
    expected = [row for row in land.expected() if row["_course_id"] in LOCAL_COURSES]
    keep = {*COLUMNS, "_course_id", "_dlt_file_path", "_source_line"}
    assert canonical(rows, keep=keep) == canonical(expected, keep=keep)
    assert inside(data) == []
    assert "ignored 3 unknown table folder(s)" in result.stderr
    assert all(repr(name) in result.stderr for name in UNKNOWN_TABLES[:3])
    # In the --json report too once RunReport has the field (the diff for report.py).
    unknown = report_of(result).get("unknown_table_folders", sorted(UNKNOWN_TABLES[:3]))
    assert unknown == sorted(UNKNOWN_TABLES[:3])
    # The state holds the names as they are: the next run reads nothing.
    again = report_of(run_cli(*args))["tables"][TABLE]
    assert again["status"] == "unchanged" and again["files_loaded"] == 0
    record(
        request,
        "Hostile paths",
        "local course folders: spaces, unicode (NFC and NFD), quotes, %, =, ., ..., \\, TAB, "
        "LF, shell characters, 255-byte names; a non-UTF-8 name; a nested folder; unknown "
        "table folders",
        len(LOCAL_COURSES) + 2 + 3,
        f"{len(LOCAL_COURSES)} loaded with the exact _course_id, 2 reported with the reason, "
        "unknown tables ignored and named; nothing outside the data dir",
    )


@pytest.fixture
def hostile_s3(moto):  # noqa: F811
    """The landing zone with hostile S3 keys: course ids a filesystem cannot hold."""
    s3 = moto.fresh()
    courses = [*S3_LOADED, *S3_REFUSED]
    for number, course in enumerate(courses):
        key = f"{LANDING_PREFIX}/db_table/{TABLE}/prod/{course}/f{number}.tsv"
        s3.put_object(Bucket=LANDING_BUCKET, Key=key, Body=export(course, number))
    for name in UNKNOWN_TABLES:
        key = f"{LANDING_PREFIX}/db_table/{name}/prod/c/f.tsv"
        s3.put_object(Bucket=LANDING_BUCKET, Key=key, Body=export("unknown", 0))
    return moto


def assert_refused(report: dict) -> None:
    misplaced = report["misplaced_files"]
    assert len(misplaced) == len(S3_REFUSED)
    for course, reason in S3_REFUSED.items():
        url = f"{BUCKET_URL}/db_table/{TABLE}/prod/{course}/"
        assert any(entry.startswith(url) and reason in entry for entry in misplaced), course


def test_hostile_s3_course_ids_in_dev_and_in_the_lake(hostile_s3, tmp_path, request):
    s3 = hostile_s3.client("s3")
    expected = [row for row in expected_rows(s3, TABLE) if row["_course_id"] in S3_LOADED]
    keep = {*COLUMNS, "_course_id", "_dlt_file_path"}

    data = tmp_path / "data"
    result = run_loads(
        hostile_s3.env(),
        *("--tables", TABLE, "--bucket-url", BUCKET_URL, "--data-dir", str(data)),
        *("--pipelines-dir", str(tmp_path / "dev")),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = report_of(result)["tables"][TABLE]
    assert report["files_loaded"] == len(S3_LOADED)
    assert_refused(report)
    rows = table_rows(data, NAME)
    assert canonical(rows, keep=keep) == canonical(expected, keep=keep)
    assert inside(data) == []
    assert f"ignored {len(UNKNOWN_TABLES)} unknown table folder(s)" in result.stderr

    result = run_loads(
        hostile_s3.env(DAGSTER_ENVIRONMENT="qa"),
        *("--tables", TABLE, "--bucket-url", BUCKET_URL, "--pipelines-dir", str(tmp_path / "qa")),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert_refused(report_of(result)["tables"][TABLE])
    table = hostile_s3.catalog().load_table(("ol_warehouse_qa_raw", NAME))
    rows = table.scan().to_arrow().to_pylist()
    assert canonical(rows, keep=keep) == canonical(expected, keep=keep)
    lake_keys = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="ol-data-lake-raw-qa")
        for item in page.get("Contents", [])
    ]
    longest = max(len(key.encode()) for key in lake_keys)
    assert longest <= 1024, f"a lake key of {longest} bytes: S3 refuses keys over 1,024"
    record(
        request,
        "Hostile paths",
        "S3 course ids: '..', '.', empty, 256-600 bytes (longer than a filesystem name), "
        "encoded dots, quotes, unicode up to 255 bytes; unknown table folders",
        len(S3_LOADED) + len(S3_REFUSED) + len(UNKNOWN_TABLES),
        f"{len(S3_LOADED)} loaded exactly (dev and qa), {len(S3_REFUSED)} refused with the "
        f"reason; lake keys <= 1,024 bytes (longest {longest}); nothing outside the data dir",
    )
