"""A second core for one table's load: a helper process parses some of its large files.

A table's load reads its files on a few threads of one process (source.py), ~1.3 cores at
best: when one table holds most of a run's bytes (courseware_studentmodule), the other worker
finishes its tables and the machine's other core idles. So, once a core is spare, the loading
process starts a helper process (`python -m edxorg_s3_ingest.loading.parse_helper`) and offers
it its large files (those that get a Parquet file of their own) one at a time, as the helper
becomes free: the helper runs the same stages on them (file_rows.py, staged_files.py: pre-scan,
parse, lineage, Parquet), in the same scratch folder, and answers with the Parquet file and the
source file's end (its header, rejects, rows), which the loading process hands to dlt as its
own. A file's rows are exactly what the loading process would have written.

Spare cores are tokens (spare_cores.py): the CLI's worker processes share a semaphore that
the CLI releases each time it ends a worker with nothing left to load (workers.py), and a
single load in the CLI process gets the CPUs it may use beyond its own; Dagster's steps share
cores as lock files (spare_cores.MachineCores, orchestration/step_cores.py). A load takes one
token for its helper and gives it back when it ends. With no tokens (`--workers 1`, a step
that found no free core), loads read alone.
"""

import logging
import os
import pickle
import queue
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import closing, suppress
from typing import NamedTuple

from edxorg_s3_ingest.landing.listing import LandingFile
from edxorg_s3_ingest.loading.file_rows import FileRead, read_files, scan_files
from edxorg_s3_ingest.loading.memory_pool import leave_pandas_out, use_lean_memory_pool
from edxorg_s3_ingest.reading.lineage import Lineage
from edxorg_s3_ingest.reading.staged_files import Columns, Written, arranged, write_files
from edxorg_s3_ingest.reading.threads import read_ahead
from edxorg_s3_ingest.reading.tsv import SOURCE_LINE, InvalidHeaderError, Reject, header_of
from edxorg_s3_ingest.timeline import mark

log = logging.getLogger(__name__)

HELPER_MIN_BYTES = 64 << 20
"""A load whose large files add up to less than this reads them alone: a helper's start (a
Python process importing pyarrow, ~0.3 s of CPU) would cost more than it saves."""
WAIT = 0.1
"""Seconds between two looks at whether the load has ended, while a lane waits."""


class Parsed(NamedTuple):
    """A helper's answer for one file: its Parquet file (None if no rows) and its end."""

    written: Written | None
    header: list[str] | None
    rejects: list[Reject]
    rows: int


class HelperFile(NamedTuple):
    """A file's end as read by a helper (the `tsv` of a FileRead: its header)."""

    header: list[str]


