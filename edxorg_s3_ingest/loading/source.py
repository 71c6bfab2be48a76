"""The body of each table's dlt resource (resources.py): streams the rows of its new prod exports.

Each resource reads the files its table's plan names (work.py: one per re-exported course, from
one listing and the table's state in its store) and hands every file's rows, with the lineage
columns of SPEC §4, to dlt as Parquet. What it read is written into the load package state,
where the destination finds it to replace exactly those courses (consolidation.py), and into the
table's new state, which the store commits with the rows: state and data advance together.

Speed and memory (benchmarks/): the stages overlap, each on a thread of its own and mostly in
pyarrow with the GIL released, with at most threads.READ_AHEAD items between two of them. Files
are fetched in order: local ones read in place, remote ones FETCH_CONCURRENCY GETs at a time (a
small pool: S3 answers each GET after a round trip, whatever its size); a small file
(SMALL_FILE_BYTES) is fetched into memory, never to disk. A scan thread pre-scans each file
(its quoting). A read thread parses it and appends the lineage columns (lineage.py); small files
are parsed TOGETHER_BYTES at a time in one pyarrow read per header (`tsv.read_together`). A
write thread writes the rows as Parquet (staged_files.py); the main thread hands each finished
Parquet file to dlt as an imported file (`dlt.mark.with_file_import`: a hard link, not a second
encoding). A large source file (the MAX_OWN_FILES largest of OWN_FILE_BYTES or more) gets a
Parquet file of its own: its staged file holds exactly one course, which the store publishes
as it is (a hard link); the others share files, which the dev store publishes as they are too,
as packs of courses (parquet_store.py). Arrow allocates from jemalloc (memory_pool.py).
"""

import collections
import os
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from typing import TYPE_CHECKING, NamedTuple

import dlt

from edxorg_s3_ingest.landing.fetching import fetch
from edxorg_s3_ingest.landing.listing import LandingFile, is_local
from edxorg_s3_ingest.loading.file_rows import read_files, scan_files
from edxorg_s3_ingest.loading.memory_pool import leave_pandas_out, use_lean_memory_pool
from edxorg_s3_ingest.loading.parse_helper import HELPER_MIN_BYTES, HelperLane, merged
from edxorg_s3_ingest.loading.spare_cores import spare_cores
from edxorg_s3_ingest.loading.table_load import SCRATCH
from edxorg_s3_ingest.reading.lineage import rejects_batch
from edxorg_s3_ingest.reading.staged_files import Columns, Written, write_files
from edxorg_s3_ingest.reading.threads import read_ahead
from edxorg_s3_ingest.reading.tsv import Reject
from edxorg_s3_ingest.report import TableReport
from edxorg_s3_ingest.state.work import Work
from edxorg_s3_ingest.tables import REJECTS_TABLE, destination_table
from edxorg_s3_ingest.timeline import mark

if TYPE_CHECKING:
    from edxorg_s3_ingest.stores.lake_uploads import EarlyUploads

MANIFEST_KEY = "edxorg_s3_ingest"


def manifest() -> dict:
    """This load package's record of what was read, per table (see consolidation.py)."""
    return dlt.current.load_package_state()["state"].setdefault(MANIFEST_KEY, {})


SCAN_AHEAD = 1
"""Files pre-scanned ahead of the one being parsed."""
SMALL_FILE_BYTES = 1 << 20
"""A file this small is fetched into memory (never to disk) and read with others
(`tsv.read_together`)..."""
FETCH_CONCURRENCY_ENV = "EDXORG_S3_INGEST_FETCH_CONCURRENCY"
FETCH_CONCURRENCY = 8
"""GETs in flight at once for a landing zone on S3 (or another remote filesystem), so that
many small files are not one round trip each; `EDXORG_S3_INGEST_FETCH_CONCURRENCY` overrides
it (1: one file after the other). Local files are read in place, one after the other."""
FETCH_AHEAD_BYTES = 64 << 20
"""Bytes of files being fetched or fetched and not yet pre-scanned, at most (a larger file is
fetched alone)."""
HELPER_MIN_MB_ENV = "EDXORG_S3_INGEST_HELPER_MIN_MB"
"""Overrides HELPER_MIN_BYTES (parse_helper.py): the large files' MB a load needs to be worth
a parse helper."""
OWN_FILE_BYTES = 2 << 20
"""A source file this large gets a Parquet file of its own (one staged file, one course: the
store publishes it as it is, with no second encoding)..."""
MAX_OWN_FILES = 64
"""... but only the largest MAX_OWN_FILES of a run; the others share Parquet files of up to
SHARED_FILE_BYTES source bytes. Few staged files matter: dlt loads each as a job (it is
extracted, normalized and loaded, and every job rewrites the whole package state); with 1,000
jobs on dlt's 20 loader threads, dlt has crashed (SIGSEGV in orjson, 1 run in 5; destination.py
runs 4 jobs at most at once)."""


