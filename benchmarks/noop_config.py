"""A run of the sample with nothing new, configured two ways (issue 15's target: the first
within 1.5x of the second):

1. the repository's default configuration: `.dlt/config.toml` supplies the data and pipelines
   dirs, the sample is the default landing zone;
2. every setting as a flag (`--bucket-url`, `--data-dir`, `--pipelines-dir`).

    uv run python -m benchmarks.noop_config [--repeat N]

Both run the CLI from the repository root, so both use the repository's `.dlt/data` and
`.dlt/pipelines` (loaded once first); the median wall time of N runs of each is printed.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SETTINGS_VARIABLES = (
    "SOURCES__EDXORG_S3__BUCKET_URL",
    "EDXORG_S3_INGEST__DATA_DIR",
    "EDXORG_S3_INGEST__PIPELINES_DIR",
    "DAGSTER_ENVIRONMENT",
)
"""Unset for both: the first takes every setting from .dlt/config.toml and the defaults."""
SAMPLE = REPO / "edxorg_s3_ingest" / "sample_landing_zone"


def timed(args: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "edxorg_s3_ingest.loads", *args],
        cwd=REPO,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    repeat = parser.parse_args().repeat
    env = {key: value for key, value in os.environ.items() if key not in SETTINGS_VARIABLES}
    flags = ["--bucket-url", str(SAMPLE), "--data-dir", ".dlt/data"]
    flags += ["--pipelines-dir", ".dlt/pipelines"]
    timed(flags, env)  # the load, if any: the runs below find nothing new
    configured = [timed([], env) for _ in range(repeat)]
    flagged = [timed(flags, env) for _ in range(repeat)]
    default, given = statistics.median(configured), statistics.median(flagged)
    print(f"no-op, default configuration  {default:.2f} s (median of {repeat})")
    print(f"no-op, every setting a flag   {given:.2f} s (median of {repeat})")
    print(f"ratio                          {default / given:.2f}x (target: at most 1.5x)")


if __name__ == "__main__":
    main()
