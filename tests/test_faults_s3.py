"""Flaky S3: throttling, resets, truncated bodies and a landing zone that changes during a run
(SPEC §6, §7), injected by a proxy (tests/faults.py) between the real CLI and the moto server.

Transient faults are retried (botocore's adaptive retries for requests, resumed ranged GETs for
bodies) and the run ends with every table exactly SPEC §5's invariant. A persistent fault fails
THAT table only: exit 1, `failed_tables` names it, its table and its state stay as they were,
the other tables load. A file that vanished between the listing and its GET makes the table be
read again from a new listing. A lake the run cannot use fails before the landing zone is read.

The CI-sized run injects every kind at least once; `-m faults` repeats each kind on every
request (tests/reliability.py).
"""

import hashlib
import json
import tempfile
from pathlib import Path

import pytest

from edxorg_s3_ingest.tables import REJECTS_TABLE, destination_table

from faults import Request, Rule, fault_proxy
from moto_server import (
    BUCKET_URL,
    LANDING_BUCKET,
    LANDING_PREFIX,
    landing_key,
    moto,  # noqa: F401 - the module's moto server fixture
    report_of,
    run_loads,
    upload,
    upload_sample,
)
from oracle import canonical, table_rows
from reliability import record, scaled
from test_iceberg import expected_rows

pytestmark = [pytest.mark.faults, pytest.mark.slow]

TABLES = ["teams", "auth_user"]
DEMO = "edX-DemoX-Demo_Course"
HANDMADE = "MITx-1.00x-2026_Spring"
# Three rows, the second one ragged: it goes to the rejects (line 3).
HANDMADE_TEAMS = b"id\tteam_id\tname\n1\tt1\tAlpha\n2\tt2\n3\tt3\tGamma\n"
QA_DATABASE = "ol_warehouse_qa_raw"
# Request kinds injected transiently (each fault once or twice, then the request succeeds).
TRANSIENT = {
    "slowdown": dict(fault="slowdown", status=503, code="SlowDown"),
    "internal error": dict(fault="error", status=500, code="InternalError"),
    "connection reset": dict(fault="reset"),
    "truncated body": dict(fault="truncate"),
    "short body": dict(fault="short"),
}


@pytest.fixture
def lake(moto):  # noqa: F811
    """A clean moto: the landing bucket with the sample and a hand-made export, lake buckets."""
    s3 = moto.fresh()
    upload_sample(s3, [*TABLES, "student_courseenrollment"])
    upload(s3, "teams", HANDMADE, HANDMADE_TEAMS)
    return moto


@pytest.fixture
def proxy(moto):  # noqa: F811
    with fault_proxy(moto.endpoint) as running:
        yield running


class Dev:
    """CLI runs in dev (Parquet under a temporary data dir) over the moto landing zone."""

    def __init__(self, moto, root: Path, endpoint: str, **env: str) -> None:  # noqa: F811
        self.s3 = moto.client("s3")
        self.data = root / "data"
        self.pipelines = root / "pipelines"
        self.env = moto.env(AWS_ENDPOINT_URL=endpoint, **env)

    def run(self, tables: list[str], expect: int = 0, **env: str) -> dict:
        result = run_loads(
            {**self.env, **env},
            "--tables",
            ",".join(tables),
            "--bucket-url",
            BUCKET_URL,
            "--data-dir",
            str(self.data),
            "--pipelines-dir",
            str(self.pipelines),
        )
        assert result.returncode == expect, result.stderr[-4000:] + result.stdout[-4000:]
        assert "Traceback" not in result.stderr, result.stderr[-4000:]
        report = report_of(result)
        report["stderr"] = result.stderr
        return report

    def assert_exact(self, table: str) -> None:
        """The table is SPEC §5's invariant over the landing zone as it is now."""
        expected = expected_rows(self.s3, table)
        columns = {name for row in expected for name in row}
        actual = table_rows(self.data, destination_table(table))
        assert canonical(actual, keep=columns) == canonical(expected, keep=columns)

    def rejects(self) -> list[tuple]:
        if not (self.data / REJECTS_TABLE).exists():
            return []
        rows = table_rows(self.data, REJECTS_TABLE)
        return sorted((r["table"], r["_dlt_file_path"], r["_source_line"]) for r in rows)

    def fingerprint(self, table: str) -> tuple[dict, dict]:
        """The table's files (by content) and its incremental state: what must not change."""
        folder = self.data / destination_table(table)
        files = {
            str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*"))
            if path.is_file()
        }
        state = json.loads((folder / ".state.json").read_text())
        return files, state


