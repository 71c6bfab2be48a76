"""Fetching a table's files (source.py): in order, remote ones several at a time within a bytes
budget, local ones in place, small ones into memory; a failure surfaces at its file's turn.

`source.fetch` is replaced by a stand-in that records what is in flight (the real one and its
fault handling are tested against S3 faults in tests/test_faults_s3.py)."""

import threading
import time
from datetime import UTC, datetime

import pytest

from edxorg_s3_ingest.landing.listing import LandingChangedError, LandingFile
from edxorg_s3_ingest.loading import source

WHEN = datetime(2026, 1, 1, tzinfo=UTC)


def remote(count: int, size: int = 2_000) -> list[LandingFile]:
    return [LandingFile(WHEN, f"s3://b/k/c{n}/f.tsv", f"c{n}", size) for n in range(count)]


class Recorder:
    """A stand-in for fetching.fetch: sleeps a little, counts the fetches in flight."""

    def __init__(self, fail: str | None = None) -> None:
        self.lock = threading.Lock()
        self.now = self.most = self.calls = 0
        self.fail = fail

    def __call__(self, url, directory, size=None, *, in_memory=False):
        with self.lock:
            self.now += 1
            self.calls += 1
            self.most = max(self.most, self.now)
        try:
            time.sleep(0.01)
            if url == self.fail:
                raise LandingChangedError(f"{url} was listed but is gone")
            return url.encode() if in_memory else f"{directory}/download.tsv"
        finally:
            with self.lock:
                self.now -= 1


@pytest.fixture
def recorder(monkeypatch):
    recorder = Recorder()
    monkeypatch.setattr(source, "fetch", recorder)
    return recorder


def test_remote_files_come_in_order_several_at_a_time(recorder, tmp_path):
    files = remote(40)
    fetched = list(source._fetched(files, str(tmp_path), set()))
    assert [item.file for item in fetched] == files
    assert [item.source for item in fetched] == [file.url.encode() for file in files]
    assert 1 < recorder.most <= source.FETCH_CONCURRENCY
    assert not [t for t in threading.enumerate() if t.name.startswith("edxorg-fetch")]


def test_concurrency_is_set_by_the_environment(recorder, tmp_path, monkeypatch):
    monkeypatch.setenv(source.FETCH_CONCURRENCY_ENV, "1")
    assert len(list(source._fetched(remote(10), str(tmp_path), set()))) == 10
    assert recorder.most == 1
    monkeypatch.setenv(source.FETCH_CONCURRENCY_ENV, "3")
    list(source._fetched(remote(30), str(tmp_path), set()))
    assert 1 < recorder.most <= 3
    monkeypatch.setenv(source.FETCH_CONCURRENCY_ENV, "not a number")
    assert source.fetch_concurrency() == source.FETCH_CONCURRENCY


def test_bytes_fetched_ahead_are_bounded(recorder, tmp_path, monkeypatch):
    monkeypatch.setattr(source, "FETCH_AHEAD_BYTES", 25 << 20)
    files = remote(6, size=10 << 20)  # large: downloaded into folders of their own
    fetched = list(source._fetched(files, str(tmp_path), set()))
    assert recorder.most <= 2  # a third would pass the 25 MB
    assert [item.folder for item in fetched] == [str(tmp_path / f"fetch-{n}") for n in range(6)]
    huge = remote(3, size=100 << 20)  # each over the budget: fetched alone
    (tmp_path / "huge").mkdir()
    recorder.most = 0
    assert len(list(source._fetched(huge, str(tmp_path / "huge"), set()))) == 3
    assert recorder.most == 1


def test_a_failure_is_raised_at_its_files_turn_and_stops_the_pool(tmp_path, monkeypatch):
    files = remote(30)
    recorder = Recorder(fail=files[5].url)
    monkeypatch.setattr(source, "fetch", recorder)
    got = []
    with pytest.raises(LandingChangedError, match="c5/f.tsv"):
        for item in source._fetched(files, str(tmp_path), set()):
            got.append(item.file)
    assert got == files[:5]
    assert recorder.calls < len(files)  # nothing started after the failure was seen
    assert not [t for t in threading.enumerate() if t.name.startswith("edxorg-fetch")]


def test_closing_early_waits_for_the_fetches_in_flight(recorder, tmp_path):
    fetched = source._fetched(remote(40), str(tmp_path), set())
    next(fetched)
    fetched.close()
    assert recorder.now == 0
    assert not [t for t in threading.enumerate() if t.name.startswith("edxorg-fetch")]


def test_local_files_are_read_in_place_or_into_memory(tmp_path):
    small, large = tmp_path / "small.tsv", tmp_path / "large.tsv"
    small.write_bytes(b"id\n1\n")
    large.write_bytes(b"id\n" + b"1\n" * (source.SMALL_FILE_BYTES // 2 + 1))
    files = [
        LandingFile(WHEN, f"file://{path}", "c", path.stat().st_size) for path in (small, large)
    ]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    first, second = source._fetched(files, str(scratch), set())
    assert first.source == small.read_bytes() and first.folder is None
    assert second.source == str(large) and second.folder is None
    assert list(scratch.iterdir()) == []  # nothing copied
    # A small file that gets a Parquet file of its own is read from its path, like a large one.
    (own,) = source._fetched(files[:1], str(scratch), {files[0].url})
    assert own.source == str(small)
