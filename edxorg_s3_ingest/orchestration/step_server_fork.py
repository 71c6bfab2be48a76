"""The fork server of a run's step processes, started as a fork of the run's own process rather
than as a new interpreter (definitions.serve_steps).

multiprocessing starts its fork server as a new interpreter, which imports dagster, the
instance's storage modules (sqlalchemy, alembic), dlt, pyarrow and the loader, and builds the
definitions, all again: ~1.2 s of CPU, while the first steps wait for it. The run's process has
done most of that when it starts the server (its instance open, its definitions built), so a
fork of it starts with them and imports only the rest of the loader (pyarrow): ~0.3 s. The
server then runs multiprocessing's own server loop (`forkserver.main`), so the executor forks
its steps from it as from the server multiprocessing would have started.

Forking is safe only while this process has no other thread (a lock another thread holds at
that instant stays held in the child for good): with one, or where multiprocessing's fork
server has not the attributes this module sets, `start` does nothing and says so, and the
caller starts the server the usual way.
"""

import os
import signal
import socket
import sys
import threading
import traceback
from contextlib import suppress
from multiprocessing import connection, forkserver, resource_tracker, util

NEEDED = ("_lock", "_forkserver_pid", "_forkserver_address", "_forkserver_alive_fd")
"""What `start` sets on multiprocessing's fork server, as its own `ensure_running` does."""

_serving = False


def serving() -> bool:
    """Whether this process is the step server or a step forked from it."""
    return _serving


def can_fork() -> bool:
    """Whether `start` would fork: this process runs no other thread, and multiprocessing's fork
    server has what `start` sets."""
    server = getattr(forkserver, "_forkserver", None)
    known = server is not None and all(hasattr(server, name) for name in NEEDED)
    return known and threading.active_count() == 1


def start(preload: list[str]) -> bool:
    """Starts the fork server as a fork of this process, importing `preload` there; False if it
    could not (see above), True if it runs (already running included)."""
    if not can_fork():
        return False
    server = forkserver._forkserver
    with server._lock:
        if server._forkserver_pid is not None:
            return True
        # Started by this process, as ensure_running does: the steps share it.
        resource_tracker.ensure_running()
        with socket.socket(socket.AF_UNIX) as listener:
            address = connection.arbitrary_address("AF_UNIX")
            listener.bind(address)
            if not util.is_abstract_socket_namespace(address):
                os.chmod(address, 0o600)
            listener.listen()
            # Every client holds the write end; the server ends when all of them have.
            alive_r, alive_w = os.pipe()
            parent = os.getpid()
            # Buffered output would be written again by each process forked from the server.
            for stream in (sys.stdout, sys.stderr):
                with suppress(Exception):
                    stream.flush()
            try:
                pid = os.fork()
            except OSError:
                os.close(alive_w)
                return False
            finally:
                if os.getpid() == parent:
                    os.close(alive_r)
            if pid == 0:
                _serve(server, listener.fileno(), alive_r, alive_w, preload)
        server._forkserver_address = address
        server._forkserver_alive_fd = alive_w
        server._forkserver_pid = pid
    return True


def _serve(server, listener_fd: int, alive_r: int, alive_w: int, preload: list[str]) -> None:
    """In the forked child: never returns, and runs nothing of the run's process on its way out
    (no `atexit` function, no `finally` of the stack it was forked in)."""
    global _serving
    code = 1
    try:
        _serving = True
        # Forked while `start` held it: held for good here and in every step, unless replaced.
        server._lock = threading.Lock()
        os.close(alive_w)
        # As in a new interpreter: the run's process had dagster's interrupt handlers set.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _arenas_as_configured()
        forkserver.main(listener_fd, alive_r, preload)
        code = 0
    except SystemExit:  # forkserver.main's way out once no client is left
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def _arenas_as_configured() -> None:
    """glibc reads MALLOC_ARENA_MAX when a process starts; the package may have set it after this
    one started (memory_pool.prepare_allocator, in qa and production), for its child processes:
    a spawned server would have read it, so the fork applies it."""
    value = os.environ.get("MALLOC_ARENA_MAX", "")
    if not value.isdigit():
        return
    with suppress(Exception):
        import ctypes

        m_arena_max = -8  # glibc's malloc.h
        ctypes.CDLL(None).mallopt(m_arena_max, int(value))
