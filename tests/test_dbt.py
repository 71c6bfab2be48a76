"""The dbt hand-off (examples/dbt, README "dbt hand-off"): dbt-duckdb on the sample's Parquet."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
import yaml

from edxorg_s3_ingest.tables import TABLES, destination_table

from conftest import REPO, SAMPLE, run_json

PROJECT = REPO / "examples" / "dbt"
sys.path.insert(0, str(REPO / "scripts"))

import generate_dbt_sources  # noqa: E402

pytestmark = pytest.mark.slow


def dbt(*args: str, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(Path(sys.executable).with_name("dbt")), *args],
        cwd=PROJECT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return result


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The whole sample loaded, 6.00.1x's auth_user export the newest file; then `dbt build`."""
    root = tmp_path_factory.mktemp("dbt")
    landing = root / "landing"
    shutil.copytree(SAMPLE, landing)
    for path in (landing / "db_table" / "auth_user" / "prod").rglob("*.tsv"):
        newest = path.parent.name == "MITx-6.00.1x-3T2016"
        # Within the sources' freshness (a week): a day apart, the newest landed an hour ago.
        landed = time.time() - 3600 - (0 if newest else 86400)
        os.utime(path, (landed, landed))
    data = root / "data"
    report = run_json(
        "--bucket-url",
        str(landing),
        "--data-dir",
        str(data),
        "--pipelines-dir",
        str(root / "pipelines"),
    )
    env = {
        "EDXORG_S3_INGEST__DATA_DIR": str(data),
        "DBT_PROFILES_DIR": str(PROJECT),
        "EDXORG_DBT_DUCKDB_PATH": str(root / "dbt.duckdb"),
        "DBT_TARGET_PATH": str(root / "target"),
        "DBT_LOG_PATH": str(root / "logs"),
    }
    build = dbt("build", "--no-partial-parse", env=env)
    freshness = dbt("source", "freshness", env=env)
    return report, build, freshness, duckdb.connect(str(root / "dbt.duckdb"), read_only=True)


def test_sources_file_is_generated_from_the_table_list():
    path = PROJECT / "models" / "staging" / "_edxorg_s3__sources.yml"
    assert path.read_text(encoding="utf-8") == generate_dbt_sources.render()
    (source,) = yaml.safe_load(path.read_text())["sources"]
    assert [table["name"] for table in source["tables"]] == [destination_table(t) for t in TABLES]
    for table, entry in zip(TABLES, source["tables"], strict=True):
        assert entry["meta"]["dagster"]["asset_key"] == ["edxorg", "tables", table]
        names = [column["name"] for column in entry["columns"]]
        assert "extracted_course_key" in names and "row_hash" in names
    assert source["config"]["loaded_at_field"] == "_dlt_file_modified"


def test_dbt_build_resolves_sources_and_builds_the_staging_models(built):
    report, build, _, db = built
    assert all(table["status"] == "loaded" for table in report["tables"].values())
    assert "PASS=7 WARN=0 ERROR=0 SKIP=0" in build.stdout
    # 20 auth_user rows (5 courses x 4): 8 generated learners seen in 2 courses at most, and
    # the fixtures' 4 + 4 users.
    assert db.sql("select count(*) from stg__edxorg__s3__auth_user").fetchone() == (16,)
    # chen.wei is in 6.00.1x's and 15.071x's exports: the newest file's row wins (its
    # last_login is NULL there, 2023-02-14 in the other).
    assert db.sql(
        "select user_username, user_seen_in_course_key, user_last_login::varchar, user_is_active "
        "from stg__edxorg__s3__auth_user where user_id = 4143199"
    ).fetchall() == [("chen.wei", "MITx-6.00.1x-3T2016", None, True)]
    # Obfuscated ids exceed int32.
    assert db.sql(
        "select user_username from stg__edxorg__s3__auth_user where user_id = 2147485696"
    ).fetchall() == [("username_2147485696",)]
    enrollments = "stg__edxorg__s3__student_courseenrollment"
    assert db.sql(f"select count(*) from {enrollments}").fetchone() == (20,)
    assert db.sql(
        f"select courserunenrollment_mode, courserunenrollment_created_on::varchar from "
        f"{enrollments} where user_id = 1"
    ).fetchall() == [("honor", "2015-08-12 23:13:04")]
    types = dict(
        db.sql(f"select column_name, column_type from (describe {enrollments})").fetchall()
    )
    assert types["courserunenrollment_is_active"] == "BOOLEAN"
    assert types["courserunenrollment_created_on"] == "TIMESTAMP"


def test_dbt_source_freshness_runs_on_every_table(built):
    *_, freshness, _ = built
    assert f"Finished running {len(TABLES)} sources" in freshness.stdout
