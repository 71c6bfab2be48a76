"""The worker processes' fork server (workers.py): what it imports, and its end.

The CLI starts it before it lists the landing zone, as a fork of its own process
(cli.start_workers_early); where it cannot, the runner starts it as multiprocessing does, a new
interpreter, once two tables are known to need a load (workers.start_fork_server). Whoever
started it, `stop_fork_server` ends it: after the workers, or at once when the listing leaves
fewer than two tables to load. Apart from workers.py so that a run with nothing new, which
ends the server its CLI started, imports none of the loading code.
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
