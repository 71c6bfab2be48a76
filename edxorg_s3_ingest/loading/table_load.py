"""One table's load, from start to end: the one place that owns its lock, its store, its state
and the question "is there work?" (SPEC §5, §7, §10). The CLI's workers, the Dagster assets,
the checks and the landing-zone sensor all ask a `TableLoad`.

A load reads the table's state from its store (table_state.py), lists the landing zone once,
plans, and, when there is work, runs the table's dlt pipeline in a working folder emptied first:
nothing of an earlier run's working area is ever needed, so a run in a fresh pod plans and does
exactly what a run on a warm disk does. The store commits the rows and the new state together,
and only if no other run committed to the table meanwhile; if one did, the load plans again.

Importing this module imports neither dlt nor boto3 nor pyarrow: a run with nothing new never
pays for them.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING

from edxorg_s3_ingest.report import TableReport
from edxorg_s3_ingest.tables import destination_table
from edxorg_s3_ingest.timeline import mark

if TYPE_CHECKING:
    from edxorg_s3_ingest.settings import Settings
    from edxorg_s3_ingest.state.table_state import StoredState
    from edxorg_s3_ingest.state.work import Work
    from edxorg_s3_ingest.stores import TableStore

log = logging.getLogger(__name__)

PIPELINE_PREFIX = "edxorg_s3__"
STAGING = "consolidation"
"""The working folder's staged files (consolidation.py)..."""
SCRATCH = "scratch"
"""... and downloads and Parquet files being written (source.py)."""
RETRIES = 2
"""Times a table is planned and read again: when a listed file vanished or changed before it
was read, or when another run committed to the table first (nothing of the attempt was
committed either way)."""


class TableBusyError(RuntimeError):
    pass


def pipeline_name(table: str) -> str:
    return f"{PIPELINE_PREFIX}{table}"


class TableLoad:
    def __init__(
        self,
        table: str,
        settings: Settings,
        report: TableReport | None = None,
        full_refresh: bool = False,
    ) -> None:
        self.table = table
        self.table_name = destination_table(table)
        self.settings = settings
        self.report = report or TableReport(table)
        self.full_refresh = full_refresh

    @cached_property
    def store(self) -> TableStore:
        from edxorg_s3_ingest.stores import store_for

        return store_for(self.settings)

    @property
    def working_dir(self):
        """The table's dlt pipeline folder: a disposable working area, emptied at each start."""
        return self.settings.pipelines_dir / pipeline_name(self.table)

    def stored(self, quick: bool = False) -> StoredState:
        """The table's state as its store holds it; read without pyarrow or dlt in dev, and
        with `quick` in the lake (with boto3 alone; lake_state.Unusual when the table is not
        as this loader writes it: its load will say what to fix)."""
        if self.settings.environment == "dev":
            from edxorg_s3_ingest.stores.parquet_state import read_state

            return read_state(self.settings.data_dir / self.table_name)
        if quick:
            from edxorg_s3_ingest.stores.lake_state import read_lake_state

            return read_lake_state(
                self.settings.lake_url, self.settings.glue_database, self.table_name
            )
        return self.store.read_state(self.table_name)

    @property
    def destination(self) -> str:
        """Where the table is (the store's `uri`, known without building the store)."""
        if self.settings.environment == "dev":
            return str(self.settings.data_dir / self.table_name)
        return f"{self.settings.lake_url.rstrip('/')}/{self.table_name}"

    def work(self, loading: bool = False, quick: bool = False) -> Work:
        """One listing and the stored state, and the plan made from both (`loading`: by the
        load that carries it out, where a test may stop it: crashpoints.py; `quick`: see
        `stored`)."""
        from edxorg_s3_ingest.landing.listing import list_prod_files
        from edxorg_s3_ingest.state.incremental import copied, plan, preview
        from edxorg_s3_ingest.state.table_state import DamagedStateError, StoredState
        from edxorg_s3_ingest.state.work import Work

        try:
            stored = self.stored(quick)
        except DamagedStateError as error:
            if not self.full_refresh:  # a rebuild needs nothing of a damaged state
                raise
            log.warning("%s; rebuilding it", error)
            stored = StoredState(version=error.version)
        listing = list_prod_files(self.settings.bucket_url, self.table)
        state = {} if self.full_refresh else copied(stored.state)
        decide = plan if loading else preview
        return Work(listing, stored, decide(listing.files, state), state, self.full_refresh)

    def has_work(self) -> bool:
        """Whether a load would change the table or its state (the landing-zone sensor's
        question, and the CLI's before it starts any worker)."""
        return not self.work().changes_nothing

    def run(self, on_start: Callable[[TableReport], None] | None = None) -> TableReport:
        """Loads the table; never raises for a failed table, the report says why."""
        report = self.report
        report.start()
        if on_start:
            on_start(report)
        try:
            report.destination = self.store.uri(self.table_name)
            # A missing or denied lake fails here, before any landing-zone file is read.
            self.store.preflight()
            with table_lock(self.settings, self.table):
                self._load()
            if report.table_rows is None:
                report.table_rows = self.store.row_count(self.table_name)
        except Exception as error:  # noqa: BLE001 - every failure becomes the table's report
            report.finish("failed", error=describe(error))
            return report
        if report.status == "no_prod_files":
            report.finish("no_prod_files")
        else:
            report.finish("loaded" if report.files_loaded or report.rows_rejected else "unchanged")
        return report

    def _load(self) -> None:
        """Plans and loads, planning again from a new listing and state when a listed file
        changed before it was read or another run committed to the table first."""
        from edxorg_s3_ingest.landing.aws import caused_by
        from edxorg_s3_ingest.landing.listing import LandingChangedError
        from edxorg_s3_ingest.state.table_state import StateMovedError, expected_rows

        self.store.recover(self.table_name)
        for leftover in (STAGING, SCRATCH):  # a killed run's data: gone, even with no work
            shutil.rmtree(self.working_dir / leftover, ignore_errors=True)
        for attempt in range(RETRIES + 1):
            work = self.work(loading=True)
            self._report_plan(work)
            if not work.listing.files:
                self.report.status = "no_prod_files"
                return
            if work.changes_nothing:
                self.report.table_rows = expected_rows(work.state)
                return
            try:
                self._run_pipeline(work)
                return
            except Exception as error:
                retried = (LandingChangedError, StateMovedError)
                if attempt == RETRIES or not any(caused_by(error, kind) for kind in retried):
                    raise
                log.warning("%s: %s; planning the table again", self.table, describe(error))
                self.report.replans += 1
                _restart(self.report)

    def _report_plan(self, work: Work) -> None:
        self.report.files_seen = work.plan.files_seen
        self.report.files_skipped = work.plan.files_skipped
        self.report.files_planned = len(work.plan.to_read)
        self.report.misplaced_files = work.listing.misplaced

    def _run_pipeline(self, work: Work) -> None:
        from edxorg_s3_ingest.loading.pipeline import table_pipeline, table_source

        shutil.rmtree(self.working_dir, ignore_errors=True)
        # The lake's data files are uploaded as the load writes them (lake_uploads.py); what
        # its commit does not use, a failed attempt's say, is aborted.
        uploads = self.store.early_uploads(self.table_name)
        try:
            pipeline, consolidator = table_pipeline(self, work, uploads)
            pipeline.run(table_source(self.table, work, self.report, uploads))
            if not consolidator.committed:
                # Nothing for dlt to load (every file read was header-only, or a re-upload
                # of the same content): the courses read and the new state are committed.
                consolidator.commit_state(f"{time.time():.6f}")
        finally:
            if uploads is not None:
                uploads.close()
        mark(f"committed {self.table}")


