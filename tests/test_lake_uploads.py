"""Data files uploaded while a load reads (stores/lake_uploads.py), on a moto server: the commit
registers exactly the bytes it would have uploaded itself, and anything it cannot use is
aborted, never a file of the lake."""

import os
import shutil

import pytest
from test_lake_layout import (
    COURSES,
    DATABASE,
    LAKE,
    NAME,
    data_files,
    lake,  # noqa: F401 - the lake fixture
    rows_by_course,
    staged,
    table_of,
)

from edxorg_s3_ingest.landing.aws import split_s3
from edxorg_s3_ingest.stores import LoadCommit, iceberg_store, lake_uploads
from edxorg_s3_ingest.stores.iceberg_store import IcebergStore
from edxorg_s3_ingest.tables import destination_table

from moto_server import (
    BUCKET_URL,
    moto,  # noqa: F401 - the module's moto server fixture
    report_of,
    run_loads,
    upload_sample,
)
from test_iceberg import QA_DATABASE, assert_rows_equal, expected_rows

pytestmark = pytest.mark.slow
BUCKET = split_s3(LAKE)[0]


@pytest.fixture(autouse=True)
def early_uploads_on(monkeypatch):
    """Early uploads are off by default (iceberg_store.EARLY_UPLOADS_ENV): on here."""
    monkeypatch.setenv(iceberg_store.EARLY_UPLOADS_ENV, "1")


def incompressible(count: int, seed: int) -> list[str]:
    """Values that snappy cannot shrink: a staged file of several MB, so that an upload has
    parts (moto refuses parts below 5 MiB but the last, as S3 does)."""
    return [os.urandom(32).hex() + f"{seed}-{i}" for i in range(count)]


def commit(store, load_id, files, courses, uploads=None, full_refresh=False):
    base = store.read_state(NAME).version
    entries = {course: {"columns": ["username"]} for course in courses}
    store.commit(
        LoadCommit(NAME, load_id, files, entries, {"load": load_id}, base, full_refresh, uploads)
    )


def objects(lake, prefix: str) -> dict[str, bytes]:  # noqa: F811
    s3 = lake.client("s3")
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {
        item["Key"]: s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read() for item in listed
    }


def open_uploads(lake) -> list[str]:  # noqa: F811
    answer = lake.client("s3").list_multipart_uploads(Bucket=BUCKET)
    return [upload["Key"] for upload in answer.get("Uploads", [])]


def staged_files(tmp_path, load_id: str) -> list:
    """A large course's file (alone) and two packs of small courses (joined), ~22 MB."""
    big = staged(tmp_path / "big.parquet", {COURSES[0]: incompressible(160_000, 0)}, load_id)
    packs = [
        staged(
            tmp_path / f"pack{n}.parquet",
            {c: incompressible(6_000, n) for c in part},
            load_id,
        )
        for n, part in enumerate([COURSES[1:3], COURSES[3:5]])
    ]
    return [big, *packs]