def keys(s3, table: str) -> list[str]:
    prefix = f"{LANDING_PREFIX}/db_table/{table}/prod/"
    return sorted(
        o["Key"] for o in s3.list_objects_v2(Bucket=LANDING_BUCKET, Prefix=prefix)["Contents"]
    )


def object_key(key: str) -> str:
    """A Rule.key pattern for exactly this object."""
    return f"^{key.replace('.', '[.]')}$"


def re_export(s3, table: str, course: str, tag: bytes) -> str:
    """A re-export of `course` with different content (its current rows, one changed)."""
    current = max(
        (
            o
            for o in s3.list_objects_v2(
                Bucket=LANDING_BUCKET, Prefix=f"{LANDING_PREFIX}/db_table/{table}/prod/{course}/"
            )["Contents"]
        ),
        key=lambda o: (o["LastModified"], o["Key"]),
    )
    content = s3.get_object(Bucket=LANDING_BUCKET, Key=current["Key"])["Body"].read()
    header, first, *rest = content.split(b"\n")
    changed = b"\t".join([*first.split(b"\t")[:-1], tag])
    return upload(s3, table, course, b"\n".join([header, changed, *rest]))


# -- transient faults -------------------------------------------------------------------------


def test_transient_faults_of_every_kind_are_retried(lake, proxy, tmp_path, request):
    """One run, every kind of fault on a different request: listings throttled and reset, each
    object GET hit by another fault (some twice). The run succeeds and the tables are exact."""
    s3 = lake.client("s3")
    objects = keys(s3, "teams") + keys(s3, "auth_user")
    kinds = list(TRANSIENT.items())
    rules = [
        Rule("slowdown", method="GET", listing=True, key="", times=2),
        Rule("reset", method="GET", listing=True, times=1, after=2),
    ]
    for number, key in enumerate(objects):
        name, fault = kinds[number % len(kinds)]
        rules.append(
            Rule(**fault, method="GET", listing=False, key=object_key(key), times=1 + number % 2)
        )
    proxy.add(*rules)
    dev = Dev(lake, tmp_path, proxy.endpoint)
    report = dev.run(TABLES)
    assert report["ok"] and report["failed_tables"] == []
    for table in TABLES:
        dev.assert_exact(table)
    handmade = landing_key("teams", HANDMADE, HANDMADE_TEAMS)
    assert dev.rejects() == [("teams", f"s3://{LANDING_BUCKET}/{handmade}", 3)]
    injected = [rule.injected for rule in rules]
    assert injected == [rule.times for rule in rules], "every fault must have been injected"
    assert len(objects) >= len(TRANSIENT)
    record(
        request,
        "S3 faults (landing)",
        "transient: 503 SlowDown, 500, connection reset, truncated and short bodies, on listings "
        "and GETs (mixed, 1-2 per request)",
        sum(injected),
        "retried with backoff; run ok; tables and rejects exact",
    )


def pytest_generate_tests(metafunc):
    if "kind" in metafunc.fixturenames:
        kinds = list(TRANSIENT) if _full(metafunc.config) else []
        metafunc.parametrize("kind", kinds)
    if "persistent" in metafunc.fixturenames:
        chosen = list(TRANSIENT) if _full(metafunc.config) else ["slowdown"]
        metafunc.parametrize("persistent", chosen)


def _full(config) -> bool:
    return scaled(config, 0, 1) == 1


