"""qa / production failures name what to fix, exit 1, and leave every table as it was (SPEC §6).

A first run loads `teams` into the qa lake (moto). Each failing run then tries to load it again
from a fresh pipelines dir, so that it would write if it could; afterwards every Glue table must
still point at the same Iceberg metadata file (any commit would change it).
Access refusals that moto does not enforce come from a stub endpoint that answers every request
with the AWS error under test.
"""

import shutil

import pytest

from moto_server import (
    BUCKET_URL,
    LANDING_BUCKET,
    SAMPLE,
    glue_tables,
    moto,  # noqa: F401 - the module's moto server fixture
    refusing_aws,
    report_of,
    run_loads,
    upload_sample,
)

QA_DATABASE = "ol_warehouse_qa_raw"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def baseline(moto, tmp_path_factory):  # noqa: F811
    """The qa lake after one good run; the production lake bucket does not exist."""
    moto.reset()
    s3 = moto.client("s3")
    for bucket in (LANDING_BUCKET, "ol-data-lake-raw-qa"):
        s3.create_bucket(Bucket=bucket)
    upload_sample(s3, ["teams"])
    pipelines = tmp_path_factory.mktemp("pipelines")
    env = moto.env(DAGSTER_ENVIRONMENT="qa")
    args = ("--tables", "teams", "--bucket-url", BUCKET_URL, "--pipelines-dir", str(pipelines))
    result = run_loads(env, *args)
    assert result.returncode == 0, result.stderr + result.stdout
    return lake_state(moto)


def lake_state(moto) -> dict:  # noqa: F811
    glue = moto.client("glue")
    state = {env: glue_tables(glue, f"ol_warehouse_{env}_raw") for env in ("qa", "production")}
    assert state["qa"], "the baseline run must have created tables"
    return state


@pytest.fixture
def local_landing(tmp_path):
    """The sample `teams` exports in a local folder: the landing side works without AWS."""
    shutil.copytree(SAMPLE / "db_table" / "teams", tmp_path / "landing" / "db_table" / "teams")
    return str(tmp_path / "landing")


def run_of_teams_failing(env: dict, bucket_url: str, tmp_path, environment: str):
    """Runs the CLI on `teams`; checks that it failed, without a stack trace. Returns the
    process and its report."""
    env = {**env, "DAGSTER_ENVIRONMENT": environment}
    pipelines = tmp_path / "pipelines"
    result = run_loads(
        env, "--tables", "teams", "--bucket-url", bucket_url, "--pipelines-dir", str(pipelines)
    )
    assert result.returncode == 1, result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    report = report_of(result)
    assert report["ok"] is False and report["failed_tables"] == ["teams"]
    return result, report


def failing_run(env: dict, bucket_url: str, tmp_path, environment: str = "qa") -> dict:
    """The report of `teams`, failed."""
    return run_of_teams_failing(env, bucket_url, tmp_path, environment)[1]["tables"]["teams"]


def landing_zone_error(env: dict, bucket_url: str, tmp_path, environment: str = "dev") -> str:
    """The run's one error when the landing zone's check, before any table, fails: the table
    is reported as not started."""
    result, report = run_of_teams_failing(env, bucket_url, tmp_path, environment)
    assert report["tables"]["teams"]["error"].startswith("not started")
    assert result.stderr.count("edxorg-s3-ingest:") == 1 and report["error"] in result.stderr
    return report["error"]


def test_no_credentials_for_the_landing_zone(moto, baseline, tmp_path):  # noqa: F811
    env = moto.env(AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None)
    error = landing_zone_error(env, BUCKET_URL, tmp_path)
    assert error.startswith(f"no AWS credentials found listing the landing zone {BUCKET_URL}")
    assert "AWS_PROFILE" in error and "IRSA" in error
    assert lake_state(moto) == baseline