class HelperLane:
    """In the loading process: a thread that waits for a spare core, then starts the helper
    process and hands it, one at a time, the large files the scan stage offers (`divert`);
    its answers come out of `results`."""

    def __init__(self, scratch: str, load_id: str, columns: Columns, tokens) -> None:
        self.scratch, self.load_id, self.columns, self.tokens = scratch, load_id, columns, tokens
        # The scan stage's offers (one waits at most: `_offer`), then None when it has no more,
        # so that the lane ends as soon as the last file is parsed, not at its next look.
        self._offered: queue.Queue = queue.Queue()
        self._answers: queue.Queue = queue.Queue()
        self._ready = threading.Event()  # the helper runs: files may be offered
        self._no_more = threading.Event()  # the scan stage has offered its last file
        self._stopped = threading.Event()  # the load ends (or failed): stop now
        self._process: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._run, name="edxorg-helper", daemon=True)
        self._thread.start()

    def divert(self, fetched: Iterator, own: set[str]) -> Iterator:
        """The fetched files (file, local path or bytes, download folder) that the loading
        process reads itself: a large file on local disk goes to the helper when it is free and
        its columns need no renaming by dlt. Runs on the scan thread."""
        try:
            for item in fetched:
                if item[0].url not in own or not self._offer(item):
                    yield item
        finally:
            self._no_more.set()
            self._offered.put(None)

    def _offer(self, item) -> bool:
        file, source, folder = item
        if not self._ready.is_set() or not isinstance(source, str) or not self._offered.empty():
            return False
        try:
            with open(source, "rb") as stream:
                header = header_of(stream)
        except (OSError, InvalidHeaderError):  # the loading process reports it
            return False
        order = self.columns.plan([*header, SOURCE_LINE, *Lineage.NAMES])
        if order is None:
            return False
        self._offered.put((file, source, folder, order))
        return True

    def results(self) -> Iterator:
        """The helper's Written files and FileReads, as they come; ends when the lane does
        (or is stopped)."""
        while True:
            try:
                answer = self._answers.get(timeout=WAIT)
            except queue.Empty:
                if self._stopped.is_set():
                    return
                continue
            if answer is None:
                return
            if isinstance(answer, BaseException):
                raise answer
            yield answer

    def stop(self) -> None:
        """Ends the lane now: no more files offered, a parse under way killed."""
        self._no_more.set()
        self._stopped.set()
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()

    def join(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        taken, parsed = False, 0
        try:
            while not taken and not self._no_more.is_set():
                taken = self.tokens.acquire(timeout=WAIT)
            if not taken:
                return
            try:
                self._process = subprocess.Popen(
                    [sys.executable, "-m", __name__, self.scratch, self.load_id],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                )
            except OSError as error:  # no process to be had: the load reads alone, as before
                log.warning("no parse helper process (%s): the load reads its files alone", error)
                return
            self._ready.set()
            mark("helper")
            while not self._stopped.is_set():
                try:
                    offered = self._offered.get(timeout=WAIT)
                except queue.Empty:
                    if self._no_more.is_set() and self._offered.empty():
                        return  # nothing more comes (its None may not be in yet)
                    continue
                if offered is None:
                    return
                file, source, folder, order = offered
                for answer in self._parse(file, source, order):
                    self._answers.put(answer)
                parsed += 1
                if folder is not None:
                    shutil.rmtree(folder, ignore_errors=True)
        except BaseException as error:  # noqa: BLE001 - raised in the consumer
            self._answers.put(error)
        finally:
            self._ready.clear()
            self._end_process()
            if taken:
                self.tokens.release()
                mark(f"helper-done {parsed}")
            self._answers.put(None)

    def _parse(self, file: LandingFile, source: str, order: list[str]) -> list:
        """The helper's Parquet file (if any rows) and the file's end."""
        process = self._process
        pickle.dump((file, source, order), process.stdin)
        process.stdin.flush()
        try:
            parsed: Parsed = pickle.load(process.stdout)
        except EOFError:
            raise RuntimeError(
                f"the parse helper process (pid {process.pid}) ended while it parsed {file.url}"
                f" (exit status {process.wait()})"
            ) from None
        if isinstance(parsed, BaseException):
            raise parsed
        header = HelperFile(parsed.header) if parsed.header is not None else None
        end = FileRead(file, header, parsed.rejects, parsed.rows)
        return [end] if parsed.written is None else [parsed.written, end]

    def _end_process(self) -> None:
        process = self._process
        if process is None:
            return
        with suppress(OSError):  # a killed helper's pipe is broken
            process.stdin.close()  # the helper ends at the end of its input
        if self._stopped.is_set() and process.poll() is None:
            process.kill()  # the load failed or was stopped: no need to wait for a parse
        process.wait()
        process.stdout.close()


def merged(events: Iterator, lane: HelperLane | None) -> Iterator:
    """The loading process's own events and the helper's answers, as each comes."""
    if lane is None:
        yield from events
        return
    try:
        yield from read_ahead_many(events, lane.results(), on_stop=lane.stop)
    finally:
        lane.stop()
        lane.join()


def read_ahead_many(*sources: Iterator, on_stop=None) -> Iterator:
    """The items of every source, each produced on a thread of its own, as they come; an
    exception in one is raised here; closing this stops them all (`on_stop` first: it must
    unblock a source that waits)."""
    ready: queue.Queue = queue.Queue(maxsize=len(sources))
    stop = threading.Event()
    end = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=WAIT)
                return True
            except queue.Full:
                continue
        return False

    def produce(source: Iterator) -> None:
        try:
            for item in source:
                if not put((item, None)):
                    return
            put((end, None))
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            put((end, error))
        finally:
            close = getattr(source, "close", None)
            if close:
                close()

    threads = [
        threading.Thread(target=produce, args=(source,), name="edxorg-merge", daemon=True)
        for source in sources
    ]
    for thread in threads:
        thread.start()
    running = len(threads)
    try:
        while running:
            item, error = ready.get()
            if item is end:
                if error is not None:
                    raise error
                running -= 1
                continue
            yield item
    finally:
        stop.set()
        if on_stop is not None:
            on_stop()
        for thread in threads:
            thread.join()


def _serve(scratch: str, load_id: str) -> None:
    """The helper process: parses each file it is sent (file, local path, column order) and
    answers with a Parsed (or the exception), until its input ends."""
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # nothing else lands in the answers' pipe
    use_lean_memory_pool()
    leave_pandas_out()
    requests = sys.stdin.buffer
    number = 0
    while True:
        try:
            file, source, order = pickle.load(requests)
        except EOFError:
            # Nothing to clean up (every file written is closed, every answer flushed), and
            # the load waits for this process to end: ending the interpreter properly, pyarrow
            # and all, took ~0.1 s at the end of the load.
            sys.stderr.flush()
            os._exit(0)
        number += 1
        try:
            prefix = f"helper{os.getpid()}-{number}"
            answer = _parse_one(file, source, order, scratch, load_id, prefix)
        except Exception as error:  # noqa: BLE001 - raised in the loading process
            answer = error
        pickle.dump(answer, answers)
        answers.flush()


def _parse_one(
    file: LandingFile, source: str, order: list[str], scratch: str, load_id: str, prefix: str
) -> Parsed:
    """One large file through the loading process's own stages (file_rows.read_files with the
    file as its own, staged_files.write_files), its columns in `order`."""
    scanned = read_ahead(scan_files(iter([(file, source, None)])), "edxorg-scan")
    parsed = read_ahead(read_files(scanned, load_id, {file.url}), "edxorg-read")
    events = read_ahead(
        write_files(parsed, scratch, lambda rows: arranged(rows, order), prefix), "edxorg-write"
    )
    written = None
    with closing(events):
        for event in events:
            if isinstance(event, Written):
                written = event
            else:
                header = event.tsv.header if event.tsv is not None else None
                return Parsed(written, header, event.rejects, event.rows)
    raise RuntimeError(f"no end of file for {file.url}")


if __name__ == "__main__":
    # Through the module's own name, so that what it pickles (Parsed, Written) names a module
    # the loading process knows, not `__main__`.
    from edxorg_s3_ingest.loading import parse_helper

    parse_helper._serve(sys.argv[1], sys.argv[2])
