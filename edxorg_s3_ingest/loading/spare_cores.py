"""The spare cores this process's loads may take, each for a parse helper (parse_helper.py).

Apart from parse_helper.py so that the CLI, its workers and Dagster's steps set them without
importing pyarrow (a run with nothing new never does).

Two kinds of tokens, both with a semaphore's `acquire(timeout=)` / `release()`:
- the CLI's: a semaphore the CLI shares with its workers (runner.py, workers.py), released each
  time a worker ends with nothing left to load;
- `MachineCores`, for loading processes that do not know of each other, Dagster's step processes
  (`machine_cores`): the cores this process may use, as lock files in one folder per user and
  machine (in a Kubernetes pod, per pod). A step holds one while it loads; its load's helper
  may take one that no process holds, so the last step still running gets the cores the others
  freed.
"""

import fcntl
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

_tokens = None


def use_spare_cores(tokens) -> None:
    """The spare cores of this process's loads: a semaphore (threading's, or multiprocessing's
    shared with the CLI), MachineCores, or None for none."""
    global _tokens
    _tokens = tokens


def spare_cores():
    return _tokens


def cores_folder() -> Path:
    """Where the cores' lock files are: the system's temporary folder (TMPDIR), per user."""
    return Path(tempfile.gettempdir()) / f"edxorg-s3-ingest-cores-{os.getuid()}"


class MachineCores:
    """`count` cores as lock files `core-<n>` in `folder`; a core is taken while a process holds
    the exclusive `flock` of its file, and given back when that file is closed, at the latest
    when the process ends (killed included): a crashed step never keeps a core."""

    def __init__(
        self, count: int, folder: Path | None = None, ready: Callable[[], bool] | None = None
    ) -> None:
        self.count = count
        self.folder = folder or cores_folder()
        self.ready = ready
        """None, or whether a free core may be taken yet (a step: once its run's other steps
        have all started, orchestration/step_cores.py)."""
        self._held: list[int] = []

    def acquire(self, timeout: float | None = None) -> bool:
        """Takes a free core; waits up to `timeout` seconds (None: until one is free) for one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            descriptor = self._take() if self.ready is None or self.ready() else None
            if descriptor is not None:
                self._held.append(descriptor)
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            # No way to block on "any of N" locks: look again, at most 10 times a second.
            time.sleep(0.1 if left is None else min(0.1, left))

    def release(self) -> None:
        os.close(self._held.pop())

    def _take(self) -> int | None:
        """A free core's locked file, or None: none free, or no folder to hold them (a
        read-only or full filesystem: no spare core, never a failed load)."""
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError:
            return None
        for number in range(self.count):
            try:
                descriptor = os.open(self.folder / f"core-{number}", os.O_RDWR | os.O_CREAT, 0o600)
            except OSError:
                return None
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)
                continue
            return descriptor
        return None


@contextmanager
def machine_cores(
    count: int, folder: Path | None = None, ready: Callable[[], bool] | None = None
) -> Iterator[bool]:
    """This process loads while other processes of the machine may too (Dagster's steps): it
    takes one of the `count` cores it may use for itself, if one is free, and then its load
    may take another free one for a parse helper, once `ready` says so. Yields whether it got
    a core: without one (more loads than cores) it loads anyway, on cores the others hold,
    and with no helper."""
    cores = MachineCores(count, folder) if count > 1 else None
    own = cores is not None and cores.acquire(timeout=0)
    if own:
        cores.ready = ready
    use_spare_cores(cores if own else None)
    try:
        yield own
    finally:
        use_spare_cores(None)
        if own:
            cores.release()
