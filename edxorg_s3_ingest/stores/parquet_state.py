"""The state of a dev table (table_state.py), kept in its folder beside its Parquet files.

`.state.json` holds the state and the load that committed it; `.commit.json` the commit under
way while there is one (parquet_store.ParquetStore.commit); `.lock` serializes commits of one
table from any run. Read without pyarrow or dlt: a run with nothing new decides from these.
"""

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edxorg_s3_ingest.state.table_state import StoredState, damaged

PARTIAL = ".partial"
STATE = ".state.json"
JOURNAL = ".commit.json"
LOCK = ".lock"
DAMAGED = "damaged"
"""The version of a state file that cannot be read: a rebuild commits over it."""


def read_state(table_dir: Path) -> StoredState:
    """The state of the table's last commit; a commit that a kill interrupted counts once
    it reached its deletions (the next commit finishes it), not before (it is undone)."""
    journal = read_json(table_dir / JOURNAL)
    if journal and journal.get("phase") == "delete":
        return StoredState(journal["state"], journal["load_id"], interrupted=True)
    saved = read_json(table_dir / STATE) or {"state": {}, "load_id": None}
    return StoredState(saved["state"], saved["load_id"], interrupted=journal is not None)


@contextmanager
def locked(table_dir: Path) -> Iterator[None]:
    """One commit to the table at a time, whichever run (or pipelines dir) it comes from."""
    with open(table_dir / LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise damaged(path.parent.name, str(path), error, DAMAGED) from error
    return value if isinstance(value, dict) else None


def write_json(path: Path, value: dict) -> None:
    """Replaces `path` atomically, durably: a reader sees the old or the new content."""
    temporary = path.with_name(path.name + PARTIAL)
    with open(temporary, "w") as handle:
        json.dump(value, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
