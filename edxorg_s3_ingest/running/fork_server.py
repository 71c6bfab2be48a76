"""The worker processes' fork server (workers.py): what it imports, when it starts, its end.

The CLI forks the server from its own process before it lists the landing zone
(cli.start_workers_early), parked: it starts with the CLI's modules, without a new interpreter,
and waits at its gate (running/gate.py) before it imports anything more. Once two tables are
known to need a load, `open_gate` lets it import the loading code (~0.4 s of CPU) while the
CLI lists the other tables. Where it could not be forked, the runner starts it then as
multiprocessing does, a new interpreter (workers.start_fork_server). Whoever started it,
`stop_fork_server` ends it: after the workers, or when the listing leaves fewer than two tables
to load (still parked: a run with nothing new imports no loading code anywhere). Apart from
workers.py so that such a run imports none of the loading code in the CLI either.
"""

import os
import signal
import sys
from contextlib import suppress

WORKER_PRELOAD = ["edxorg_s3_ingest.running.preload"]
"""What the fork server imports once, so that a worker forked from it starts with it imported:
what a dev table load needs (preload.py)..."""
LAKE_PRELOAD = ["edxorg_s3_ingest.running.preload_lake"]
"""... and in qa and production, what the lake's store needs (preload_lake.py)."""
GATE = "edxorg_s3_ingest.running.gate"
"""Imported first by a parked server: returns once its gate opens (gate.py)."""

_gate: list[int] = []
"""The parked server's gate: a pipe, [read end, write end] until the server is forked, then
[write end] in this process (and [read end] in the server) until it opens."""


def parked_preload(environment: str) -> list[str]:
    """The modules a server forked from this process imports: its gate first (a new pipe, whose
    read end is the server's once it is forked: `server_forked`), then server_preload."""
    _close_gate()
    _gate.extend(os.pipe())
    return [GATE, *server_preload(environment)]


def server_forked(forked: bool) -> None:
    """In this process, once the parked server is forked (`forked`), or could not be: this
    process keeps only the gate's write end, or none."""
    if forked and len(_gate) == 2:
        os.close(_gate.pop(0))
    else:
        _close_gate()


def wait_at_gate() -> None:
    """In a parked server: returns once the gate opens; exits when it is closed unopened (the
    run needs no worker, or its CLI has gone)."""
    read_end, write_end = _gate
    os.close(write_end)
    _leave_tracker_pipe()
    # Ctrl-C on a terminal reaches the whole process group: the CLI ends a parked server
    # (stop_fork_server), which says nothing.
    interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        opened = os.read(read_end, 1)
    finally:
        signal.signal(signal.SIGINT, interrupt)
        os.close(read_end)
        _gate.clear()
    if not opened:
        raise SystemExit(0)


def _leave_tracker_pipe() -> None:
    """Closes, in the forked server, its copy of this process's end of multiprocessing's
    resource tracker pipe, as a new interpreter would not have it: the tracker exits once every
    copy is closed, so at a run's end it waited for the server to have died before it began
    its own exit (~10 ms more after the last write). The workers are handed the tracker's pipe
    by multiprocessing itself."""
    from multiprocessing import resource_tracker

    tracker = getattr(resource_tracker, "_resource_tracker", None)
    inherited = getattr(tracker, "_fd", None)
    if inherited is not None:
        with suppress(OSError):
            os.close(inherited)
        tracker._fd = tracker._pid = None


def open_gate() -> None:
    """Lets a parked server import the loading code; nothing to do otherwise."""
    if len(_gate) == 1:
        with suppress(OSError):  # the server has gone: its workers' start says so
            os.write(_gate[0], b"g")
        _close_gate()


def _close_gate() -> None:
    for end in _gate:
        with suppress(OSError):
            os.close(end)
    _gate.clear()


def server_preload(environment: str) -> list[str]:
    """The modules the fork server imports, with the environment it must start with set for it
    (a user's value wins)."""
    # glibc gives each thread that allocates an arena of its own (up to 8 per core), which the
    # reader's threads fill and never hand back: two arenas hold a worker ~50 MB lower at the
    # same speed. Read when the fork server starts, so set before (and in qa and production
    # the package's own, 1: loading/memory_pool.py).
    os.environ.setdefault("MALLOC_ARENA_MAX", "2")
    # Arrow's own default pool (mimalloc), which some of its allocations still use beside
    # memory_pool.use_lean_memory_pool's jemalloc, held the most memory and cost the most system
    # time: jemalloc for all (benchmarks/data/medium, 2 workers: peak 594 -> 535 MB for the
    # whole run, 8.9 -> 8.3 s). Read when pyarrow is first imported, in the fork server.
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
    lake = LAKE_PRELOAD if environment != "dev" else []
    return [*WORKER_PRELOAD, *lake]


def stop_fork_server() -> None:
    """Ends the fork server and multiprocessing's resource tracker (both children of this
    process) once the workers have ended, and waits for them: no process of the run outlives
    it, and the CPU time of the workers, which the server waited for, counts in this process's
    children, where `time`, `wait4` and the like look. (Left alone, both would end when this
    process ends, unwaited.) The server is terminated rather than asked to exit: idle, its exit
    would tear down every module it imported, ~0.15 s more before the CLI could end; still
    importing (no table to load), it has nothing to finish. `_stop` is what CPython's own tests
    use to stop them; where it is missing they are left alone. Nothing to do (nor to import)
    when this process never started them."""
    _close_gate()
    if "multiprocessing.forkserver" not in sys.modules:
        return
    from multiprocessing import forkserver, resource_tracker

    server = getattr(forkserver, "_forkserver", None)
    pid = getattr(server, "_forkserver_pid", None)
    if pid:
        with suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    # The tracker first: it exits (on the end of its pipe) while the server dies (~4 ms less
    # after a run's last table than waiting for one, then the other).
    for helper in (getattr(resource_tracker, "_resource_tracker", None), server):
        stop = getattr(helper, "_stop", None)
        if stop:
            with suppress(OSError, ChildProcessError):
                stop()