@contextmanager
def table_lock(settings: Settings, table: str) -> Iterator[None]:
    """One run per table and pipelines dir at a time (the working folder is the table's); a
    second one fails at once with a clear message. Runs with other pipelines dirs (other pods)
    are not stopped here: the store's commit refuses all but the first (table_state.py)."""
    settings.pipelines_dir.mkdir(parents=True, exist_ok=True)
    path = settings.pipelines_dir / f"{pipeline_name(table)}.lock"
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


def load_table(
    table: str,
    settings: Settings,
    full_refresh: bool = False,
    on_start: Callable[[TableReport], None] | None = None,
) -> TableReport:
    """Loads one table in this process (the Dagster assets; the CLI's workers)."""
    return TableLoad(table, settings, full_refresh=full_refresh).run(on_start)


def unchanged_report(
    table: str,
    settings: Settings,
    sizes: dict[str, int] | None = None,
    must_load: Callable[[], None] | None = None,
) -> TableReport | None:
    """The report of a table with nothing new, decided in this process with neither dlt nor
    pyarrow nor pyiceberg, or None when the table must be loaded (or a load would report a
    problem: a busy table, a failed listing, a lake table not as this loader writes it). With
    `sizes`, `sizes[table]` gets the bytes its load reads (the order of loads in workers:
    largest first); `must_load` is called as soon as the table is known to need a load. The row
    count is the one the state records (SPEC §5: the table holds exactly those rows)."""
    from edxorg_s3_ingest.state.table_state import expected_rows

    load = TableLoad(table, settings)
    report = load.report
    report.start()
    try:
        with table_lock(settings, table):
            work = load.work(quick=True)
    except Exception:  # noqa: BLE001 - the table's load meets it again and reports it
        if must_load:
            must_load()
        return None
    if sizes is not None:
        sizes[table] = sum(file.size for file in work.plan.to_read)
    if not work.changes_nothing:
        if must_load:
            must_load()
        return None
    load._report_plan(work)
    report.destination = load.destination
    report.table_rows = expected_rows(work.state)
    report.finish("no_prod_files" if not work.listing.files else "unchanged")
    return report


def describe(error: BaseException) -> str:
    """The innermost cause, which names the thing to fix, rather than dlt's step wrapper; with
    any credential value of this process masked (it must never reach a report or a log)."""
    from edxorg_s3_ingest.landing.aws import redact

    while error.__cause__ is not None or error.__context__ is not None:
        inner = error.__cause__ or error.__context__
        if type(error).__module__.startswith("dlt"):
            error = inner
        else:
            break
    return redact(f"{type(error).__name__}: {error}")


def _restart(report: TableReport) -> None:
    """Zeroes what a failed attempt counted, before the table is planned again."""
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