def scratch_root() -> str | None:
    """Where a load writes its downloads and Parquet files: `scratch/` in the pipeline's working
    folder. There, on the filesystem of dlt's load packages, dlt hard-links the Parquet files
    rather than copying them; and, one run of a table at a time (table_load.table_lock), each run
    empties it first, so that what a killed run left (a large file's download) goes with the
    next run. Outside a pipeline: the system's temporary folder (None)."""
    try:
        working_dir = dlt.current.pipeline().working_dir
    except Exception:  # noqa: BLE001 - no active pipeline
        return None
    root = os.path.join(working_dir, SCRATCH)
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    return root


def read_table(
    table: str, work: Work, report: TableReport, uploads: "EarlyUploads | None" = None
) -> Iterator:
    """The body of one table's resource: the files its plan reads (table_load.py planned it
    from one listing and the table's state in the store); each finished Parquet file is also
    handed to `uploads`, if any (its store's data files, uploaded while the load reads on)."""
    use_lean_memory_pool()
    leave_pandas_out()
    if not work.listing.files:
        return
    state, to_read = work.state, work.plan.to_read
    load_id = dlt.current.load_package_state()["load_id"]
    if to_read or work.plan.new_empty:
        report.load_id = load_id
    rejected: dict[str, int] = {}
    for file in work.plan.new_empty:
        report.rows_rejected += 1
        yield _rejects(table, file, [Reject(None, "empty_file", b"")], load_id)
    courses: dict[str, dict] = {}
    columns = Columns.of(destination_table(table))
    own = {file.url for file in _largest(to_read, MAX_OWN_FILES, OWN_FILE_BYTES)}
    mark(f"read {table}")
    with tempfile.TemporaryDirectory(prefix="edxorg-", dir=scratch_root()) as scratch:
        fetched = _fetched(to_read, scratch, own)
        lane = _helper_lane(to_read, own, scratch, load_id, columns)
        if lane is not None:  # some large files are parsed by a helper process
            fetched = lane.divert(fetched, own)
        scanned = read_ahead(scan_files(fetched), "edxorg-scan", SCAN_AHEAD)
        parsed = read_ahead(read_files(scanned, load_id, own), "edxorg-read")
        events = merged(read_ahead(write_files(parsed, scratch, columns), "edxorg-write"), lane)
        with closing(events):  # the threads end before their scratch folder goes
            for event in events:
                if isinstance(event, Written):
                    if uploads is not None and event.rows:
                        uploads.add(event.path)
                    yield dlt.mark.with_file_import(
                        event.path, "parquet", event.rows, hints=event.schema.empty_table()
                    )
                    os.unlink(event.path)  # dlt has linked (or copied) it into its package
                    continue
                file, tsv, rejects, rows = event
                report.rows_loaded += rows
                rejected[file.course_id] = len(rejects)
                if rejects:
                    report.rows_rejected += len(rejects)
                    yield _rejects(table, file, rejects, load_id)
                report.bytes_read += file.size
                if tsv is not None:
                    report.files_loaded += 1
                    courses[file.course_id] = {
                        "url": file.url,
                        "modified": file.modified.isoformat(),
                        "rows": rows,
                        "columns": tsv.header,
                    }
    manifest()[destination_table(table)] = courses
    work.courses_read = courses
    # What the table must hold per course (the reconciliation check compares with it), and the
    # rest of what `edxorg-s3-ingest --loaded-files` shows.
    for key, values in (
        ("rows", {course: entry["rows"] for course, entry in courses.items()}),
        ("rejected", rejected),
        ("loads", dict.fromkeys(courses, load_id)),
    ):
        state.setdefault(key, {}).update(values)