def test_files_uploaded_while_reading_are_the_data_files_the_commit_would_write(
    lake,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    """The same staged files committed twice: uploaded by the commit itself, and uploaded
    while the load read (in parts, the footer last). The lake holds the same bytes, the same
    rows, and no upload is left open."""
    monkeypatch.setattr(iceberg_store, "ALONE_BYTES", 4 << 20)
    store = IcebergStore(LAKE, DATABASE)
    files = staged_files(tmp_path, "L1")
    assert files[0].stat().st_size > lake_uploads.PART_BYTES  # a part, then the rest
    commit(store, "L1", files, COURSES[:5], full_refresh=True)
    before = {path: objects(lake, split_s3(path)[1]) for path in data_files(lake)}
    rows = rows_by_course(lake)

    uploads = store.early_uploads(NAME)
    for path in files:
        uploads.add(str(path))
    commit(store, "L2", files, COURSES[:5], uploads, full_refresh=True)

    after = data_files(lake)
    assert len(after) == 2
    assert all(str(uploads._name) in path for path in after)
    written = sorted(body for path in after for body in objects(lake, split_s3(path)[1]).values())
    assert written == sorted(body for found in before.values() for body in found.values())
    assert rows_by_course(lake) == rows
    assert open_uploads(lake) == []
    sizes = {
        task.file.file_path: task.file.file_size_in_bytes
        for task in table_of(lake).scan().plan_files()
    }
    assert all(
        len(next(iter(objects(lake, split_s3(p)[1]).values()))) == s for p, s in sizes.items()
    )


def test_uploads_the_commit_cannot_use_are_aborted(lake, tmp_path, monkeypatch):  # noqa: F811
    """A re-export that rewrites a shared file writes everything again (copy-on-write): the
    uploads made while it read are aborted, and a staged file that is not the one uploaded (a
    copy: another inode) is written by the commit. Either way: exact rows, no upload left."""
    monkeypatch.setattr(iceberg_store, "ALONE_BYTES", 4 << 20)
    store = IcebergStore(LAKE, DATABASE)
    commit(store, "L1", staged_files(tmp_path, "L1"), COURSES[:5])

    again = staged(tmp_path / "again.parquet", {COURSES[1]: incompressible(160_000, 9)}, "L2")
    uploads = store.early_uploads(NAME)
    uploads.add(str(again))
    uploads._pool.submit(lambda: None).result()  # its parts are sent
    assert len(open_uploads(lake)) == 1
    commit(store, "L2", [again], [COURSES[1]], uploads)
    assert open_uploads(lake) == []
    assert not any(str(uploads._name) in key for key in objects(lake, "edxorg/"))
    assert len(rows_by_course(lake)[COURSES[1]]) == 160_000
    assert len(rows_by_course(lake)[COURSES[2]]) == 6_000

    newer = staged(tmp_path / "newer.parquet", {COURSES[0]: incompressible(160_000, 7)}, "L3")
    uploads = store.early_uploads(NAME)
    uploads.add(str(newer))
    copy = tmp_path / "copy.parquet"
    shutil.copyfile(newer, copy)
    commit(store, "L3", [copy], [COURSES[0]], uploads)
    assert open_uploads(lake) == []
    assert not any(str(uploads._name) in path for path in data_files(lake))
    assert len(rows_by_course(lake)[COURSES[0]]) == 160_000


def test_a_load_that_never_commits_leaves_no_object_and_no_open_upload(
    lake,  # noqa: F811
    tmp_path,
):
    """A failed attempt (or one that found nothing to load) closes its uploads: parts already
    sent are aborted; nothing under the table's location."""
    store = IcebergStore(LAKE, DATABASE)
    big = staged(tmp_path / "big.parquet", {COURSES[0]: incompressible(160_000, 3)}, "L1")
    uploads = store.early_uploads(NAME)
    uploads.add(str(big))
    uploads._pool.submit(lambda: None).result()  # its parts are sent
    assert len(open_uploads(lake)) == 1
    uploads.close()
    assert open_uploads(lake) == []
    assert objects(lake, "edxorg/") == {}


def test_early_uploads_are_turned_on_by_their_setting(monkeypatch):
    """By default (and with EDXORG_S3_INGEST_EARLY_UPLOADS=0) the commit uploads every data
    file itself; `1` uploads them while the load reads."""
    store = IcebergStore(LAKE, DATABASE)
    monkeypatch.delenv(iceberg_store.EARLY_UPLOADS_ENV, raising=False)
    assert store.early_uploads(NAME) is None
    monkeypatch.setenv(iceberg_store.EARLY_UPLOADS_ENV, "0")
    assert store.early_uploads(NAME) is None
    monkeypatch.setenv(iceberg_store.EARLY_UPLOADS_ENV, "1")
    uploads = store.early_uploads(NAME)
    assert uploads.data_url == f"{LAKE}/{NAME}/data"
    uploads.close()


def test_a_cli_load_with_early_uploads_is_exact(lake, tmp_path):  # noqa: F811
    """The CLI's qa load with EDXORG_S3_INGEST_EARLY_UPLOADS=1: each staged file handed to the
    uploads as it is written, the commit taking them; the table equals the newest exports."""
    s3 = lake.client("s3")
    upload_sample(s3, ["auth_user"])
    env = lake.env(DAGSTER_ENVIRONMENT="qa", EDXORG_S3_INGEST_EARLY_UPLOADS="1")
    args = ["--tables", "auth_user", "--bucket-url", BUCKET_URL]
    result = run_loads(env, *args, "--pipelines-dir", str(tmp_path / "pipelines"))
    assert report_of(result)["ok"], result.stderr[-3000:]
    table = lake.catalog().load_table((QA_DATABASE, destination_table("auth_user")))
    assert_rows_equal(table.scan().to_arrow().to_pylist(), expected_rows(s3, "auth_user"))
    assert open_uploads(lake) == []
