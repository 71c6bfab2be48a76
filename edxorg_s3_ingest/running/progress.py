"""A live progress line on a terminal, a line per table as it ends, and the summary at the end."""

import logging
import os
import shutil
import sys
import threading
from contextlib import suppress
from typing import TextIO

from edxorg_s3_ingest.landing.aws import s3_retry_note
from edxorg_s3_ingest.report import RunReport, TableReport

COLUMNS = (
    ("table", 46),
    ("status", 15),
    ("files", 7),
    ("loaded", 7),
    ("rows", 10),
    ("rejected", 9),
    ("courses", 8),
    ("MB", 9),
    ("seconds", 8),
    ("table rows", 11),
)
"""`files`: seen in the landing zone; `loaded`: files read; `rows`: rows loaded; `table rows`:
rows in the whole table after the run (the same numbers as each table's line and `--json`)."""


class Progress:
    """Redraws the running tables' line a few times a second (terminals only), and writes each
    table's line when it ends (`[<n>/<total>]`: the n-th table to end).

    One table at a time: `[2/6] auth_user: running 40/200 files, 1,200 rows, ...`. Several
    (worker processes): `2 running: auth_user 40/200 files 1.2 MB, teams 3/9 files 0.1 MB;
    1/6 done`, cut to the terminal's width.
    """

    def __init__(
        self,
        total: int = 0,
        parallel: bool = False,
        stream: TextIO = sys.stderr,
        interval: float = 0.25,
    ) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.interval = interval
        self.total = total
        self.parallel = parallel
        self.running: dict[str, TableReport] = {}
        self.started = 0
        self.finished = 0
        self._positions: dict[str, int] = {}
        self._errors: dict[str, str] = {}
        """Each error said so far (as `TableReport.shared_error`) and the first table with it."""
        self._note: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._draw_loop, daemon=True)
        self._gone = False
        """The stream's reader has gone (`... 2>&1 | head`): nothing more is written."""

    def __enter__(self) -> "Progress":
        if self.live:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.live:
            self._thread.join()
            with self._lock:
                self._clear()
                self._write("")

    def begin(self, report: TableReport) -> None:
        with self._lock:
            self.started += 1
            self._positions[report.table] = self.started
            self.running[report.table] = report

    def done(self, report: TableReport) -> None:
        with self._lock:
            self.running.pop(report.table, None)
            self.finished += 1
            self._clear()
            self._write(f"{self._line(report, self.finished)}\n")

    def wait(self, note: str | None) -> None:
        """What the run is waiting for before any table starts (e.g. `S3 not answering ...`),
        or None once it waits no more."""
        with self._lock:
            self._note = note

    def log(self, record: logging.LogRecord) -> None:
        """A worker's log record, handled here as this process's own, above the live line."""
        with self._lock:
            self._clear()
            self._write("")
            logging.getLogger(record.name).handle(record)

    def _clear(self) -> None:
        if self.live:
            self._write("\r\033[K")

    def _write(self, text: str) -> None:
        """Writes and flushes. Once the stream's reader has gone (a closed pipe), the stream is
        pointed at /dev/null (so are the log records written to it) and the run goes on: its
        tables still load, and the exit status says how they ended. Raising here instead would
        end the run with its workers mid-load."""
        if self._gone:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except BrokenPipeError:
            self._gone = True
            with suppress(OSError, ValueError):  # a stream without a file: nothing to point
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self.stream.fileno())
                os.close(devnull)

    def _draw_loop(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                text = self._live_text()
                if text:
                    self._write(f"\r\033[K{text}")

    def _live_text(self) -> str:
        running = list(self.running.values())
        notes = [self._note, s3_retry_note(), *(report._s3_note for report in running)]
        note = next((note for note in notes if note), None)
        if not running:
            text = note or ""
        elif self.parallel:
            tables = ", ".join(_brief(report) for report in running)
            text = f"{len(running)} running: {tables}; {self.finished}/{self.total} done"
        else:
            (report,) = running[-1:]
            text = self._line(report, self._positions.get(report.table, 0))
        if running and note:
            # First, so that a line cut to the terminal's width still shows it.
            text = f"{note}; {text}"
        # A line longer than the terminal wraps, and `\r` would then redraw only its last part.
        width = self._width() - 1
        return text if len(text) <= width else text[: max(width - 1, 0)] + "…"

    def _width(self) -> int:
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            columns = 0
        return columns or shutil.get_terminal_size().columns  # 0: a terminal that never said

    def _line(self, report: TableReport, number: int) -> str:
        if report.status == "running":
            files = f"running {report.files_loaded}/{report.files_planned} files"
            rows = f"{report.rows_loaded:,} rows"
        else:
            files = f"{report.status}, {report.files_loaded} of {report.files_seen} files loaded"
            rows = f"{report.rows_loaded:,} rows loaded"
        text = (
            f"[{number}/{self.total}] {report.table}: {files}, {rows}, "
            f"{report.rows_rejected:,} rejected, {report.bytes_read / 1e6:,.1f} MB, "
            f"{report.elapsed:.1f}s"
        )
        if report.status != "running" and report.table_rows is not None:
            text += f"; {report.table_rows:,} rows in the table"
        if report.error:
            shared = report.shared_error or report.error
            first = self._errors.setdefault(shared, report.table)
            said = f"the same as {first}'s" if first != report.table else report.error
            text += f"\n    error: {said}"
        return text


def _brief(report: TableReport) -> str:
    """A running table in the line of several: its name, then its files once it has listed."""
    if not report.files_planned:
        return report.table
    return (
        f"{report.table} {report.files_loaded}/{report.files_planned} files "
        f"{report.bytes_read / 1e6:,.1f} MB"
    )


def summary(run: RunReport) -> str:
    """The per-table table printed at the end of a CLI run."""
    header = "".join(name.ljust(width) for name, width in COLUMNS).rstrip()
    lines = [header, "-" * len(header)]
    for report in run.tables.values():
        cells = (
            report.table,
            report.status,
            report.files_seen,
            report.files_loaded,
            f"{report.rows_loaded:,}",
            f"{report.rows_rejected:,}",
            report.courses_replaced,
            f"{report.bytes_read / 1e6:,.2f}",
            f"{report.seconds:.2f}",
            "" if report.table_rows is None else f"{report.table_rows:,}",
        )
        lines.append(
            "".join(
                str(cell).ljust(width) for cell, (_, width) in zip(cells, COLUMNS, strict=True)
            ).rstrip()
        )
    failed = [report for report in run.tables.values() if not report.ok]
    for error, tables in run.failures().items():
        if len(tables) == 1:
            (table,) = tables
            lines.append(f"FAILED {table}: {run.tables[table].error}")
        else:
            lines.append(f"FAILED {len(tables)} tables ({', '.join(tables)}): {error}")
    if run.unknown_table_folders:
        names = ", ".join(repr(name) for name in run.unknown_table_folders)
        lines.append(f"ignored unknown table folders under db_table/ (never read): {names}")
    where = f"({run.environment} environment)"
    if failed:
        lines.append(f"{len(failed)} of {len(run.tables)} table(s) failed {where}")
    elif run.error:
        lines.append(f"the run failed {where}: see the error below")
    else:
        lines.append(f"{len(run.tables)} of {len(run.tables)} table(s) ok {where}")
    return "\n".join(lines)
