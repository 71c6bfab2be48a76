"""What a run did, per table (SPEC §6): the CLI summary, `--json` and Dagster metadata."""

import re
import time
from dataclasses import asdict, dataclass, field

from edxorg_s3_ingest.tables import destination_table

PROGRESS_FIELDS = (
    "status",
    "files_seen",
    "files_planned",
    "files_loaded",
    "rows_loaded",
    "rows_rejected",
    "bytes_read",
    "_s3_note",
)


@dataclass
class TableReport:
    table: str
    status: str = "pending"
    """pending, running, loaded, unchanged, no_prod_files or failed."""
    files_seen: int = 0
    files_planned: int = 0
    files_loaded: int = 0
    files_skipped: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    courses_replaced: int = 0
    bytes_read: int = 0
    seconds: float = 0.0
    destination: str = ""
    table_rows: int | None = None
    """Rows in the whole table after the load."""
    load_id: str | None = None
    replans: int = 0
    """Times the table was planned again: another run committed to it first, or a listed file
    changed before it was read."""
    error: str | None = None
    misplaced_files: list[str] = field(default_factory=list)
    _s3_note: str | None = field(default=None, repr=False)
    """While a request of the table's load waits to be retried: `S3 not answering ...`."""
    _started: float = field(default=0.0, repr=False)
    """`time.monotonic()` when the table started, in the process that loads it. A report pickles
    whole (worker processes send theirs to the CLI), this field too."""

    def start(self) -> None:
        self.status = "running"
        self._started = time.monotonic()

    def finish(self, status: str, error: str | None = None) -> None:
        self.status = status
        self.error = error
        self.seconds = round(time.monotonic() - self._started, 3)

    @property
    def ok(self) -> bool:
        return self.status in ("loaded", "unchanged", "no_prod_files")

    @property
    def elapsed(self) -> float:
        """Seconds since the table started (its final `seconds` once it has finished)."""
        if self.status in ("pending", "running"):
            return time.monotonic() - self._started if self._started else 0.0
        return self.seconds

    def progress(self) -> dict:
        """The counters a live display shows: what a worker process sends while it loads."""
        return {name: getattr(self, name) for name in PROGRESS_FIELDS}

    def update(self, progress: dict) -> None:
        for name in PROGRESS_FIELDS:
            if name in progress:
                setattr(self, name, progress[name])

    def as_dict(self) -> dict:
        return {key: value for key, value in asdict(self).items() if not key.startswith("_")}

    @property
    def shared_error(self) -> str | None:
        """The error with the table's names (its own, its destination's, its pipeline's) as
        `<table>`: equal for tables that failed for one reason, which is then said once."""
        if self.error is None:
            return None
        text = self.error
        for name in (destination_table(self.table), f"edxorg_s3__{self.table}", self.table):
            # Not inside a longer name: `course` is part of `course_structure`.
            text = re.sub(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", "<table>", text)
        return text


@dataclass
class RunReport:
    environment: str
    tables: dict[str, TableReport]
    error: str | None = None
    """A run-level error, such as no prod files for any requested table (SPEC §6)."""
    unknown_table_folders: list[str] = field(default_factory=list)
    """Folders under db_table/ that are not tables this loader knows: never read."""
    not_started: bool = False
    """The landing zone could not be listed: no table was started, `error` says why."""

    @property
    def ok(self) -> bool:
        return self.error is None and all(report.ok for report in self.tables.values())

    def failures(self) -> dict[str, list[str]]:
        """Each error (as `TableReport.shared_error`) and the failed tables that met it."""
        grouped: dict[str, list[str]] = {}
        for report in self.tables.values():
            if not report.ok:
                grouped.setdefault(report.shared_error or report.status, []).append(report.table)
        return grouped

    def as_dict(self) -> dict:
        totals = {
            key: sum(getattr(report, key) for report in self.tables.values())
            for key in ("files_loaded", "rows_loaded", "rows_rejected", "bytes_read")
        }
        return {
            "environment": self.environment,
            "ok": self.ok,
            "error": self.error,
            "failed_tables": [name for name, report in self.tables.items() if not report.ok],
            "unknown_table_folders": self.unknown_table_folders,
            "totals": totals,
            "tables": {name: report.as_dict() for name, report in self.tables.items()},
        }
