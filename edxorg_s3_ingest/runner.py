"""Loading tables: one dlt pipeline run per table, guarded, timed and reported (SPEC §6, §7).

`load_table` loads one table in this process (the Dagster component, and the CLI with
`--workers 1`). `load_tables` loads several (the CLI): first it finds, in this process and
without dlt, the dev tables with nothing new (a run with nothing new only lists, SPEC §7); the
others load one after the other in this process, or several at once in worker processes
(workers.py; the CLI's default is one worker per CPU).

Importing this module imports neither dlt nor boto3 nor pyarrow: they are imported where they
are used, so that a run with nothing new never pays for them.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from edxorg_s3_ingest.report import RunReport, TableReport
from edxorg_s3_ingest.tables import TABLES, destination_table

if TYPE_CHECKING:
    from edxorg_s3_ingest.settings import Settings

log = logging.getLogger(__name__)

LISTING_THREADS = 8
"""Tables listed at once when a run looks for the ones with nothing new."""
CHANGED_RETRIES = 2
"""Times a table is read again, from a new listing, when a listed file vanished or changed
before it was read (nothing of the failed attempt was committed)."""


class TableBusyError(RuntimeError):
    pass


@contextmanager
def table_lock(settings: Settings, table: str) -> Iterator[None]:
    """One run per table at a time; a second one fails at once with a clear message."""
    from edxorg_s3_ingest.loads import PIPELINE_PREFIX

    settings.pipelines_dir.mkdir(parents=True, exist_ok=True)
    path = Path(settings.pipelines_dir) / f"{PIPELINE_PREFIX}{table}.lock"
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise TableBusyError(
                f"{table} is being loaded by another run (pid {holder}, lock {path}); "
                "its table is left to that run. Try again when it has finished."
            ) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        yield


def finish_pending_loads(pipeline) -> None:
    """Completes what a killed run left (SPEC §7) before this run lists anything.

    dlt's `run` would otherwise only finish the pending package and return without extracting:
    the run would succeed with new exports unread, and a `--full-refresh` would not refresh.

    A kill between dlt's two steps of committing a normalized package (renaming it into the
    load folder, then deleting its extracted copy) leaves the package in both places, and dlt
    would fail on it forever (it normalizes it again and cannot rename onto the existing copy):
    the extracted copy of a package that is already normalized or loaded is dropped first.
    """
    done = {*pipeline.list_normalized_load_packages(), *pipeline.list_completed_load_packages()}
    if stale := [load_id for load_id in pipeline.list_extracted_load_packages() if load_id in done]:
        extracted = pipeline._get_normalize_storage().extracted_packages
        for load_id in stale:
            extracted.delete_package(load_id)
    if pipeline.has_pending_data:
        pipeline.normalize()
        pipeline.load()


def load_table(
    table: str,
    settings: Settings,
    full_refresh: bool = False,
    on_start: Callable[[TableReport], None] | None = None,
) -> TableReport:
    """Runs one table's pipeline; never raises for a failed table, the report says why."""
    from edxorg_s3_ingest.stores import store_for

    report = TableReport(table)
    report.start()
    if on_start:
        on_start(report)
    try:
        store = store_for(settings)
        report.destination = store.uri(destination_table(table))
        # A missing or denied lake fails here, before any landing-zone file is read.
        store.preflight()
        with table_lock(settings, table):
            if full_refresh or not _unchanged(table, settings, report):
                _run_pipeline(table, settings, report, full_refresh)
        report.table_rows = store.row_count(destination_table(table))
    except Exception as error:  # noqa: BLE001 - every failure becomes the table's report
        report.finish("failed", error=describe(error))
        return report
    if report.status == "no_prod_files":
        report.finish("no_prod_files")
    else:
        report.finish("loaded" if report.files_loaded or report.rows_rejected else "unchanged")
    return report


def _run_pipeline(table: str, settings: Settings, report: TableReport, full_refresh: bool) -> None:
    """The table's dlt pipeline run, after what a killed run left is finished; read again from a
    new listing when a listed file changed before it was read."""
    from edxorg_s3_ingest.aws import caused_by
    from edxorg_s3_ingest.landing import LandingChangedError
    from edxorg_s3_ingest.loads import table_pipeline, table_source

    for attempt in range(CHANGED_RETRIES + 1):
        pipeline = table_pipeline(table, settings, report)
        finish_pending_loads(pipeline)
        source = table_source(table, settings, report)
        try:
            pipeline.run(source, refresh="drop_resources" if full_refresh else None)
            return
        except Exception as error:
            if attempt == CHANGED_RETRIES or not caused_by(error, LandingChangedError):
                raise
            log.warning("%s: %s; reading the table again", table, describe(error))
            _restart(report)