class _Fetched(NamedTuple):
    """One file's bytes (a small file), or a local path holding them, and the scratch folder
    of its download (None: nothing to remove)."""

    file: LandingFile
    source: str | bytes
    folder: str | None


def fetch_concurrency() -> int:
    """FETCH_CONCURRENCY, or the positive integer in EDXORG_S3_INGEST_FETCH_CONCURRENCY."""
    value = os.environ.get(FETCH_CONCURRENCY_ENV, "").strip()
    return max(int(value), 1) if value.isdigit() else FETCH_CONCURRENCY


def _fetch_one(number: int, file: LandingFile, scratch: str, own: set[str]) -> _Fetched:
    """A small file's bytes; a large one's local path (the file itself, or a download into a
    folder of its own, removed once the file is read)."""
    if file.size <= SMALL_FILE_BYTES and file.url not in own:
        return _Fetched(file, fetch(file.url, scratch, file.size, in_memory=True), None)
    if is_local(file.url):
        return _Fetched(file, fetch(file.url, scratch, file.size), None)
    folder = os.path.join(scratch, f"fetch-{number}")
    os.mkdir(folder)
    return _Fetched(file, fetch(file.url, folder, file.size), folder)


def _fetched(files: list[LandingFile], scratch: str, own: set[str]) -> Iterator[_Fetched]:
    """Each file fetched, in order. Remote files are fetched `fetch_concurrency()` at a time
    (a small thread pool: S3 answers each GET after a round trip, whatever its size), at most
    FETCH_AHEAD_BYTES ahead of the consumer; an error is raised when its file's turn comes.
    Runs on the scan thread."""
    concurrency = fetch_concurrency()
    if concurrency == 1 or all(is_local(file.url) for file in files):
        for number, file in enumerate(files):
            yield _fetch_one(number, file, scratch, own)
        return
    pending: collections.deque = collections.deque()
    ahead = 0
    with ThreadPoolExecutor(concurrency, thread_name_prefix="edxorg-fetch") as pool:
        try:
            for number, file in enumerate(files):
                while pending and (
                    len(pending) >= concurrency or ahead + file.size > FETCH_AHEAD_BYTES
                ):
                    ahead -= pending[0][0].size
                    yield pending.popleft()[1].result()
                pending.append((file, pool.submit(_fetch_one, number, file, scratch, own)))
                ahead += file.size
            while pending:
                yield pending.popleft()[1].result()
        finally:  # stopped, or failed: nothing more starts, what runs ends with the pool
            for _, future in pending:
                future.cancel()


def _helper_lane(
    files: list[LandingFile], own: set[str], scratch: str, load_id: str, columns: Columns
) -> HelperLane | None:
    """A lane to a parse helper process, when this process may take a spare core and the
    load's large files are worth one (parse_helper.py)."""
    tokens = spare_cores()
    own_bytes = sum(file.size for file in files if file.url in own)
    if tokens is None or own_bytes < helper_min_bytes():
        return None
    return HelperLane(scratch, load_id, columns, tokens)


def helper_min_bytes() -> int:
    """HELPER_MIN_BYTES, or the whole MB in EDXORG_S3_INGEST_HELPER_MIN_MB."""
    value = os.environ.get(HELPER_MIN_MB_ENV, "").strip()
    return int(value) << 20 if value.isdigit() else HELPER_MIN_BYTES


def _largest(files: list[LandingFile], count: int, least: int) -> list[LandingFile]:
    """The `count` largest files of at least `least` bytes."""
    large = [file for file in files if file.size >= least]
    return sorted(large, key=lambda file: (-file.size, file.url))[:count]


def _rejects(table: str, file: LandingFile, rejects: list[Reject], load_id: str):
    # with_table_name fails on Arrow items of a resource with a fixed table_name (dlt 1.31):
    # a table variant with its own hints is the supported way to send them elsewhere.
    return dlt.mark.with_hints(
        rejects_batch(table, file, rejects, load_id),
        dlt.mark.make_hints(table_name=REJECTS_TABLE),
        create_table_variant=True,
    )
