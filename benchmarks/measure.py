"""Running one benchmark child and measuring it: wall, CPU and memory of its whole process tree.

CPU comes from `wait4` (user + sys of the child and every descendant it waited for). Memory has
two figures, because the project's CLI runs tables in worker processes:

- `peak_rss_mb`: the highest total memory of the child's process tree at any moment, sampled
  every SAMPLE_SECONDS from /proc (proportional set size, so that pages a forked worker shares
  with its parent are counted once). This is what the machine had to hold.

The sampler shares the measured machine, so it must stay cheap: reading a process's
`smaps_rollup` (its PSS) walks its page tables, ~1 ms per 100 MB resident, and doing that for
every process at every tick took 10-40% of a core from the two the benchmark measures (more for
approaches with more or larger processes). So each tick reads only the cheap resident size
(`statm`) and carries each process's last PSS by the change of its resident size since; the PSS
itself is read again when that change reaches PSS_REFRESH_KIB or after PSS_REFRESH_SECONDS. The
tree is found from the tree's own `children` files, not by reading every process's `stat`.
- `largest_process_rss_mb`: the largest resident set of any single process of the tree (`wait4`).

CPU has two figures too: `cpu_s` from `wait4` counts only the processes the child waited for;
`tree_cpu_s` is the user + sys time of every process seen in the child's tree, each as last
sampled (up to SAMPLE_SECONDS of each process's end missed): it also counts processes nobody
waits for, such as the step processes of Dagster's executor, forked by a server that outlives
the run.
"""

import os
import subprocess
import threading
import time
from pathlib import Path

SAMPLE_SECONDS = 0.05
PSS_REFRESH_KIB = 16 << 10
PSS_REFRESH_SECONDS = 0.5
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def measure(name: str, command: list[str], logs: Path, cwd: Path, env: dict) -> dict:
    """Runs one child to completion and measures it; its stdout is returned as `stdout`."""
    logs.mkdir(parents=True, exist_ok=True)
    out_path, err_path = logs / f"{name}.stdout", logs / f"{name}.stderr"
    load_before = os.getloadavg()[0]
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        child = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=err)
        sampler = TreeMemory(child.pid)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        sampler.stop()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(
            f"{name} failed (exit {code}): {' '.join(command)}\n{err_path.read_text()[-3000:]}"
        )
    largest = usage.ru_maxrss / 1024  # KiB on Linux
    return {
        "wall_s": round(wall, 3),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "user_s": round(usage.ru_utime, 3),
        "sys_s": round(usage.ru_stime, 3),
        "tree_cpu_s": round(max(sampler.cpu_s, usage.ru_utime + usage.ru_stime), 3),
        "peak_rss_mb": round(max(sampler.peak_mb, largest), 1),
        "largest_process_rss_mb": round(largest, 1),
        "processes": sampler.processes,
        "load_1min_before": round(load_before, 2),
        "stdout": out_path.read_text(),
    }


class TreeMemory:
    """Samples the total memory of a process and its descendants on a thread of its own."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_mb = 0.0
        self.processes = 1
        self._ticks: dict[int, int] = {}
        self._pss: dict[int, tuple[int, int, float]] = {}  # pid: (PSS, resident then, when)
        self._seen: set[int] = set()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()
        self.processes = max(1, len(self._seen))

    @property
    def cpu_s(self) -> float:
        return sum(self._ticks.values()) / os.sysconf("SC_CLK_TCK")

    def _run(self) -> None:
        while True:
            tree = _tree(self.pid)
            self._seen.update(tree)
            now = time.monotonic()
            for pid in tree:
                self._ticks[pid] = max(self._ticks.get(pid, 0), _cpu_ticks(pid))
            self.peak_mb = max(self.peak_mb, sum(self._memory_kib(pid, now) for pid in tree) / 1024)
            if self._done.wait(SAMPLE_SECONDS):
                return

    def _memory_kib(self, pid: int, now: float) -> int:
        """The process's PSS: read when stale, else its last reading moved by its resident size."""
        resident = _resident_kib(pid)
        if resident is None:
            return 0
        known = self._pss.get(pid)
        if (
            known is None
            or abs(resident - known[1]) >= PSS_REFRESH_KIB
            or now - known[2] >= PSS_REFRESH_SECONDS
        ):
            known = self._pss[pid] = (_pss_kib(pid, resident), resident, now)
        return max(0, known[0] + resident - known[1])


def _tree(root: int) -> list[int]:
    """The root and all its live descendants."""
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(_children(pid))
    return tree


def _children(pid: int) -> list[int]:
    """A process's children: each of its threads lists those it forked."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    children = []
    for thread in threads:
        try:
            children += [
                int(c) for c in Path(f"/proc/{pid}/task/{thread}/children").read_text().split()
            ]
        except OSError:
            continue
    return children


def _cpu_ticks(pid: int) -> int:
    """User + sys time of a live process, in clock ticks (fields 14 and 15 of its stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    # The command name (field 2) may hold spaces and parentheses: fields follow the last ")".
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _resident_kib(pid: int) -> int | None:
    """Resident size (`statm`'s second field, in pages); None once the process is gone."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KIB
    except (OSError, IndexError, ValueError):
        return None


def _pss_kib(pid: int, resident: int) -> int:
    """Proportional set size (shared pages divided among their sharers), else the resident size."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as lines:
            for line in lines:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resident