def test_every_request_faulted_twice(lake, proxy, tmp_path, request, kind):
    """Full run only: every listing and every GET gets the fault twice before it succeeds."""
    fault = TRANSIENT[kind]
    rule = Rule(**fault, method="GET", times=2, per_key=True)
    if kind == "short body":
        rule.listing = False  # a listing cut short with a matching length is not XML
    proxy.add(rule)
    dev = Dev(lake, tmp_path, proxy.endpoint)
    assert dev.run(TABLES)["ok"]
    for table in TABLES:
        dev.assert_exact(table)
    assert rule.injected >= 2 * 5
    record(
        request,
        "S3 faults (landing)",
        f"transient {kind}: every listing/GET faulted twice",
        rule.injected,
        "retried with backoff; run ok; tables exact",
    )


def test_fetch_under_random_faults_is_byte_exact(lake, proxy, request, monkeypatch):
    """In-process: many GETs of one object through random faults; every fetch is the object's
    exact bytes, or (when a fault persists past the attempts) a clear error; never short."""
    import random

    from botocore.retries.standard import ExponentialBackoff

    from edxorg_s3_ingest.landing import fetching
    from edxorg_s3_ingest.landing import listing as landing

    s3 = lake.client("s3")
    content = b"id\tvalue\n" + b"".join(b"%d\t%s\n" % (n, b"x" * (n % 97)) for n in range(20_000))
    key = upload(s3, "teams", "bytes-course", content)
    env = lake.env(AWS_ENDPOINT_URL=proxy.endpoint, AWS_RETRY_MODE="standard", AWS_MAX_ATTEMPTS="3")
    for name, value in env.items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    # What is tested here is what arrives, not the waiting: no backoff sleeps in this process.
    monkeypatch.setattr(fetching, "_pause", lambda attempt: None)
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0)
    rng = random.Random(8)
    count = scaled(request.config, 60, 600)
    exact = failed = 0
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(count):
            proxy.clear()
            name, fault = rng.choice(list(TRANSIENT.items()))
            if name in ("slowdown", "internal error", "connection reset"):
                times = rng.randint(1, 2) if rng.random() < 0.9 else None
            else:
                times = rng.randint(1, fetching.READ_ATTEMPTS + 1)
            proxy.add(Rule(**fault, method="GET", listing=False, times=times))
            try:
                path = fetching.fetch(f"s3://{LANDING_BUCKET}/{key}", scratch, len(content))
            except landing.LandingZoneError as error:
                assert "Traceback" not in str(error) and key in str(error)
                failed += 1
                continue
            assert Path(path).read_bytes() == content
            exact += 1
    assert exact > count // 2
    record(
        request,
        "S3 faults (landing)",
        "random fault kinds and counts (some persistent) on GETs of one 2 MB object "
        "(in-process fetch)",
        count,
        f"{exact} byte-exact, {failed} clear errors, 0 short files",
    )


# -- persistent faults ------------------------------------------------------------------------


def test_persistent_faults_fail_only_their_table(lake, proxy, tmp_path, request, persistent):
    """teams' new export can never be read; student_courseenrollment can never be listed.
    Both fail with a clear error and stay as they were; auth_user loads; then, faults gone,
    one run catches up exactly."""
    s3 = lake.client("s3")
    tables = [*TABLES, "student_courseenrollment"]
    dev = Dev(lake, tmp_path, proxy.endpoint, AWS_MAX_ATTEMPTS="2")
    assert dev.run(tables)["ok"]
    before = {table: dev.fingerprint(table) for table in ("teams", "student_courseenrollment")}
    teams_key = re_export(s3, "teams", DEMO, b"changed")
    re_export(s3, "auth_user", DEMO, b"changed")
    re_export(s3, "student_courseenrollment", DEMO, b"changed")
    fault = TRANSIENT[persistent]
    proxy.add(
        Rule(**fault, method="GET", listing=False, key=object_key(teams_key), times=None),
        Rule("reset", method="GET", listing=True, prefix="/student_courseenrollment/", times=None),
    )
    report = dev.run(tables, expect=1)
    assert report["ok"] is False
    assert report["failed_tables"] == ["teams", "student_courseenrollment"]
    teams_error = report["tables"]["teams"]["error"]
    assert teams_key in teams_error and "LandingZoneError" in teams_error
    listing_error = report["tables"]["student_courseenrollment"]["error"]
    assert "listing the landing zone" in listing_error and "after 2 attempts" in listing_error
    assert report["tables"]["auth_user"]["status"] == "loaded"
    dev.assert_exact("auth_user")
    for table, fingerprint in before.items():
        assert dev.fingerprint(table) == fingerprint, f"{table} changed"
    proxy.clear()
    assert dev.run(tables)["ok"]
    for table in tables:
        dev.assert_exact(table)
    record(
        request,
        "S3 faults (landing)",
        f"persistent {persistent} on one table's GET, persistent reset of another's listing",
        2,
        "those 2 tables failed (exit 1, failed_tables), table and state unchanged; others "
        "loaded; next run exact",
    )