def _unchanged(
    table: str,
    settings: Settings,
    report: TableReport,
    sizes: dict[str, int] | None = None,
    must_load: Callable[[], None] | None = None,
) -> bool:
    """SPEC §7, "a no-op run does one listing and nothing else": when no killed run left work
    and the table's listing holds nothing its state does not already describe (no new or
    changed file version, no new empty file, no file gone), dlt is not run at all (it would
    extract an empty load package, then normalize and drop it). Asked under the table's lock.
    The report gets what the source would have reported (source.read_table), from the same
    plan. With `sizes`, the table is listed even when it must be loaded, and `sizes[table]`
    gets the bytes its load reads (the order of loads in workers: largest first); `must_load`
    is called as soon as the table is known to need a load."""
    from edxorg_s3_ingest.incremental import preview
    from edxorg_s3_ingest.landing import list_prod_files
    from edxorg_s3_ingest.loads import has_pending_work, stored_resource_state

    state = stored_resource_state(settings, table)
    first_or_pending = state is None or has_pending_work(settings, table)
    if first_or_pending and must_load:
        must_load()
    if first_or_pending and sizes is None:
        return False
    listing = list_prod_files(settings.bucket_url, table)
    work = preview(listing.files, state or {})
    if sizes is not None:
        sizes[table] = sum(file.size for file in work.to_read)
    if first_or_pending:
        return False
    if not work.changes_nothing:
        if must_load:
            must_load()
        return False
    report.files_seen = work.files_seen
    report.files_skipped = work.files_skipped
    report.misplaced_files = listing.misplaced
    if not listing.files:
        report.status = "no_prod_files"
    return True


def unchanged_in_dev(
    table: str,
    settings: Settings,
    sizes: dict[str, int] | None = None,
    must_load: Callable[[], None] | None = None,
) -> TableReport | None:
    """The report of a dev table with nothing new, decided in this process with neither dlt nor
    pyarrow (`_unchanged`), or None when the table must be loaded (or a load would report a
    problem: a busy table, a failed listing). The row count is the one the state records
    (SPEC §5: the table holds exactly those rows) rather than one read from every Parquet
    footer. Not for qa and production, whose loads check the lake first (store.preflight)."""
    from edxorg_s3_ingest.incremental import expected_rows
    from edxorg_s3_ingest.loads import stored_resource_state

    if settings.environment != "dev":
        return None
    report = TableReport(table)
    report.start()
    try:
        with table_lock(settings, table):
            if not _unchanged(table, settings, report, sizes, must_load):
                return None
            state = stored_resource_state(settings, table)
    except Exception:  # noqa: BLE001 - the table's load meets it again and reports it
        return None
    report.destination = str(settings.data_dir / destination_table(table))  # ParquetStore.uri
    report.table_rows = expected_rows(state or {})
    report.finish(report.status if report.status == "no_prod_files" else "unchanged")
    return report


def worker_count(requested: int | None, tables: int) -> int:
    """The worker processes of a run: `requested`, else one per available CPU; never more than
    tables."""
    wanted = requested if requested is not None else available_cpus()
    return max(1, min(wanted, tables))


CGROUP = Path("/sys/fs/cgroup")


def available_cpus(cgroup: Path = CGROUP) -> int:
    """The CPUs this process may use: those it may run on, at most its container's CPU limit
    (the cgroup's CPU quota over its period, rounded up): in a pod limited to 2 CPUs on a
    64-core node, 2 workers rather than 44, each holding a table's load in memory."""
    affinity = getattr(os, "sched_getaffinity", None)  # Linux
    cpus = len(affinity(0)) if affinity else (os.cpu_count() or 1)
    quota = _cpu_quota(cgroup)
    return max(1, min(cpus, quota)) if quota else cpus


