"""Test-only kill and pause points, to prove that a run killed anywhere is finished by the next.

`EDXORG_S3_INGEST_CRASH_AT=<point>:<n>` kills the process with SIGKILL the n-th time
`crashpoint("<point>")` is reached (n defaults to 1). `EDXORG_S3_INGEST_PAUSE_AT=<point>:<n>:<dir>`
instead stops there until told to go on: it writes a line into the FIFO `<dir>/paused`, then waits
for a line from the FIFO `<dir>/resume` (tests/test_crash.py uses it to overlap two runs without
sleeping). `EDXORG_S3_INGEST_FAIL_AT=<point>:<n>` raises InjectedFailure there instead, the n-th
time: an exception where one may happen (dlt runs a job that raised again). With none of them
set, `crashpoint` is one comparison.
"""

import os
import signal
import threading

CRASH_ENV = "EDXORG_S3_INGEST_CRASH_AT"
PAUSE_ENV = "EDXORG_S3_INGEST_PAUSE_AT"
FAIL_ENV = "EDXORG_S3_INGEST_FAIL_AT"


class InjectedFailure(RuntimeError):
    """Raised at a fail point (`EDXORG_S3_INGEST_FAIL_AT`)."""


def _parse(value: str | None) -> tuple[str | None, int, str]:
    if not value:
        return None, 0, ""
    point, _, rest = value.partition(":")
    count, _, directory = rest.partition(":")
    return point, int(count or 1), directory


_CRASH, _CRASH_N, _ = _parse(os.environ.get(CRASH_ENV))
_PAUSE, _PAUSE_N, _PAUSE_DIR = _parse(os.environ.get(PAUSE_ENV))
_FAIL, _FAIL_N, _ = _parse(os.environ.get(FAIL_ENV))
ACTIVE = _CRASH is not None or _PAUSE is not None or _FAIL is not None
_hits: dict[str, int] = {}
_lock = threading.Lock()


def crashpoint(name: str) -> None:
    """Marks a point where a kill must be survivable; does nothing unless a test asks."""
    if not ACTIVE or name not in (_CRASH, _PAUSE, _FAIL):
        return
    with _lock:
        _hits[name] = hit = _hits.get(name, 0) + 1
    if name == _CRASH and hit == _CRASH_N:
        os.kill(os.getpid(), signal.SIGKILL)
    if name == _FAIL and hit == _FAIL_N:
        raise InjectedFailure(f"injected failure at {name} ({FAIL_ENV})")
    if name == _PAUSE and hit == _PAUSE_N:
        with open(os.path.join(_PAUSE_DIR, "paused"), "w") as paused:
            paused.write(f"{os.getpid()}\n")
        with open(os.path.join(_PAUSE_DIR, "resume")) as resume:
            resume.readline()
