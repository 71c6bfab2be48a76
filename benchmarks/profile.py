"""Where the project's time goes, per dlt step and inside the TSV reader.

    uv run python -m benchmarks.profile --set medium            # steps of a CLI run
    uv run python -m benchmarks.profile --set medium --reader   # the reader's parts, per table

Steps: runs the CLI in this process (fresh output folders under benchmarks/output/profile/) with
dlt's extract, normalize and load steps of every table timed: wall seconds, CPU seconds (all
threads) and the process's RSS high-water mark after the step.

Reader: reads every prod file of each table with `TsvFile` on this thread alone and splits its
CPU time into the pre-scan (quoting decision, `tsv_scan.scan`), pyarrow's CSV parsing
(`TsvFile._read`), the edX escapes and raw CRs marked before it and restored after
(`escapes.mark`, `escapes.unmark`; `escapes.decode_columns` for segments with a ragged line)
and the rest. pandas is imported first: pyarrow imports it on first use, and dlt does in a load.

For a sampling profile of everything: `uv run --with py-spy py-spy record -o out.txt -f raw
--threads -- .venv/bin/python -m edxorg_s3_ingest.loads --bucket-url <set> ...`.
"""

import argparse
import functools
import resource
import shutil
import sys
import time
from collections import defaultdict

from benchmarks import generate
from benchmarks.run import OUTPUT, TABLES


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def steps(root, tables: list[str]) -> None:
    from dlt.pipeline.pipeline import Pipeline

    from edxorg_s3_ingest import cli

    rows = []
    for name in ("extract", "normalize", "load"):
        original = getattr(Pipeline, name)

        @functools.wraps(original)
        def timed(self, *args, __original=original, __name=name, **kwargs):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return __original(self, *args, **kwargs)
            finally:
                rows.append(
                    (
                        self.pipeline_name.removeprefix("edxorg_s3__"),
                        __name,
                        time.perf_counter() - wall,
                        time.process_time() - cpu,
                        _rss_mb(),
                    )
                )

        setattr(Pipeline, name, timed)
    work = OUTPUT / "profile"
    shutil.rmtree(work, ignore_errors=True)
    started, cpu = time.perf_counter(), time.process_time()
    code = cli.main(
        [
            "--bucket-url",
            str(root),
            "--data-dir",
            str(work / "data"),
            "--pipelines-dir",
            str(work / "pipelines"),
            "--tables",
            ",".join(tables),
        ]
    )
    total, total_cpu = time.perf_counter() - started, time.process_time() - cpu
    print(f"\n{'table':28} {'step':10} {'wall s':>7} {'cpu s':>7} {'max RSS MB':>11}")
    for table, step, wall, step_cpu, rss in rows:
        print(f"{table:28} {step:10} {wall:7.2f} {step_cpu:7.2f} {rss:11.0f}")
    steps_wall = sum(row[2] for row in rows)
    print(f"{'all tables':28} {'(steps)':10} {steps_wall:7.2f}")
    print(f"{'CLI run':28} {'(total)':10} {total:7.2f} {total_cpu:7.2f} {_rss_mb():11.0f}")
    shutil.rmtree(work, ignore_errors=True)
    sys.exit(code)


def reader(root, tables: list[str]) -> None:
    import pandas  # noqa: F401 - see the module's docstring

    import edxorg_s3_ingest.reading.escapes as escapes
    import edxorg_s3_ingest.reading.tsv as tsv
    import edxorg_s3_ingest.reading.tsv_scan as tsv_scan
    from edxorg_s3_ingest.landing.listing import list_prod_files

    spent: dict[str, float] = defaultdict(float)

    def timed(owner, name: str, label: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            cpu = time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                spent[label] += time.process_time() - cpu

        setattr(owner, name, wrapper)

    timed(tsv_scan, "scan", "pre-scan")
    timed(tsv.TsvFile, "_read", "pyarrow parse")
    timed(escapes, "mark", "escape marking")
    timed(escapes, "unmark", "escape unmarking")
    timed(escapes, "decode_columns", "escape decoding")
    print(f"{'table':28} {'MB':>7} {'cpu s':>7} {'MB/cpu-s':>8}  parts (cpu s)")
    for table in tables:
        spent.clear()
        files = list_prod_files(str(root), table).files
        cpu = time.process_time()
        for file in files:
            for _ in tsv.TsvFile(file.url.removeprefix("file://"), lambda reject: None).batches():
                pass
        total = time.process_time() - cpu
        mb = sum(file.size for file in files) / 1e6
        parts = ", ".join(f"{label} {seconds:.2f}" for label, seconds in spent.items())
        rest = total - sum(spent.values())
        print(f"{table:28} {mb:7.0f} {total:7.2f} {mb / total:8.0f}  {parts}, rest {rest:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", required=True, choices=sorted(generate.SETS))
    parser.add_argument("--data-dir", default=generate.DEFAULT_DIR)
    parser.add_argument("--tables", default=",".join(TABLES))
    parser.add_argument("--reader", action="store_true", help="profile the TSV reader alone")
    args = parser.parse_args()
    root = generate.ensure(args.set, args.data_dir)
    tables = args.tables.split(",")
    (reader if args.reader else steps)(root, tables)


if __name__ == "__main__":
    main()