def _cpu_quota(cgroup: Path) -> int | None:
    """The cgroup's CPU limit in whole CPUs (v2 `cpu.max`, else v1 `cpu.cfs_quota_us` and
    `cpu.cfs_period_us`), or None: no limit, or no cgroup to read."""
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()
    except (OSError, ValueError):
        try:
            quota = (cgroup / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (cgroup / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:  # "max": no limit
        return None
    if quota_us <= 0 or period_us <= 0:  # v1's -1: no limit
        return None
    return math.ceil(quota_us / period_us)


def load_tables(
    tables: list[str],
    settings: Settings,
    full_refresh: bool = False,
    on_start: Callable[[TableReport], None] | None = None,
    on_done: Callable[[TableReport], None] | None = None,
    workers: int | None = None,
    on_log: Callable[[logging.LogRecord], None] | None = None,
) -> RunReport:
    """Loads tables, `workers` at a time (default: one per CPU; 1: one after the other in this
    process); a failed table does not stop the others.

    `on_start` gets each table's report as it starts; with worker processes it is this
    process's copy, which the worker's progress updates. `on_done` gets each final report, in
    the order tables finish; `on_log` each log record of a worker (default: logged here).
    The run's report lists the tables in the requested order.
    """
    from edxorg_s3_ingest.landing import DB_TABLE, unknown_table_folders

    run = RunReport(settings.environment, {})
    # The bytes each table's load reads, when several tables load at once (their order).
    sizes: dict[str, int] | None = {} if worker_count(workers, len(tables)) > 1 else None
    reports = {} if full_refresh else _unchanged_tables(tables, settings, sizes)
    for report in reports.values():
        if on_start:
            on_start(report)
        if on_done:
            on_done(report)
    left = [table for table in tables if table not in reports]
    count = worker_count(workers, len(left))
    if count > 1:
        from edxorg_s3_ingest.workers import load_in_workers

        reports |= load_in_workers(
            left, settings, full_refresh, count, on_start, on_done, on_log, sizes or None
        )
    else:
        for table in left:
            reports[table] = load_table(table, settings, full_refresh, on_start)
            if on_done:
                on_done(reports[table])
    run.tables = {table: reports[table] for table in tables}
    # Folders under db_table/ that no table reads: one listing, once some table could list.
    listed = any(report.status != "failed" for report in run.tables.values())
    unknown = unknown_table_folders(settings.bucket_url, TABLES) if listed else []
    if unknown:
        log.warning(
            "ignored %d unknown table folder(s) under %s/%s/ (not edX tables this loader knows; "
            "see --list-tables): %s",
            len(unknown),
            settings.bucket_url.rstrip("/"),
            DB_TABLE,
            ", ".join(repr(name) for name in unknown),
        )
    run.unknown_table_folders = unknown
    if tables and all(report.status == "no_prod_files" for report in run.tables.values()):
        run.error = (
            f"no prod files for any of the {len(tables)} requested table(s) under "
            f"{settings.bucket_url.rstrip('/')}/db_table/<table>/prod/: "
            "is the bucket URL or prefix right?"
        )
    return run


def _unchanged_tables(
    tables: list[str], settings: Settings, sizes: dict[str, int] | None
) -> dict[str, TableReport]:
    """The reports of the dev tables with nothing new, found before any table is loaded: a run
    with nothing new lists the landing zone and ends, with no worker process started. S3
    listings overlap (they wait on the network). `sizes`, if given (several tables may load at
    once), gets the bytes each other table's load reads, from the same listings; and once two
    tables are known to need a load, the worker processes' fork server starts."""
    from edxorg_s3_ingest.aws import is_s3

    if settings.environment != "dev":
        return {}
    to_load: set[str] = set()
    lock = threading.Lock()

    def unchanged(table: str) -> TableReport | None:
        def must_load() -> None:
            with lock:
                to_load.add(table)
                if len(to_load) != 2:
                    return
            # Worker processes will load them: the fork server's imports (~0.5 s) run on the
            # other core while this process lists the other tables.
            from edxorg_s3_ingest.workers import start_fork_server

            start_fork_server()

        return unchanged_in_dev(table, settings, sizes, must_load if sizes is not None else None)

    if not is_s3(settings.bucket_url):  # a local listing has no wait to overlap
        found = [unchanged(table) for table in tables]
    else:
        with ThreadPoolExecutor(max_workers=LISTING_THREADS) as pool:
            found = list(pool.map(unchanged, tables))
    return {report.table: report for report in found if report is not None}


def describe(error: BaseException) -> str:
    """The innermost cause, which names the thing to fix, rather than dlt's step wrapper; with
    any credential value of this process masked (it must never reach a report or a log)."""
    from edxorg_s3_ingest.aws import redact

    while error.__cause__ is not None or error.__context__ is not None:
        inner = error.__cause__ or error.__context__
        if type(error).__module__.startswith("dlt"):
            error = inner
        else:
            break
    return redact(f"{type(error).__name__}: {error}")


def _restart(report: TableReport) -> None:
    """Zeroes what a failed attempt counted, before the table is read again."""
    for name in (
        "files_seen",
        "files_planned",
        "files_loaded",
        "files_skipped",
        "rows_loaded",
        "rows_rejected",
        "courses_replaced",
        "bytes_read",
    ):
        setattr(report, name, 0)
    report.status = "running"
    report.load_id = None
    report.misplaced_files = []
