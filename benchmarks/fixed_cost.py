"""The fixed cost of a run: what a 3-table CLI run costs before and after its data work.

    uv run python -m benchmarks.fixed_cost [--repeat 5]

Loads a landing zone of three ~4 KB files (auth_user, student_courseenrollment,
courseware_studentmodule; written here from benchmarks/generate.py's rows) into fresh folders,
`--repeat` times, with `EDXORG_S3_INGEST_TIMELINE` set: the CLI and its workers timestamp their
milestones (edxorg_s3_ingest/timeline.py). With so little data nearly all of the wall time is
fixed cost. Printed, median over the runs, in seconds from the process start (taken just before
it is started), once the environment's and the loader's modules are compiled to bytecode
(run.compile_bytecode):

    main       the CLI's code runs (interpreter start, the CLI's imports)
    listed     every table listed, the tables with nothing new found
    worker     first table handed to a worker (the fork server started and forked it)
    read       first table's reader starts (its dlt pipeline and source built)
    committed  last table committed to its store (the last byte written)
    reported   the run's report printed
    exit       the process has exited, its workers and fork server with it

"to first read" is `read`, "after last write" is `exit - committed`. Also shown, on the way to
the first read: when the CLI forked the workers' fork server (`server`; cli.start_workers_early)
and when the server's imports were done (`preloaded`; running/preload.py).
"""

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import generate
from benchmarks.run import REPO, child_env, compile_bytecode
from edxorg_s3_ingest.timeline import CPU_ENV

COURSE = "MITx-1.001x-2014_T1"
STEPS = ("main", "listed", "worker", "read", "committed", "reported", "exit")
SHOWN = ("main", "server", "listed", "preloaded", *STEPS[2:])
"""STEPS and the fork server's milestones, in the order a run reaches them when the CLI forked
the server (`server` is missing where the runner started it instead)."""


def tiny_zone(root: Path) -> None:
    """One ~4 KB quoted export per table, in the landing zone's layout."""
    for table in generate.TABLES:
        content, _ = generate.export_bytes(table, COURSE, 4_000, seed=1, variant=1, quoted=True)
        folder = root / "db_table" / table / "prod" / COURSE
        folder.mkdir(parents=True)
        (folder / f"{hashlib.sha256(content).hexdigest()}.tsv").write_bytes(content)


def one_run(zone: Path, work: Path) -> dict[str, float]:
    """The seconds from the process start to each milestone of one run (first `worker` and
    `read`, last `committed`), and as `cpu <milestone>` the CPU seconds the process that
    reached it had spent then (timeline.py)."""
    timeline = work / "timeline.txt"
    env = child_env() | {"EDXORG_S3_INGEST_TIMELINE": str(timeline), CPU_ENV: "1"}
    command = [sys.executable, "-m", "edxorg_s3_ingest.loads", "--bucket-url", str(zone)]
    command += ["--data-dir", str(work / "data"), "--pipelines-dir", str(work / "pipelines")]
    command += ["--tables", ",".join(generate.TABLES), "--json"]
    start = time.time()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    end = time.time()
    if done.returncode != 0 or not json.loads(done.stdout)["ok"]:
        raise SystemExit(f"the run failed: {done.stderr}")
    seen: dict[str, float] = {"exit": end - start}
    for line in timeline.read_text().splitlines():
        stamp, _, event = line.split(" ", 2)
        event, _, cpu = event.rpartition(" cpu=")
        step, at = event.split(" ")[0], float(stamp) - start
        if step == "committed":
            seen[step] = max(seen.get(step, 0.0), at)
        elif step not in seen:
            seen[step] = at
            seen[f"cpu {step}"] = float(cpu)
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    # As the image is, and as the other sets measure: a checkout whose modules were never
    # compiled (PYTHONDONTWRITEBYTECODE=1) compiles the loader's own modules in the CLI, the
    # fork server and each worker, ~0.05 s of CPU on the way to the first read.
    compile_bytecode()
    with tempfile.TemporaryDirectory(prefix="fixed-cost-") as folder:
        zone = Path(folder) / "zone"
        tiny_zone(zone)
        runs = []
        for number in range(args.repeat):
            work = Path(folder) / f"run-{number}"
            work.mkdir()
            runs.append(one_run(zone, work))
    print(f"{args.repeat} runs, load {os.getloadavg()[0]:.2f} (1 min) at the end")
    for step in SHOWN:
        values = [run[step] for run in runs if step in run]
        if not values:  # `worker`: one CPU, the tables load in the CLI process
            continue
        shown = " ".join(f"{value:.2f}" for value in values)
        print(f"{step:10} {statistics.median(values):6.2f} s   ({shown})")
    # The critical path, one process after the other: the CLI until it starts the server, the
    # server until its imports are done, the first worker until it reads.
    path = [("server", "CLI until the server"), ("preloaded", "server until its imports")]
    path = [(step, said) for step, said in path if all(f"cpu {step}" in run for run in runs)]
    path.append(("read", "first worker until its read"))
    if all("cpu worker" in run for run in runs):
        parts = {step: statistics.median(run[f"cpu {step}"] for run in runs) for step, _ in path}
        sums = sorted(sum(run[f"cpu {step}"] for step, _ in path) for run in runs)
        said = ", ".join(f"{what} {parts[step]:.3f}" for step, what in path)
        print(f"CPU s on the way (medians): {said}; sum {statistics.median(sums):.3f}")
    first_read = statistics.median(run["read"] for run in runs)
    after = statistics.median(run["exit"] - run["committed"] for run in runs)
    print(f"to first read {first_read:.2f} s, after last write {after:.2f} s")


if __name__ == "__main__":
    main()
