"""Many small files from S3: the project's CLI against a local moto server, with the landing
zone's GETs in flight `--concurrency` at a time, then one at a time.

    uv run python -m benchmarks.s3_files [--files 2000] [--concurrency 8] [--repeat 1]
        [--latency-ms 0] [--workers N] [--json OUT.json]

Starts `python -m moto.server` on a free 127.0.0.1 port (stopped by its PID at the end), puts
`--files` exports of about 2 KB (benchmarks/generate.py's rows, spread over its three tables,
one file per course) into `s3://landing/edx/db_table/<table>/prod/<course>/<sha256>.tsv`, then
runs `python -m edxorg_s3_ingest.loads --bucket-url s3://landing/edx ... --json` on fresh
output folders once per concurrency, setting `EDXORG_S3_INGEST_FETCH_CONCURRENCY`
(source.FETCH_CONCURRENCY: the GETs a table's load keeps in flight). For each: wall seconds,
files/s and MB/s (MB = 10^6 bytes of the files), and the CPU seconds of the CLI process with the
children it waited for (`wait4`; with `--workers` > 1 the workers are the fork server's children
and are not counted). The rows each run reports must equal the rows generated. Prints JSON.

moto answers every request in Python, in one process, on the same cores as the CLI: without
latency, a GET is a millisecond or two of CPU on each side and concurrency can only overlap
some of it. S3 answers a GET after tens of milliseconds whatever its size; `--latency-ms`
puts a TCP relay in front of moto that holds every chunk the CLI sends (a request) that long
before passing it on: the latency that concurrent GETs hide.
"""

import argparse
import asyncio
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks import generate

REPO = Path(__file__).resolve().parent.parent
BUCKET, PREFIX = "landing", "edx"
KEYS = {"AWS_ACCESS_KEY_ID": "benchmark", "AWS_SECRET_ACCESS_KEY": "benchmark"}
CONCURRENCY_ENV = "EDXORG_S3_INGEST_FETCH_CONCURRENCY"
MB = 1_000_000


