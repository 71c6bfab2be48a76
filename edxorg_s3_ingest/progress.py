"""A live one-line progress display on a terminal, and the per-table summary at the end."""

import sys
import threading
from typing import TextIO

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
)


class Progress:
    """Redraws the current table's line a few times a second while it loads (terminals only)."""

    def __init__(self, stream: TextIO = sys.stderr, interval: float = 0.25) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.interval = interval
        self.current: TableReport | None = None
        self.position = (0, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._draw_loop, daemon=True)

    def __enter__(self) -> "Progress":
        if self.live:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.live:
            self._thread.join()
            self.stream.write("\r\033[K")

    def begin(self, report: TableReport, number: int, total: int) -> None:
        self.current, self.position = report, (number, total)

    def done(self, report: TableReport) -> None:
        if self.live:
            self.stream.write("\r\033[K")
        self.stream.write(f"{self._line(report)}\n")
        self.stream.flush()

    def _draw_loop(self) -> None:
        while not self._stop.wait(self.interval):
            if self.current is not None:
                self.stream.write(f"\r\033[K{self._line(self.current)}")
                self.stream.flush()

    def _line(self, report: TableReport) -> str:
        number, total = self.position
        files = (
            f"{report.files_loaded}/{report.files_planned}" if report.status == "running" else ""
        )
        text = (
            f"[{number}/{total}] {report.table}: {report.status} {files} files, "
            f"{report.rows_loaded:,} rows, {report.rows_rejected:,} rejected, "
            f"{report.bytes_read / 1e6:,.1f} MB, {report.seconds or 0:.1f}s"
        )
        if report.error:
            text += f"\n    error: {report.error}"
        return text


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
        )
        lines.append(
            "".join(
                str(cell).ljust(width) for cell, (_, width) in zip(cells, COLUMNS, strict=True)
            ).rstrip()
        )
    failed = [report for report in run.tables.values() if not report.ok]
    for report in failed:
        lines.append(f"FAILED {report.table}: {report.error}")
    if run.unknown_table_folders:
        names = ", ".join(repr(name) for name in run.unknown_table_folders)
        lines.append(f"ignored unknown table folders under db_table/ (never read): {names}")
    lines.append(
        f"{len(run.tables) - len(failed)} of {len(run.tables)} table(s) ok "
        f"({run.environment} environment)"
    )
    return "\n".join(lines)