def test_no_credentials_for_the_lake(moto, baseline, local_landing, tmp_path):  # noqa: F811
    env = moto.env(AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None)
    report = failing_run(env, local_landing, tmp_path)
    assert "LakeError: " in report["error"]
    assert (
        "no AWS credentials found for the lake (s3://ol-data-lake-raw-qa/edxorg)"
        in (report["error"])
    )
    assert lake_state(moto) == baseline


def test_wrong_credentials_for_the_landing_zone(moto, baseline, tmp_path):  # noqa: F811
    code = "InvalidAccessKeyId"
    with refusing_aws(s3_code=code) as endpoint:
        error = landing_zone_error(moto.env(AWS_ENDPOINT_URL=endpoint), BUCKET_URL, tmp_path)
    assert f"AWS rejected the credentials ({code}) listing the landing zone" in error
    assert "AWS_ACCESS_KEY_ID" in error
    assert lake_state(moto) == baseline


def test_wrong_credentials_for_glue(moto, baseline, local_landing, tmp_path):  # noqa: F811
    with refusing_aws(glue_code="UnrecognizedClientException") as endpoint:
        env = moto.env(AWS_ENDPOINT_URL_GLUE=endpoint)
        report = failing_run(env, local_landing, tmp_path)
    assert (
        "AWS rejected the credentials (UnrecognizedClientException) for Glue database "
        f"{QA_DATABASE}"
    ) in report["error"]
    assert lake_state(moto) == baseline


def test_access_denied_to_the_landing_bucket(moto, baseline, tmp_path):  # noqa: F811
    with refusing_aws() as endpoint:
        error = landing_zone_error(moto.env(AWS_ENDPOINT_URL_S3=endpoint), BUCKET_URL, tmp_path)
    assert f"access denied (AccessDenied) listing the landing zone {BUCKET_URL}" in error
    assert f"needs s3:ListBucket on s3://{LANDING_BUCKET}" in error
    assert f"endpoint {endpoint} (AWS_ENDPOINT_URL_S3)" in error
    assert lake_state(moto) == baseline


def test_access_denied_to_the_lake_bucket(moto, baseline, local_landing, tmp_path):  # noqa: F811
    with refusing_aws() as endpoint:
        env = moto.env(AWS_ENDPOINT_URL_S3=endpoint)
        report = failing_run(env, local_landing, tmp_path)
    assert "using the lake s3://ol-data-lake-raw-qa/edxorg" in report["error"]
    assert "access denied (" in report["error"]
    assert "s3:PutObject" in report["error"] and "on s3://ol-data-lake-raw-qa" in report["error"]
    assert lake_state(moto) == baseline


def test_access_denied_by_glue(moto, baseline, local_landing, tmp_path):  # noqa: F811
    with refusing_aws() as endpoint:
        env = moto.env(AWS_ENDPOINT_URL_GLUE=endpoint)
        report = failing_run(env, local_landing, tmp_path)
    assert (
        f"access denied (AccessDeniedException) by Glue database {QA_DATABASE}" in report["error"]
    )
    assert "glue:CreateTable" in report["error"]
    assert lake_state(moto) == baseline


def test_missing_landing_bucket(moto, baseline, tmp_path):  # noqa: F811
    error = landing_zone_error(moto.env(), "s3://no-such-landing/edx", tmp_path, "qa")
    assert "the bucket s3://no-such-landing does not exist" in error
    assert "--bucket-url" in error
    assert lake_state(moto) == baseline


def test_missing_lake_bucket(moto, baseline, tmp_path):  # noqa: F811
    report = failing_run(moto.env(), BUCKET_URL, tmp_path, environment="production")
    assert "the bucket s3://ol-data-lake-raw-production does not exist" in report["error"]
    assert "It must exist before loading DAGSTER_ENVIRONMENT=production" in report["error"]
    # Nothing was registered in Glue, not even the database.
    assert lake_state(moto) == baseline
    with pytest.raises(moto.client("glue").exceptions.EntityNotFoundException):
        moto.client("glue").get_database(Name="ol_warehouse_production_raw")
