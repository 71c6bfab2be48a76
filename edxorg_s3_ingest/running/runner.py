"""Loading several tables (the CLI): each is a table_load.TableLoad (SPEC §6, §7).

`load_tables` first finds, in this process and without dlt or pyiceberg, the tables with nothing
new (a run with nothing new only lists and reads the tables' states, SPEC §7); the others load
one after the other in this process, or several at once in worker processes (workers.py; the
CLI's default is one worker per CPU).

Importing this module imports neither dlt nor boto3 nor pyarrow: they are imported where they
are used, so that a run with nothing new never pays for them.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from edxorg_s3_ingest.loading.spare_cores import use_spare_cores
from edxorg_s3_ingest.loading.table_load import load_table, unchanged_report
from edxorg_s3_ingest.report import RunReport, TableReport
from edxorg_s3_ingest.running.fork_server import stop_fork_server
from edxorg_s3_ingest.tables import TABLES
from edxorg_s3_ingest.timeline import mark

if TYPE_CHECKING:
    from edxorg_s3_ingest.settings import Settings

log = logging.getLogger(__name__)

LISTING_THREADS = 8
"""Tables listed at once when a run looks for the ones with nothing new."""


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
    on_wait: Callable[[str | None], None] | None = None,
) -> RunReport:
    """Loads tables, `workers` at a time (default: one per CPU; 1: one after the other in this
    process); a failed table does not stop the others. The landing zone is checked first, once
    (landing/check.py): when it cannot be listed no table starts, every table is reported
    failed and the run's error is the check's one message; `on_wait` gets its retries.

    `on_start` gets each table's report as it starts; with worker processes it is this
    process's copy, which the worker's progress updates. `on_done` gets each final report, in
    the order tables finish; `on_log` each log record of a worker (default: logged here).
    The run's report lists the tables in the requested order.
    """
    from edxorg_s3_ingest.landing.check import table_folders
    from edxorg_s3_ingest.landing.listing import DB_TABLE, LandingZoneError

    run = RunReport(settings.environment, {})
    try:
        folders = table_folders(settings.bucket_url, on_wait)
    except LandingZoneError as error:
        return _not_started(run, tables, str(error))
    # The bytes each table's load reads, when several tables load at once (their order).
    sizes: dict[str, int] | None = {} if worker_count(workers, len(tables)) > 1 else None
    reports = {} if full_refresh else _unchanged_tables(tables, settings, sizes)
    mark("listed")
    for report in reports.values():
        if on_start:
            on_start(report)
        if on_done:
            on_done(report)
    left = [table for table in tables if table not in reports]
    count = worker_count(workers, len(left))
    if count > 1:
        from edxorg_s3_ingest.running.workers import load_in_workers

        reports |= load_in_workers(
            left, settings, full_refresh, count, on_start, on_done, on_log, sizes or None
        )
    else:
        # A fork server the CLI started before listing has nothing to fork: it ends now, and
        # its core goes to this load.
        stop_fork_server()
        # One table at a time in this process: the other CPUs the run may use are spare cores
        # for its parse helper (loading/parse_helper.py).
        spare = (workers if workers is not None else available_cpus()) - 1
        use_spare_cores(threading.Semaphore(spare) if spare > 0 else None)
        try:
            for table in left:
                reports[table] = load_table(table, settings, full_refresh, on_start)
                if on_done:
                    on_done(reports[table])
        finally:
            use_spare_cores(None)
    run.tables = {table: reports[table] for table in tables}
    unknown = sorted(set(folders) - set(TABLES))
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


def _not_started(run: RunReport, tables: list[str], error: str) -> RunReport:
    run.error = error
    run.not_started = True
    for table in tables:
        run.tables[table] = TableReport(
            table, status="failed", error="not started: the landing zone could not be listed"
        )
    return run


def _unchanged_tables(
    tables: list[str], settings: Settings, sizes: dict[str, int] | None
) -> dict[str, TableReport]:
    """The reports of the tables with nothing new, found before any table is loaded: a run
    with nothing new lists the landing zone (and reads the lake's states) and ends, with no
    worker process started. S3
    listings overlap (they wait on the network). `sizes`, if given (several tables may load at
    once), gets the bytes each other table's load reads, from the same listings; and once two
    tables are known to need a load, the worker processes' fork server starts."""
    from edxorg_s3_ingest.landing.aws import is_s3

    if settings.environment != "dev":
        from edxorg_s3_ingest.stores.lake_state import lake_answers

        if not lake_answers(settings.lake_url):
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
            from edxorg_s3_ingest.running.workers import start_fork_server

            start_fork_server(settings.environment)

        return unchanged_report(table, settings, sizes, must_load if sizes is not None else None)

    if not is_s3(settings.bucket_url) and settings.environment == "dev":
        # A local listing and state have no wait to overlap.
        found = [unchanged(table) for table in tables]
    else:
        with ThreadPoolExecutor(max_workers=LISTING_THREADS) as pool:
            found = list(pool.map(unchanged, tables))
    return {report.table: report for report in found if report is not None}
