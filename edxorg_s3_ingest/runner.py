"""Loading tables: one dlt pipeline run per table, guarded, timed and reported (SPEC §6, §7)."""

import fcntl
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from edxorg_s3_ingest import landing
from edxorg_s3_ingest.landing import LandingChangedError, redact, unknown_table_folders
from edxorg_s3_ingest.loads import PIPELINE_PREFIX, table_pipeline, table_source
from edxorg_s3_ingest.report import RunReport, TableReport
from edxorg_s3_ingest.settings import Settings
from edxorg_s3_ingest.stores import store_for
from edxorg_s3_ingest.tables import TABLES, destination_table

log = logging.getLogger(__name__)

CHANGED_RETRIES = 2
"""Times a table is read again, from a new listing, when a listed file vanished or changed
before it was read (nothing of the failed attempt was committed)."""


class TableBusyError(RuntimeError):
    pass


@contextmanager
def table_lock(settings: Settings, table: str) -> Iterator[None]:
    """One run per table at a time; a second one fails at once with a clear message."""
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
            for attempt in range(CHANGED_RETRIES + 1):
                pipeline = table_pipeline(table, settings, report)
                source = table_source(table, settings, report)
                finish_pending_loads(pipeline)
                try:
                    pipeline.run(source, refresh="drop_resources" if full_refresh else None)
                    break
                except Exception as error:
                    if attempt == CHANGED_RETRIES or not _caused_by(error, LandingChangedError):
                        raise
                    log.warning("%s: %s; reading the table again", table, describe(error))
                    _restart(report)
        report.table_rows = store.row_count(destination_table(table))
    except Exception as error:  # noqa: BLE001 - every failure becomes the table's report
        report.finish("failed", error=describe(error))
        return report
    if report.status == "no_prod_files":
        report.finish("no_prod_files")
    else:
        report.finish("loaded" if report.files_loaded or report.rows_rejected else "unchanged")
    return report


def load_tables(
    tables: list[str],
    settings: Settings,
    full_refresh: bool = False,
    on_start: Callable[[TableReport], None] | None = None,
    on_done: Callable[[TableReport], None] | None = None,
) -> RunReport:
    """Loads tables one after the other; a failed table does not stop the others."""
    run = RunReport(settings.environment, {})
    for table in tables:
        run.tables[table] = load_table(table, settings, full_refresh, on_start)
        if on_done:
            on_done(run.tables[table])
    # Folders under db_table/ that no table reads: one listing, once some table could list.
    listed = any(report.status != "failed" for report in run.tables.values())
    unknown = unknown_table_folders(settings.bucket_url, TABLES) if listed else []
    if unknown:
        log.warning(
            "ignored %d unknown table folder(s) under %s/%s/ (not edX tables this loader knows; "
            "see --list-tables): %s",
            len(unknown),
            settings.bucket_url.rstrip("/"),
            landing.DB_TABLE,
            ", ".join(repr(name) for name in unknown),
        )
    # In the --json report once RunReport has this field (report.py).
    run.unknown_table_folders = unknown
    if tables and all(report.status == "no_prod_files" for report in run.tables.values()):
        run.error = (
            f"no prod files for any of the {len(tables)} requested table(s) under "
            f"{settings.bucket_url.rstrip('/')}/db_table/<table>/prod/: "
            "is the bucket URL or prefix right?"
        )
    return run


def describe(error: BaseException) -> str:
    """The innermost cause, which names the thing to fix, rather than dlt's step wrapper; with
    any credential value of this process masked (it must never reach a report or a log)."""
    while error.__cause__ is not None or error.__context__ is not None:
        inner = error.__cause__ or error.__context__
        if type(error).__module__.startswith("dlt"):
            error = inner
        else:
            break
    return redact(f"{type(error).__name__}: {error}")


def _caused_by(error: BaseException | None, kind: type) -> bool:
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, kind):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


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
