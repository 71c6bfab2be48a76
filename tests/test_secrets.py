"""No credential value ever shows: not on stdout or stderr, not in the `--json` report, not in
logs, Dagster events or metadata, not in the exceptions the product raises, not in the files it
writes, whether the run succeeds or fails (SPEC §6, §8).

The credentials are recognisable fakes. The failing runs go through the fault proxy
(tests/faults.py), answering with AWS errors whose messages ECHO the request's access key and
Authorization header, as a verbose server might: that text must be masked too.
"""

import os
import traceback
from pathlib import Path

import dagster as dg
import pytest
from dagster_shared.serdes import serialize_value

from faults import Rule, fault_proxy
from moto_server import (
    BUCKET_URL,
    LANDING_BUCKET,
    moto,  # noqa: F401 - the module's moto server fixture
    report_of,
    run_loads,
    upload,
    upload_sample,
    use_in_this_process,
)
from reliability import record, scaled

pytestmark = [pytest.mark.faults, pytest.mark.slow]

ACCESS_KEY = "AKIAFAKEFAKEFAKE1234"
SECRET = "s3cr3t-DO-NOT-LEAK-9f8e7d6c5b4a39281706f5e4d3c2b1a0"
TOKEN = "t0ken-DO-NOT-LEAK-IQoJb3JpZ2luX2VjEFAKEFAKEFAKE"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": SECRET,
    "AWS_SESSION_TOKEN": TOKEN,
}
ECHO = "request by {access_key} refused; Authorization: {authorization}"
TABLES = ["teams", "auth_user"]


def leaks(**texts: str) -> list[str]:
    """Where a credential value shows: `<name>: <value kind>` for each."""
    found = []
    for name, text in texts.items():
        for kind, value in (("access key", ACCESS_KEY), ("secret", SECRET), ("token", TOKEN)):
            if value in (text or ""):
                found.append(f"{name}: {kind}")
    return found


def file_leaks(*roots: Path) -> list[str]:
    found = []
    for root in roots:
        for folder, _, files in os.walk(root):
            for name in files:
                data = Path(folder, name).read_bytes()
                if any(value.encode() in data for value in CREDENTIALS.values()):
                    found.append(str(Path(folder, name)))
    return found


@pytest.fixture
def lake(moto):  # noqa: F811
    s3 = moto.fresh()
    upload_sample(s3, TABLES)
    return moto


@pytest.fixture
def proxy(moto):  # noqa: F811
    with fault_proxy(moto.endpoint) as running:
        yield running


# (what is injected, environment, proxy rules, expected exit status)
RUNS = {
    "dev, success": ("dev", [], 0),
    "dev, landing GET: InvalidAccessKeyId echoing the key": (
        "dev",
        [
            Rule(
                "error",
                method="GET",
                listing=False,
                status=403,
                code="InvalidAccessKeyId",
                message=ECHO,
                times=None,
            )
        ],
        1,
    ),
    "qa, lake PUT: persistent 500 echoing the Authorization header": (
        "qa",
        [
            Rule(
                "error",
                method="PUT",
                bucket="ol-data-lake-raw-qa",
                status=500,
                code="InternalError",
                message=ECHO,
                times=None,
            )
        ],
        1,
    ),
    "dev, landing listing: unknown error echoing the Authorization header": (
        "dev",
        [Rule("error", listing=True, status=400, code="Weird", message=ECHO, times=None)],
        1,
    ),
    "qa, Glue: UnrecognizedClientException echoing the key": (
        "qa",
        [
            Rule(
                "error",
                service="glue",
                status=400,
                code="UnrecognizedClientException",
                message=ECHO,
                times=None,
            )
        ],
        1,
    ),
}


def test_cli_runs_show_no_credential(lake, proxy, tmp_path, request):
    """Each run of RUNS (CI: the first three): its stdout (the --json report), stderr and the
    files it wrote."""
    found = []
    runs = list(RUNS.items())[: scaled(request.config, 3, len(RUNS))]
    for number, (name, (environment, rules, status)) in enumerate(runs):
        proxy.clear()
        proxy.add(*rules)
        env = lake.env(
            AWS_ENDPOINT_URL=proxy.endpoint,
            DAGSTER_ENVIRONMENT=environment,
            AWS_MAX_ATTEMPTS="2",
            **CREDENTIALS,
        )
        root = tmp_path / str(number)
        result = run_loads(
            env,
            *("--tables", ",".join(TABLES), "--bucket-url", BUCKET_URL),
            *("--data-dir", str(root / "data"), "--pipelines-dir", str(root / "pipelines")),
        )
        assert result.returncode == status, f"{name}: {result.stderr[-3000:]}"
        report = report_of(result)
        if status:
            assert report["failed_tables"], name
            assert all(report["tables"][t]["error"] for t in report["failed_tables"])
        assert "Traceback" not in result.stderr
        found += [f"{name}: {leak}" for leak in leaks(stdout=result.stdout, stderr=result.stderr)]
        found += [f"{name}: file {path}" for path in file_leaks(root)]
        if rules:
            assert any(rule.injected for rule in rules), f"{name}: nothing injected"
    assert found == []
    record(
        request,
        "Secrets",
        "fake credentials (AKIAFAKE…, s3cr3t-DO-NOT-LEAK-…, session token) in CLI runs: "
        "success, and AWS errors echoing the access key and Authorization header (landing, "
        "Glue, lake)",
        len(runs),
        "no credential value on stdout (--json), stderr, or in any file written",
    )


