"""The process's AWS clients (landing/aws.py): one per AWS environment, also when the run's
listing threads all ask for it at once (each client costs ~0.1 s of CPU to build: built once
per thread, they made each table without files cost ~0.1 s)."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from edxorg_s3_ingest.landing import aws

THREADS = 8


@pytest.fixture
def fresh_aws_environment(monkeypatch):
    """AWS settings no client of this process was built for (fake keys, no network)."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "AKIAFAKE",
        "AWS_SECRET_ACCESS_KEY": "fake",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:9/{id(monkeypatch)}",
    }.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("client", [aws.s3_client, aws.glue_client])
def test_threads_asking_at_once_share_one_client(fresh_aws_environment, client):
    start = threading.Barrier(THREADS)

    def ask(_):
        start.wait()
        return client()

    with ThreadPoolExecutor(THREADS) as pool:
        clients = list(pool.map(ask, range(THREADS)))
    assert len({id(built) for built in clients}) == 1
    assert client() is clients[0]


def test_other_aws_settings_get_another_client(fresh_aws_environment, monkeypatch):
    first = aws.s3_client()
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9/elsewhere")
    second = aws.s3_client()
    assert second is not first
    assert second.meta.endpoint_url == "http://127.0.0.1:9/elsewhere"
