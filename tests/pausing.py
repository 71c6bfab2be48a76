"""A CLI run stopped at a pause point while the test does something, then let go on
(`EDXORG_S3_INGEST_PAUSE_AT`, edxorg_s3_ingest/crashpoints.py): two FIFOs, no waiting on time."""

import os
import select
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from conftest import REPO


def read_line(fifo: str, process: subprocess.Popen) -> str:
    """A line from a FIFO, or a failure if `process` ends first (no waiting on time)."""
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        data = b""
        while not data.endswith(b"\n"):
            ready, _, _ = select.select([fd], [], [], 1.0)
            if ready:
                chunk = os.read(fd, 100)
                data += chunk
                if chunk:
                    continue
            if process.poll() is not None:
                raise AssertionError(f"run ended (exit {process.returncode}) before pausing")
        return data.decode().strip()
    finally:
        os.close(fd)


@dataclass
class PausedRun:
    """How a paused CLI run ended, and what the test did while it was paused."""

    pid: int
    """The CLI's process."""
    paused_pid: str
    """The process that paused: the CLI's, or one of its workers'."""
    meanwhile: object
    returncode: int
    stdout: str
    stderr: str


class Pause:
    """A run stopped at `point` (`<crashpoint>:<n>`) and let go on: the two FIFOs in `folder`
    and the environment variable that names them."""

    def __init__(self, folder: Path, point: str) -> None:
        folder.mkdir()
        os.mkfifo(folder / "paused")
        os.mkfifo(folder / "resume")
        self.folder = folder
        self.env = {"EDXORG_S3_INGEST_PAUSE_AT": f"{point}:{folder}"}

    def wait(self, process: subprocess.Popen) -> str:
        """What the paused process wrote (its pid), once it has paused."""
        return read_line(str(self.folder / "paused"), process)

    def resume(self) -> None:
        with open(self.folder / "resume", "w") as resume:
            resume.write("go\n")

    def run_cli(self, args: list[str], env: dict, meanwhile: Callable[[], object]) -> PausedRun:
        """`edxorg-s3-ingest <args>` run until it pauses, `meanwhile()` called, the run let go
        on to its end."""
        process = subprocess.Popen(
            [sys.executable, "-m", "edxorg_s3_ingest.loads", *args],
            cwd=REPO,
            env={**env, **self.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            paused_pid = self.wait(process)
            done = meanwhile()
            self.resume()
            out, err = process.communicate(timeout=300)
        finally:
            if process.poll() is None:
                process.kill()
        return PausedRun(process.pid, paused_pid, done, process.returncode, out, err)
