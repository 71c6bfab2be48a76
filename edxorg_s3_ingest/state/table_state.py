"""A table's incremental state as its store holds it (SPEC §7, §10).

The state says which version (key, modification time, size) of every prod file was seen, and per
course which file its rows come from, how many rows and rejects it had and which load wrote it
(incremental.py decides from it what a run reads). It lives in the store, beside the rows it
describes, and advances in the same commit: a Parquet table folder holds it in a hidden file
(parquet_store.py), an Iceberg table in an object its snapshot summary points to
(iceberg_store.py). A run in a fresh pod therefore plans exactly what a run on a warm disk plans,
and the local pipelines dir is a disposable working area.

`version` names the commit a state comes from (a load id in dev, a snapshot id in the lake): a
run commits only if the table is still at the version it planned from; otherwise another run
moved it on (`StateMovedError`) and the run plans again.
"""

from dataclasses import dataclass, field


class StateMovedError(RuntimeError):
    """Another run committed to the table after this run read its state: nothing of this run
    was committed to the table; it plans again from the new state."""

    def __init__(self, table_name: str, planned: object, found: object) -> None:
        super().__init__(
            f"{table_name}: another run committed to the table while this run loaded it "
            f"(planned from version {planned}, found {found}); nothing of this run was committed"
        )
        self.table_name = table_name


class DamagedStateError(RuntimeError):
    """The stored state of a table cannot be read; the message names it and the fix. A
    rebuild (`--full-refresh`) needs nothing of it and commits over `version`."""

    def __init__(self, message: str, version: str | int | None = None) -> None:
        super().__init__(message)
        self.version = version


def damaged(table_name: str, where: str, error: BaseException, version=None):
    table = table_name.removeprefix("raw__edxorg__s3__tables__")
    return DamagedStateError(
        f"{table_name}: its state {where} cannot be read ({type(error).__name__}: {error}). "
        f"Rebuild the table: edxorg-s3-ingest --tables {table} --full-refresh",
        version,
    )


@dataclass
class StoredState:
    state: dict = field(default_factory=dict)
    version: str | int | None = None
    """The commit the state comes from; None for a table never committed to."""
    interrupted: bool = False
    """A commit that a kill interrupted is left to finish or undo (the store's `recover`)."""


def expected_rows(state: dict) -> int:
    """The rows the table holds after the loads this state describes (SPEC §5)."""
    return sum(state.get("rows", {}).values())


LEDGER_COLUMNS = (
    "course_id",
    "file",
    "modified",
    "size",
    "current",
    "rows",
    "rejected_rows",
    "load_id",
)


def ledger(state: dict) -> list[dict]:
    """One row per prod file the state knows: whether each course's rows come from it
    (`current`), and for those the rows, rejects and load id. Sorted by course, newest first."""
    courses = state.get("courses", {})
    rows = []
    for url, (_, modified, size) in state.get("files", {}).items():
        course = url.rsplit("/", 2)[-2]  # .../prod/<course>/<file>
        current = courses.get(course, [None])[0] == url
        rows.append(
            {
                "course_id": course,
                "file": url,
                "modified": modified,
                "size": size,
                "current": current,
                "rows": state.get("rows", {}).get(course) if current else None,
                "rejected_rows": state.get("rejected", {}).get(course) if current else None,
                "load_id": state.get("loads", {}).get(course) if current else None,
            }
        )
    rows.sort(key=lambda row: (row["course_id"], not row["current"], row["modified"]))
    return rows