# -- a landing zone that changes during the run -----------------------------------------------


def test_listing_that_changes_during_the_run(lake, proxy, tmp_path, request):
    """Between the listing and the GETs: teams' new export is deleted (the table is read again
    from a new listing and keeps the course's previous rows) and a newer auth_user export
    appears (not seen by this run, loaded by the next)."""
    s3 = lake.client("s3")
    dev = Dev(lake, tmp_path, proxy.endpoint)
    assert dev.run(TABLES)["ok"]
    vanishing = re_export(s3, "teams", DEMO, b"vanishing")
    auth_key = re_export(s3, "auth_user", DEMO, b"first")
    late: list[str] = []

    def delete(_: Request) -> None:
        s3.delete_object(Bucket=LANDING_BUCKET, Key=vanishing)

    def add(_: Request) -> None:
        late.append(re_export(s3, "auth_user", DEMO, b"late"))

    proxy.add(
        Rule("hook", method="GET", listing=False, key=object_key(vanishing), action=delete),
        Rule("hook", method="GET", listing=False, key=object_key(auth_key), action=add),
    )
    report = dev.run(TABLES)
    assert report["ok"], report
    assert f"s3://{LANDING_BUCKET}/{vanishing} was listed but is gone" in report["stderr"]
    assert "planning the table again" in report["stderr"]
    dev.assert_exact("teams")
    # auth_user holds the export listed, not the one that arrived after the listing.
    rows = table_rows(dev.data, destination_table("auth_user"))
    assert f"s3://{LANDING_BUCKET}/{auth_key}" in {row["_dlt_file_path"] for row in rows}
    assert late and f"s3://{LANDING_BUCKET}/{late[0]}" not in {r["_dlt_file_path"] for r in rows}
    proxy.clear()
    report = dev.run(TABLES)
    assert report["tables"]["auth_user"]["files_loaded"] == 1
    for table in TABLES:
        dev.assert_exact(table)
    record(
        request,
        "S3 faults (landing)",
        "listing changes during the run: a listed file deleted before its GET, a newer file "
        "added after the listing",
        2,
        "vanished file reported, table re-read from a new listing; run ok and exact; the added "
        "file loaded by the next run",
    )


def test_file_changed_since_listing_is_never_loaded_short(lake, proxy, request, monkeypatch):
    """In-process: a listed size that the object no longer has is a LandingChangedError."""
    from edxorg_s3_ingest.landing import fetching
    from edxorg_s3_ingest.landing import listing as landing

    for name, value in lake.env(AWS_ENDPOINT_URL=proxy.endpoint).items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    key = keys(lake.client("s3"), "teams")[0]
    with tempfile.TemporaryDirectory() as scratch:
        url = f"s3://{LANDING_BUCKET}/{key}"
        size = len(lake.client("s3").get_object(Bucket=LANDING_BUCKET, Key=key)["Body"].read())
        with pytest.raises(landing.LandingChangedError, match="changed since it was listed"):
            fetching.fetch(url, scratch, size + 1)
        with pytest.raises(landing.LandingChangedError, match="was listed but is gone"):
            fetching.fetch(url + ".missing", scratch, size)
        local = Path(scratch) / "local.tsv"
        local.write_bytes(b"id\n1\n")
        with pytest.raises(landing.LandingChangedError, match="changed since it was listed"):
            fetching.fetch(f"file://{local}", scratch, 3)
    record(
        request,
        "S3 faults (landing)",
        "object size differs from the listing / object gone (S3 and local)",
        3,
        "LandingChangedError naming the file; nothing loaded",
    )


