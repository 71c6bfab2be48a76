"""AWS stand-ins for the lake tests: a moto server (S3 + Glue) and a stub that refuses everything.

Import the fixtures into a test module (`from moto_server import moto, refusing_aws`). The moto
server is a real subprocess on a free 127.0.0.1 port, so the CLI and pyiceberg talk to it over
HTTP exactly as they would to AWS (`AWS_ENDPOINT_URL`).
"""

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest
from pyiceberg.catalog import load_catalog

REGION = "us-east-1"
FAKE_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
READY_TIMEOUT = 60.0


def aws_environment(endpoint: str | None = None, **overrides: str) -> dict:
    """This process's environment without any real AWS setting, plus fake keys and `endpoint`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(FAKE_KEYS)
    env.update(
        AWS_DEFAULT_REGION=REGION,
        # Never fall back to a real profile or the instance metadata service.
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_CONFIG_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )
    if endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
    env.update(overrides)
    return {key: value for key, value in env.items() if value is not None}


@dataclass
class MotoServer:
    endpoint: str
    pid: int

    def client(self, service: str):
        return boto3.client(service, endpoint_url=self.endpoint, region_name=REGION, **_keys())

    def env(self, **overrides: str) -> dict:
        return aws_environment(self.endpoint, **overrides)

    def reset(self) -> None:
        """Forgets every bucket, object, database and table."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=10).close()

    def fresh(self, buckets: tuple[str, ...] | None = None):
        """A clean server with the landing bucket and both lake buckets (or `buckets`): its S3
        client."""
        self.reset()
        s3 = self.client("s3")
        for bucket in buckets or (LANDING_BUCKET, *LAKE_BUCKETS):
            s3.create_bucket(Bucket=bucket)
        return s3

    def catalog(self):
        """pyiceberg's own Glue catalog with its default (pyarrow) FileIO: a reader independent
        of the project's store."""
        return load_catalog(
            "moto",
            **{
                "type": "glue",
                "glue.endpoint": self.endpoint,
                "glue.region": REGION,
                "glue.access-key-id": FAKE_KEYS["AWS_ACCESS_KEY_ID"],
                "glue.secret-access-key": FAKE_KEYS["AWS_SECRET_ACCESS_KEY"],
                "s3.endpoint": self.endpoint,
                "s3.region": REGION,
                "s3.access-key-id": FAKE_KEYS["AWS_ACCESS_KEY_ID"],
                "s3.secret-access-key": FAKE_KEYS["AWS_SECRET_ACCESS_KEY"],
            },
        )


def _keys() -> dict:
    return {
        "aws_access_key_id": FAKE_KEYS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": FAKE_KEYS["AWS_SECRET_ACCESS_KEY"],
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_ready(process: subprocess.Popen, endpoint: str, log: Path) -> None:
    """Polls the server's own API until it answers; fails at once if the process died."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited ({process.returncode}):\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.05)  # the poll interval, not a wait for readiness
    raise RuntimeError(f"moto server not ready after {READY_TIMEOUT}s:\n{log.read_text()}")


def _stop(pid: int, process: subprocess.Popen) -> None:
    os.kill(pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.kill(pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def moto(tmp_path_factory) -> Iterator[MotoServer]:
    """`python -m moto.server` on a free port, killed by its PID when the module is done."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=aws_environment(),
        )
    try:
        _wait_until_ready(process, endpoint, log)
        yield MotoServer(endpoint, process.pid)
    finally:
        _stop(process.pid, process)


class _Refusing(BaseHTTPRequestHandler):
    """Answers every request with an AWS error: JSON for Glue, XML for S3."""

    s3_code = "AccessDenied"
    glue_code = "AccessDeniedException"

    def _refuse(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("X-Amz-Target", "").startswith("AWSGlue."):
            body = json.dumps({"__type": self.glue_code, "message": "refused by the stub"})
            status, content_type = 400, "application/x-amz-json-1.1"
        else:
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>'
                f"<Error><Code>{self.s3_code}</Code><Message>refused by the stub</Message></Error>"
            )
            status, content_type = 403, "application/xml"
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("x-amzn-ErrorType", self.glue_code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _refuse

    def log_message(self, *args) -> None:
        pass


@contextmanager
def refusing_aws(
    s3_code: str = "AccessDenied", glue_code: str = "AccessDeniedException"
) -> Iterator[str]:
    """An endpoint on 127.0.0.1 that answers every S3 and Glue request with the given error."""
    handler = type("Refusing", (_Refusing,), {"s3_code": s3_code, "glue_code": glue_code})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# -- the landing zone and the lake, as the tests see them --------------------------------------

LANDING_BUCKET = "landing"
LANDING_PREFIX = "edx"
BUCKET_URL = f"s3://{LANDING_BUCKET}/{LANDING_PREFIX}"
LAKE_BUCKETS = ("ol-data-lake-raw-qa", "ol-data-lake-raw-production")
REPO = Path(__file__).resolve().parents[1]
SAMPLE = Path(__file__).resolve().parent / "small_landing_zone"  # conftest.SMALL


def use_in_this_process(env: dict, monkeypatch) -> None:
    """This test process's AWS settings and DAGSTER_ENVIRONMENT made exactly those of `env` (what
    the CLI subprocesses get), for in-process calls to the loader."""
    for key in os.environ:
        if key.startswith("AWS_") and key not in env:
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("AWS_") or key == "DAGSTER_ENVIRONMENT":
            monkeypatch.setenv(key, value)


def landing_key(table: str, course: str, content: bytes, system: str = "prod") -> str:
    digest = hashlib.sha256(content).hexdigest()
    return f"{LANDING_PREFIX}/db_table/{table}/{system}/{course}/{digest}.tsv"


def upload(s3, table: str, course: str, content: bytes, system: str = "prod") -> str:
    """Puts one export where the upstream would (SPEC §2); returns its key."""
    key = landing_key(table, course, content, system)
    s3.put_object(Bucket=LANDING_BUCKET, Key=key, Body=content)
    return key


def upload_sample(s3, tables: list[str]) -> None:
    """The repository's sample landing zone (prod and edge) for `tables`."""
    for table in tables:
        for path in sorted((SAMPLE / "db_table" / table).rglob("*.tsv")):
            relative = path.relative_to(SAMPLE)
            s3.upload_file(str(path), LANDING_BUCKET, f"{LANDING_PREFIX}/{relative}")


def run_loads(env: dict, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess, with `--json`; never raises for a failed run."""
    return subprocess.run(
        [sys.executable, "-m", "edxorg_s3_ingest.loads", *args, "--json"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def report_of(result: subprocess.CompletedProcess) -> dict:
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError as error:
        raise AssertionError(f"no JSON report:\n{result.stderr}\n{result.stdout}") from error


def glue_tables(glue, database: str) -> dict[str, str]:
    """Every table of the Glue database and its current Iceberg metadata file."""
    try:
        tables = glue.get_tables(DatabaseName=database)["TableList"]
    except glue.exceptions.EntityNotFoundException:
        return {}
    return {table["Name"]: table["Parameters"].get("metadata_location") for table in tables}
