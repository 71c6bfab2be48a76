"""Starting and stopping the real servers the end-to-end tests talk to.

Every server runs in its own session (so its process group can be stopped as a whole, children
included), with default signal dispositions (a parent that ignores SIGINT/SIGTERM, such as a shell
background job, would otherwise make `dg dev` ignore them too: STACK-NOTES), on a free loopback
port, with its output in a log file whose tail is shown when something goes wrong. Readiness is
always polled against a deadline; a server that exits while being waited for fails at once.
"""

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

POLL_INTERVAL = 0.2


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _default_signals() -> None:
    """Runs in the child between fork and exec: undo what the parent may have inherited."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


@dataclass
class Server:
    name: str
    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, chars: int = 6000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return text[-chars:]

    def wait_until(self, ready: Callable[[], bool], what: str, timeout: float = 120.0) -> float:
        """Polls `ready()` until it is true; returns the seconds it took. Fails with the log's
        tail if the deadline passes or the server exits first."""
        start = time.monotonic()
        deadline = start + timeout
        while True:
            if ready():
                return time.monotonic() - start
            code = self.process.poll()
            if code is not None:
                raise AssertionError(
                    f"{self.name} exited with {code} before {what}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name}: no {what} within {timeout:.0f}s:\n{self.log_tail()}"
                )
            time.sleep(POLL_INTERVAL)


def start_server(
    name: str,
    command: Sequence[str],
    *,
    port: int,
    log_path: Path,
    cwd: Path,
    env: dict[str, str],
) -> Server:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_default_signals,
        )
    return Server(name=name, process=process, port=port, log_path=log_path)


def _signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def _group_alive(pgid: int) -> bool:
    return _signal_group(pgid, 0)


def pids_in_group(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command: state ppid pgrp ...
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def stop_server(server: Server, grace: float = 20.0) -> None:
    """SIGTERM to the server's process group, then SIGKILL to whatever is left of it after
    `grace` seconds. The group id is the server's own PID (it leads its session), and Linux
    does not reuse that id while any member of the group is alive."""
    pgid = server.pid
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    with suppress(subprocess.TimeoutExpired):
        server.process.wait(timeout=grace)
    while pids_in_group(pgid) and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL)
    if _group_alive(pgid):
        _signal_group(pgid, signal.SIGKILL)
    server.process.wait(timeout=grace)
    kill_deadline = time.monotonic() + grace
    while pids_in_group(pgid) and time.monotonic() < kill_deadline:
        time.sleep(POLL_INTERVAL)


@contextmanager
def running_server(name: str, command: Sequence[str], **kwargs) -> Iterator[Server]:
    server = start_server(name, command, **kwargs)
    try:
        yield server
    finally:
        stop_server(server)