def aws_env(endpoint: str | None = None) -> dict:
    """This environment without real AWS settings: fake keys, no profile, no metadata service."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(
        KEYS,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_CONFIG_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        RUNTIME__DLTHUB_TELEMETRY="false",
    )
    env = {k: v for k, v in env.items() if not k.startswith(("DAGSTER_", "SOURCES__"))}
    if endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_moto(log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=aws_env(),
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"moto server exited ({server.returncode}):\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                return server, endpoint
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.05)
    stop(server)
    raise SystemExit(f"moto server not ready after 60 s:\n{log.read_text()}")


def stop(server: subprocess.Popen) -> None:
    """Ends the moto server by its PID: SIGTERM, then SIGKILL if it lingers."""
    if server.poll() is not None:
        return
    os.kill(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.kill(server.pid, signal.SIGKILL)
        server.wait(timeout=10)


class LatencyRelay:
    """127.0.0.1:<port> relaying TCP to `target`, each chunk from the client held `latency`
    seconds first (asyncio, on a thread of its own)."""

    def __init__(self, target_port: int, latency: float) -> None:
        self.target_port, self.latency = target_port, latency
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._relay, "127.0.0.1", 0)
        )
        self.port = self.server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _relay(self, client_in, client_out) -> None:
        server_in, server_out = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(source, sink, delay: float) -> None:
            try:
                while data := await source.read(1 << 16):
                    if delay:
                        await asyncio.sleep(delay)
                    sink.write(data)
                    await sink.drain()
            except ConnectionError:
                pass
            finally:
                sink.close()

        await asyncio.gather(
            pipe(client_in, server_out, self.latency), pipe(server_in, client_out, 0)
        )

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def exports(files: int, seed: int) -> list[tuple[str, bytes, int]]:
    """(key, content, rows) of `files` exports of about SMALL_FILE_BYTES, one per course,
    spread over generate.TABLES."""
    rng = random.Random(f"{seed}:s3-files")
    share, extra = divmod(files, len(generate.TABLES))
    courses = generate.course_ids(share + 1, rng)
    made = []
    for number, table in enumerate(generate.TABLES):
        for c, course in enumerate(courses[: share + (number < extra)]):
            size = int(generate.SMALL_FILE_BYTES * rng.uniform(0.8, 1.2))
            content, rows = generate.export_bytes(
                table, course, size, rng.getrandbits(64), c, c % 7 != 3
            )
            digest = hashlib.sha256(content).hexdigest()
            made.append((f"{PREFIX}/db_table/{table}/prod/{course}/{digest}.tsv", content, rows))
    return made


def upload(endpoint: str, files: list[tuple[str, bytes, int]]) -> None:
    import boto3  # here: the parent needs it only for the upload

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **_keys())
    s3.create_bucket(Bucket=BUCKET)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda f: s3.put_object(Bucket=BUCKET, Key=f[0], Body=f[1]), files))


def _keys() -> dict:
    return {
        "aws_access_key_id": KEYS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": KEYS["AWS_SECRET_ACCESS_KEY"],
    }


def load(endpoint: str, work: Path, concurrency: int, workers: int | None) -> dict:
    """One CLI run on fresh folders: its wall and CPU seconds, and its report."""
    command = [
        sys.executable,
        "-m",
        "edxorg_s3_ingest.loads",
        "--bucket-url",
        f"s3://{BUCKET}/{PREFIX}",
        "--tables",
        ",".join(generate.TABLES),
        "--data-dir",
        str(work / "data"),
        "--pipelines-dir",
        str(work / "pipelines"),
        "--json",
    ]
    if workers:
        command += ["--workers", str(workers)]
    env = {**aws_env(endpoint), CONCURRENCY_ENV: str(concurrency)}
    with (work / "stdout").open("wb") as out, (work / "stderr").open("wb") as err:
        started = time.perf_counter()
        child = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"the CLI failed:\n{(work / 'stderr').read_text()[-3000:]}")
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "report": json.loads((work / "stdout").read_text()),
    }


def measure(endpoint, files, concurrency, workers, repeat, scratch) -> dict:
    rows = sum(f[2] for f in files)
    size = sum(len(f[1]) for f in files)
    runs = []
    for attempt in range(repeat):
        work = Path(scratch) / f"c{concurrency}-{attempt}"
        work.mkdir()
        run = load(endpoint, work, concurrency, workers)
        report = run.pop("report")
        loaded = report["totals"]["rows_loaded"]
        if not report["ok"] or loaded != rows or report["totals"]["files_loaded"] != len(files):
            raise SystemExit(f"concurrency {concurrency}: loaded {loaded} rows of {rows}: {report}")
        runs.append(run)
    best = min(runs, key=lambda run: run["wall_s"])
    return {
        "concurrency": concurrency,
        "wall_s": round(best["wall_s"], 3),
        "cpu_s": round(best["cpu_s"], 3),
        "files_per_s": round(len(files) / best["wall_s"], 1),
        "mb_per_s": round(size / MB / best["wall_s"], 2),
        "wall_s_all": [round(run["wall_s"], 3) for run in runs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8, help="compared with 1")
    parser.add_argument("--repeat", type=int, default=1, help="runs per setting (best kept)")
    parser.add_argument("--workers", type=int, help="the CLI's --workers (default: its own)")
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="held on every request (S3: tens of ms)"
    )
    parser.add_argument("--seed", type=int, default=generate.SEED)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    files = exports(args.files, args.seed)
    with tempfile.TemporaryDirectory(prefix="s3-files-") as scratch:
        server, endpoint = start_moto(Path(scratch) / "moto.log")
        relay = None
        try:
            upload(endpoint, files)
            if args.latency_ms:
                relay = LatencyRelay(int(endpoint.rsplit(":", 1)[1]), args.latency_ms / 1000)
                endpoint = f"http://127.0.0.1:{relay.port}"
            results = [
                measure(endpoint, files, concurrency, args.workers, args.repeat, scratch)
                for concurrency in (args.concurrency, 1)
            ]
        finally:
            if relay is not None:
                relay.close()
            stop(server)
    result = {
        "files": len(files),
        "mb": round(sum(len(f[1]) for f in files) / MB, 2),
        "rows": sum(f[2] for f in files),
        "tables": list(generate.TABLES),
        "workers": args.workers,
        "latency_ms": args.latency_ms,
        "cpus": os.cpu_count(),
        "runs": results,
        "speedup": round(results[1]["wall_s"] / results[0]["wall_s"], 2),
    }
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
