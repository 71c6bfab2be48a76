"""The CLI on a terminal: a pseudo-terminal as its stderr (where the live line goes), its
stdout (the summary or `--json`) to a file."""

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

from conftest import REPO


def start_on_terminal(
    args: tuple[str, ...], stdout: Path, env: dict | None = None, columns: int = 250
) -> "Screen":
    """Starts the CLI with a terminal of `columns` as its stderr (wide enough that no table's
    line is cut), its stdout into the file `stdout`."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    with open(stdout, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "edxorg_s3_ingest.loads", *args],
            cwd=REPO,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "", **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=terminal,
        )
    os.close(terminal)
    return Screen(controller, process)


def run_on_terminal(
    args: tuple[str, ...], stdout: Path, env: dict | None = None, timeout: float = 300.0
) -> tuple[int, str]:
    """Runs the CLI to its end on a terminal: its exit status and what the terminal got."""
    screen = start_on_terminal(args, stdout, env)
    try:
        screen.read_to_end(limit=timeout)
        return screen.process.wait(timeout=timeout), screen.text
    finally:
        if screen.process.poll() is None:
            screen.process.kill()
        os.close(screen.controller)


class Screen:
    """What the CLI writes to its terminal (the controller side of a pty), read as it comes."""

    def __init__(self, controller: int, process: subprocess.Popen) -> None:
        self.controller = controller
        self.process = process
        self.text = ""

    def _read(self, timeout: float) -> bool:
        """Reads what is there within `timeout`; False once the terminal is closed."""
        ready, _, _ = select.select([self.controller], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.controller, 65536)
        except OSError:  # EIO: every process writing to it has ended
            return False
        self.text += chunk.decode(errors="replace")
        return bool(chunk)

    def wait_for(self, pattern: str, limit: float = 300.0) -> str:
        """The first line (between redraws) that matches `pattern`; fails if the CLI ends
        first, or after `limit` seconds (a guard against hanging, not a synchronisation)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            for line in re.split(r"[\r\n]", self.text):
                if re.search(pattern, line):
                    return line
            if not self._read(1.0) or self.process.poll() is not None:
                break
        raise AssertionError(f"{pattern!r} never shown; the terminal got:\n{self.text[-3000:]}")

    def read_to_end(self, limit: float = 300.0) -> None:
        """Everything until the CLI has ended and written nothing more."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and self._read(0.2):
            if (
                self.process.poll() is not None
                and not select.select([self.controller], [], [], 0)[0]
            ):
                return