# -- the lake (qa) ----------------------------------------------------------------------------


def test_transient_lake_faults_are_retried(lake, proxy, tmp_path, request):
    """qa through the proxy: Glue throttled, lake PUTs throttled, a lake GET reset, a landing
    GET truncated. The run succeeds; the Iceberg tables equal the invariant."""
    rules = [
        Rule("error", service="glue", status=400, code="ThrottlingException", times=2),
        Rule("slowdown", method="PUT", bucket="ol-data-lake-raw-qa", times=2),
        Rule("reset", method="GET", bucket="ol-data-lake-raw-qa", listing=False, times=1),
        Rule("truncate", method="GET", bucket=LANDING_BUCKET, listing=False, times=1),
    ]
    proxy.add(*rules)
    env = lake.env(AWS_ENDPOINT_URL=proxy.endpoint, DAGSTER_ENVIRONMENT="qa")
    result = run_loads(
        env,
        "--tables",
        ",".join(TABLES),
        "--bucket-url",
        BUCKET_URL,
        "--pipelines-dir",
        str(tmp_path / "pipelines"),
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert report_of(result)["ok"]
    s3, catalog = lake.client("s3"), lake.catalog()
    for table in TABLES:
        expected = expected_rows(s3, table)
        columns = {name for row in expected for name in row}
        rows = catalog.load_table((QA_DATABASE, destination_table(table))).scan().to_arrow()
        assert canonical(rows.to_pylist(), keep=columns) == canonical(expected, keep=columns)
    assert [rule.injected for rule in rules] == [rule.times for rule in rules]
    record(
        request,
        "S3 faults (lake, qa)",
        "Glue ThrottlingException, 503 on lake PUTs, reset lake GET, truncated landing GET",
        sum(rule.injected for rule in rules),
        "retried; run ok; Iceberg tables exact",
    )


def test_denied_lake_fails_before_the_landing_zone_is_read(lake, proxy, tmp_path, request):
    """store.preflight(): the lake bucket refuses everything; the run fails naming it, with no
    request to the landing bucket but the landing zone's one check (a listing of db_table/,
    before any table), and writes nothing to Glue."""
    proxy.add(
        Rule("error", bucket="ol-data-lake-raw-qa", status=403, code="AccessDenied", times=None)
    )
    env = lake.env(AWS_ENDPOINT_URL=proxy.endpoint, DAGSTER_ENVIRONMENT="qa")
    result = run_loads(
        env,
        "--tables",
        ",".join(TABLES),
        "--bucket-url",
        BUCKET_URL,
        "--pipelines-dir",
        str(tmp_path / "pipelines"),
    )
    assert result.returncode == 1
    report = report_of(result)
    assert report["failed_tables"] == TABLES
    for table in TABLES:
        error = report["tables"][table]["error"]
        assert (
            "access denied (AccessDenied) using the lake s3://ol-data-lake-raw-qa/edxorg" in error
        )
    assert proxy.count(service="s3", bucket=LANDING_BUCKET) == 1
    assert proxy.count(service="s3", bucket=LANDING_BUCKET, listing=True) == 1
    with pytest.raises(lake.client("glue").exceptions.EntityNotFoundException):
        lake.client("glue").get_table(DatabaseName=QA_DATABASE, Name=destination_table("teams"))
    record(
        request,
        "Lake preflight (qa)",
        "lake bucket denies every request (403 AccessDenied)",
        len(TABLES),
        "each table fails before reading the landing zone (0 landing GETs), naming the bucket",
    )