@pytest.fixture
def aws_env(lake, proxy, monkeypatch):
    """This process on the proxy, with the fake credentials, in qa."""
    env = lake.env(AWS_ENDPOINT_URL=proxy.endpoint, DAGSTER_ENVIRONMENT="qa", AWS_MAX_ATTEMPTS="2")
    env.update(CREDENTIALS)
    use_in_this_process(env, monkeypatch)
    return proxy


def materialize(tmp_path, monkeypatch) -> tuple[dg.ExecuteInProcessResult, list]:
    monkeypatch.setenv("SOURCES__EDXORG_S3__BUCKET_URL", BUCKET_URL)
    monkeypatch.setenv("EDXORG_S3_INGEST__PIPELINES_DIR", str(tmp_path / "pipelines"))
    from edxorg_s3_ingest.definitions import defs

    instance = dg.DagsterInstance.ephemeral()
    job = defs().resolve_implicit_global_asset_job_def()
    keys = [dg.AssetKey(["edxorg", "tables", table]) for table in TABLES]
    result = job.execute_in_process(asset_selection=keys, instance=instance, raise_on_error=False)
    return result, list(instance.all_logs(result.run_id))


def test_dagster_materializations_show_no_credential(
    lake, aws_env, tmp_path, monkeypatch, capfd, caplog, request
):
    """A materialization that succeeds (metadata) and one that fails (a landing GET refused
    with the key echoed): no credential in any event, its metadata, the logs or the output."""
    proxy = aws_env
    success, success_events = materialize(tmp_path / "ok", monkeypatch)
    assert success.success
    metadata = [
        event.materialization.metadata for event in success.get_asset_materialization_events()
    ]
    assert len(metadata) == len(TABLES)
    proxy.add(
        Rule(
            "error",
            method="GET",
            listing=False,
            bucket=LANDING_BUCKET,
            status=400,
            code="Weird",
            message=ECHO,
            times=None,
        )
    )
    upload(lake.client("s3"), "teams", "New-Course", b"id\tname\n1\ta\n")
    failure, failure_events = materialize(tmp_path / "failed", monkeypatch)
    assert not failure.success
    assert proxy.injected() > 0
    output = capfd.readouterr()
    texts = {
        "events": "\n".join(serialize_value(event) for event in success_events + failure_events),
        "metadata": repr(metadata),
        "logs": "\n".join(record.getMessage() for record in caplog.records),
        "stdout": output.out,
        "stderr": output.err,
    }
    assert "Weird" in texts["events"]  # the failure is there, masked
    assert leaks(**texts) == []
    record(
        request,
        "Secrets",
        "fake credentials in Dagster materializations (qa): one succeeding, one failing with "
        "an AWS error echoing the access key",
        2,
        "no credential value in events, metadata, Failure, logs, stdout or stderr",
    )


def test_exceptions_show_no_credential(aws_env, tmp_path, request):
    """The product's own exceptions (landing listing / fetch, the lake's preflight) and their
    whole printed chains, when the server echoes the credentials."""
    from edxorg_s3_ingest.landing import fetching
    from edxorg_s3_ingest.landing import listing as landing
    from edxorg_s3_ingest.stores.iceberg_store import IcebergStore, LakeError

    proxy = aws_env
    proxy.add(Rule("error", status=400, code="Weird", message=ECHO, times=None))
    proxy.add(Rule("error", service="glue", status=400, code="Weird", message=ECHO, times=None))
    printed = {}
    for name, call in {
        "listing": lambda: landing.list_prod_files(BUCKET_URL, "teams"),
        "fetch": lambda: fetching.fetch(f"s3://{LANDING_BUCKET}/x.tsv", str(tmp_path), 10),
        "preflight": lambda: IcebergStore(
            "s3://ol-data-lake-raw-qa/edxorg", "ol_warehouse_qa_raw"
        ).preflight(),
    }.items():
        with pytest.raises((landing.LandingZoneError, LakeError)) as caught:
            call()
        printed[name] = "".join(traceback.format_exception(caught.value))
    assert all("Weird" in text or "refused" in text for text in printed.values()), printed
    assert leaks(**printed) == []
    record(
        request,
        "Secrets",
        "exceptions raised by the landing listing and fetch and the lake's preflight when the "
        "server echoes the credentials (printed with their whole chain)",
        3,
        "message masked; a cause that shows a credential is not chained",
    )
