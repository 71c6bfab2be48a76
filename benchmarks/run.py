"""Times this project against the original design and DuckDB on the same prod files.

    uv run python -m benchmarks.run --set smoke|medium|shaped|small-files|many-files
        [--json OUT.json] [--repeat N] [--data-dir DIR] [--keep] [--only project,duckdb]
    uv run python -m benchmarks.run --set dagster [--repeat N] [--json OUT.json]
        (a Dagster run against the CLI on the medium set: benchmarks/dagster_run.py)
    uv run python -m benchmarks.run --set qa [--repeat N] [--json OUT.json]
        (the lake path on a moto server against dev and a naive append: benchmarks/qa.py)

In one run, each in a child process of its own, on the prod files of the set (generated first
by benchmarks/generate.py if missing; the files are read once beforehand so that every approach
finds them in the page cache):

1. project   `python -m edxorg_s3_ingest.loads --bucket-url … --tables … --json` (dev: Parquet)
2. original  benchmarks/original.py: dlt filesystem source → pandas chunks → per-row dicts → dlt
             `filesystem` destination, Parquet (the design of SPEC §9)
3. duckdb    benchmarks/duckdb_copy.py: `COPY (SELECT * FROM read_csv(…)) TO … (FORMAT parquet)`
4. no-op     the project's CLI again on the same state: nothing new to load
5. baseline  a bare process start + the same listing (fsspec `find` per table prefix): the
             least any no-op run can do

For each: wall seconds, CPU seconds (user + sys of the child and its worker processes, from
`wait4`), the peak memory of the child's whole process tree (benchmarks/measure.py), MB/s (MB = prod
input bytes, 10^6) and rows/s. The row counts of the project, the original and DuckDB (each counted
from its Parquet output) must equal the rows the generator wrote, or the run stops at that round,
keeping its outputs and logs in the work dir. With `--repeat N` every approach runs N times and the
median wall time is kept (with its CPU and the largest peak memory); the rounds interleave the
approaches, so that a busy machine slows them alike. `--only` runs some of the approaches (the
original design takes minutes on the medium set); the ratios are those of the approaches run.
Results: a table on stdout and JSON (default benchmarks/results/<set>.json;
benchmarks/output/smoke.json for the smoke set).
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from benchmarks import generate
from benchmarks.measure import measure as measure_child

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUTPUT = HERE / "output"
RESULTS = HERE / "results"
TABLES = generate.TABLES
MB = 1_000_000

# Targets of issue 7, checked and written into the JSON (never asserted: timing is not a test).
TARGET_SPEEDUP_VS_ORIGINAL = 20.0
TARGET_WALL_VS_DUCKDB = 1.0  # issue 18, on medium and shaped (issue 7 asked 1.3)
TARGET_WALL_VS_DUCKDB_SMALL_FILES = 2.0
TARGET_PEAK_RSS_MB = 600.0
TARGET_NOOP_VS_BASELINE = 1.5
TARGETS_OF_SET = {
    "medium": ("speedup_vs_original", "project_over_duckdb_wall", "project_peak_rss_mb"),
    "small-files": ("project_over_duckdb_wall",),
    "many-files": ("project_over_duckdb_wall", "noop_over_baseline_wall"),
    "shaped": ("project_over_duckdb_wall", "project_peak_rss_mb"),
}
"""The targets issues 7 and 18 set for each set (the speed-up is about the medium set: on 2 KB files
both the original and the project pay mostly per-file costs; the no-op target is about 10,000
files); a set not named here (smoke) is checked against all of them, for show."""

APPROACHES = ("project", "noop", "original", "duckdb", "baseline", "process_start")
OUTPUT_APPROACHES = ("project", "original", "duckdb")
"""The approaches whose output rows are counted."""


BARE_LISTING = """
import sys
from fsspec.core import url_to_fs
files = 0
for table in sys.argv[2].split(","):
    prefix = f"{sys.argv[1].rstrip('/')}/db_table/{table}/prod"
    fs, root = url_to_fs(prefix)
    files += sum(1 for path in fs.find(root, detail=True) if path.endswith(".tsv"))
print(files)
"""


def measure(name: str, command: list[str], logs: Path) -> dict:
    return measure_child(name, command, logs, REPO, child_env())


def child_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "SOURCES__"))}
    # dlt's anonymous telemetry would time network calls: off for both dlt pipelines.
    env["RUNTIME__DLTHUB_TELEMETRY"] = "false"
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def parquet_rows(folder: Path) -> int:
    import pyarrow.parquet as pq  # only in the row-counting child: see count_rows

    paths = [folder] if folder.is_file() else folder.rglob("*.parquet")
    return sum(pq.ParquetFile(path).metadata.num_rows for path in paths)


def count_rows(work: Path, only: tuple[str, ...] = APPROACHES) -> dict:
    """Rows in each approach's Parquet output, per table."""
    outputs = {
        "project": lambda name, table: work / "project" / "data" / name,
        "original": lambda name, table: work / "original" / "data" / "edxorg_s3_local" / name,
        "duckdb": lambda name, table: work / "duckdb" / f"{table}.parquet",
    }
    rows: dict = {approach: {} for approach in OUTPUT_APPROACHES if approach in only}
    for table in TABLES:
        name = f"raw__edxorg__s3__tables__{table}"
        for approach in rows:
            rows[approach][table] = parquet_rows(outputs[approach](name, table))
    return rows


def compile_bytecode() -> None:
    """Compiles the environment's modules to bytecode once, before any timing, as the image does
    (Dockerfile: UV_COMPILE_BYTECODE=1) and as Python itself does on a module's first import.
    Where bytecode is never written (PYTHONDONTWRITEBYTECODE=1, set in some sandboxes), each
    child would compile every module it imports again, and the benchmark would time the
    compiler: importing the code location and building its definitions took 7.0 s instead of
    2.0 s (2026-12-07), in each Dagster process. Up-to-date files are skipped (a few seconds)."""
    folders = [sysconfig.get_paths()["purelib"], str(REPO / "edxorg_s3_ingest")]
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", *folders], check=True)


def warm_cache(root: Path, files: list[dict]) -> None:
    for entry in files:
        with (root / entry["path"]).open("rb") as stream:
            while stream.read(8 << 20):
                pass


def run_once(root: Path, work: Path, tables: str, only: tuple[str, ...] = APPROACHES) -> dict:
    """One measurement of the approaches `only` names; fresh output folders."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    logs = work / "logs"
    py = sys.executable
    project_args = [
        "--bucket-url",
        str(root),
        "--data-dir",
        str(work / "project" / "data"),
        "--pipelines-dir",
        str(work / "project" / "pipelines"),
        "--tables",
        tables,
        "--json",
    ]
    cli = [py, "-m", "edxorg_s3_ingest.loads", *project_args]
    commands = {"project": cli, "noop": cli}
    commands["original"] = [
        py,
        "-m",
        "benchmarks.original",
        "--bucket-url",
        str(root),
        "--out",
        str(work / "original" / "data"),
        "--pipelines-dir",
        str(work / "original" / "pipelines"),
        "--tables",
        tables,
    ]
    commands["duckdb"] = [
        py,
        "-m",
        "benchmarks.duckdb_copy",
        "--bucket-url",
        str(root),
        "--out",
        str(work / "duckdb"),
        "--tables",
        tables,
    ]
    commands["baseline"] = [py, "-c", BARE_LISTING, str(root), tables]
    commands["process_start"] = [py, "-c", "pass"]
    runs = {
        name: measure(name, command, logs) for name, command in commands.items() if name in only
    }

    # Rows, each counted from the approach's own output, in a child: the parent stays small,
    # since a child's peak RSS (wait4) includes the parent's pages it was forked with.
    counted = subprocess.run(
        [py, "-m", "benchmarks.run", "--count-rows", str(work), "--only", ",".join(only)],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    )
    rows = json.loads(counted.stdout)
    if "project" in runs:
        project_report = json.loads(runs["project"]["stdout"])
        rows["project_report"] = {t: project_report["tables"][t]["rows_loaded"] for t in TABLES}
    if "noop" in runs:
        noop_report = json.loads(runs["noop"]["stdout"])
        noop_loaded = noop_report["totals"]["files_loaded"]
        if noop_loaded or not noop_report["ok"]:
            raise SystemExit(
                f"the no-op re-run loaded {noop_loaded} files (ok={noop_report['ok']})"
            )
    listed = int(runs["baseline"]["stdout"]) if "baseline" in runs else None
    for result in runs.values():
        result.pop("stdout")
    return {"runs": runs, "rows": rows, "listed_files": listed}


def expected_rows(files: list[dict]) -> dict:
    """The rows the generator wrote, per table."""
    return {t: sum(f["rows"] for f in files if f["table"] == t) for t in TABLES}


def check_rows(files: list[dict], measurement: dict, work: Path) -> None:
    """Stops at the first round whose tables differ from what the generator wrote, keeping
    that round's outputs and logs (the next round would remove them) to find out why."""
    expected = expected_rows(files)
    for name, rows in measurement["rows"].items():
        if rows != expected:
            raise SystemExit(
                f"{name} loaded {rows}, the generator wrote {expected}; this round's tables,"
                f" pipelines and logs are kept in {work}"
            )


def median_run(samples: list[dict]) -> dict:
    """The sample with the median wall time, with the largest peak RSS of all samples."""
    ordered = sorted(samples, key=lambda s: s["wall_s"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["peak_rss_mb"] = max(s["peak_rss_mb"] for s in samples)
    chosen["wall_s_all"] = [s["wall_s"] for s in samples]
    return chosen


def summarize(set_name: str, root: Path, files: list[dict], measurements: list[dict]) -> dict:
    prod_bytes = sum(f["bytes"] for f in files)
    expected = expected_rows(files)
    for measurement in measurements:
        listed = measurement["listed_files"]
        if listed is not None and listed != len(files):
            raise SystemExit(f"listed {measurement['listed_files']} files, {len(files)} written")
    total_rows = sum(expected.values())
    approaches = {}
    for name in measurements[0]["runs"]:
        result = median_run([m["runs"][name] for m in measurements])
        if name in ("project", "original", "duckdb"):
            result["mb_per_s"] = round(prod_bytes / MB / result["wall_s"], 1)
            result["rows_per_s"] = round(total_rows / result["wall_s"])
            result["rows"] = sum(measurements[0]["rows"][name].values())
        approaches[name] = result
    ratios = _ratios(approaches)
    duckdb_target = (
        TARGET_WALL_VS_DUCKDB_SMALL_FILES if "files" in set_name else TARGET_WALL_VS_DUCKDB
    )
    measured = {**ratios}
    if "project" in approaches:
        measured["project_peak_rss_mb"] = approaches["project"]["peak_rss_mb"]
    bounds = {
        "speedup_vs_original": (">=", TARGET_SPEEDUP_VS_ORIGINAL),
        "project_over_duckdb_wall": ("<=", duckdb_target),
        "project_peak_rss_mb": ("<=", TARGET_PEAK_RSS_MB),
        "noop_over_baseline_wall": ("<=", TARGET_NOOP_VS_BASELINE),
    }
    wanted = TARGETS_OF_SET.get(set_name, tuple(bounds))
    targets = {}
    for name, (sign, bound) in bounds.items():
        if name in wanted and name in measured:
            value = measured[name]
            met = value >= bound if sign == ">=" else value <= bound
            targets[name] = {"target": f"{sign} {bound}", "met": met}
    return {
        "set": set_name,
        "landing_zone": _shown(root),
        "input": {
            "prod_files": len(files),
            "prod_bytes": prod_bytes,
            "prod_mb": round(prod_bytes / MB, 1),
            "rows": total_rows,
            "rows_per_table": expected,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_1min_at_start": [m.get("load_at_start") for m in measurements],
        },
        "repeat": len(measurements),
        "rows_equal": True,
        "rows": measurements[0]["rows"],
        "approaches": approaches,
        "ratios": ratios,
        "targets": targets,
    }


RATIOS = {
    "project_over_original_wall": ("project", "original", "wall_s", 4),
    "speedup_vs_original": ("original", "project", "wall_s", 2),
    "project_over_duckdb_wall": ("project", "duckdb", "wall_s", 3),
    "project_over_duckdb_cpu": ("project", "duckdb", "cpu_s", 3),
    "noop_over_baseline_wall": ("noop", "baseline", "wall_s", 2),
}
"""Each ratio: numerator approach, denominator approach, what is compared, decimals."""


def _ratios(approaches: dict) -> dict:
    """The ratios between the approaches that ran."""
    return {
        name: round(approaches[top][what] / approaches[bottom][what], digits)
        for name, (top, bottom, what, digits) in RATIOS.items()
        if top in approaches and bottom in approaches
    }


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


LABELS = {
    "project": "project CLI",
    "original": "original (pandas→dicts→dlt)",
    "duckdb": "DuckDB COPY",
    "noop": "project no-op re-run",
    "baseline": "bare start + listing",
    "process_start": "bare process start",
}


def table(result: dict) -> str:
    head = (
        f"{'approach':30} {'wall s':>8} {'cpu s':>8} {'peak MB':>8} {'MB/s':>7} {'rows/s':>10}"
        f" {'load':>5}"
    )
    lines = [head, "-" * len(head)]
    for name, r in result["approaches"].items():
        mbs = f"{r['mb_per_s']:7.1f}" if "mb_per_s" in r else f"{'':7}"
        rps = f"{r['rows_per_s']:10,}" if "rows_per_s" in r else f"{'':10}"
        lines.append(
            f"{LABELS[name]:30} {r['wall_s']:8.2f} {r['cpu_s']:8.2f} {r['peak_rss_mb']:8.0f}"
            f" {mbs} {rps} {r['load_1min_before']:5.2f}"
        )
    i = result["input"]
    ratios = result["ratios"]
    counted = ", ".join(sorted(result["rows"].keys() - {"project_report"}))
    lines.append(
        f"input: {i['prod_files']} prod files, {i['prod_mb']} MB, {i['rows']:,} rows "
        f"(equal in every output: {counted}); repeat {result['repeat']}"
    )
    shown = {
        "project_over_original_wall": "project/original wall {:.3f}",
        "speedup_vs_original": "(speed-up {}x)",
        "project_over_duckdb_wall": "project/DuckDB wall {:.2f}",
        "project_over_duckdb_cpu": "(CPU {:.2f})",
        "noop_over_baseline_wall": "no-op/baseline wall {:.2f}",
    }
    lines.append(
        " ".join(text.format(ratios[name]) for name, text in shown.items() if name in ratios)
    )
    lines.append(
        "targets: "
        + ", ".join(
            f"{name} {t['target']}: {'met' if t['met'] else 'NOT met'}"
            for name, t in result["targets"].items()
        )
    )
    return "\n".join(lines)


def _approaches(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in APPROACHES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown approach(es) {', '.join(unknown) or '(none given)'}: "
            f"choose among {', '.join(APPROACHES)}"
        )
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", choices=[*sorted(generate.SETS), "dagster", "qa"])
    parser.add_argument("--json", type=Path, help="where the results go")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=generate.DEFAULT_DIR)
    parser.add_argument("--work-dir", type=Path, help="default benchmarks/output/<set>")
    parser.add_argument("--keep", action="store_true", help="keep the outputs of the last run")
    parser.add_argument(
        "--only",
        type=_approaches,
        default=APPROACHES,
        help=f"approaches to run, comma-separated (default all: {','.join(APPROACHES)})",
    )
    parser.add_argument("--count-rows", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.count_rows:
        print(json.dumps(count_rows(args.count_rows, args.only)))
        return
    if not args.set:
        parser.error("--set is required")
    if args.set == "dagster":
        from benchmarks import dagster_run

        options = ["--repeat", str(args.repeat), "--data-dir", str(args.data_dir)]
        options += ["--json", str(args.json)] if args.json else []
        options += ["--work-dir", str(args.work_dir)] if args.work_dir else []
        return dagster_run.main(options)
    if args.set == "qa":
        from benchmarks import qa

        options = ["--repeat", str(args.repeat), "--data-dir", str(args.data_dir)]
        options += ["--json", str(args.json)] if args.json else []
        options += ["--work-dir", str(args.work_dir)] if args.work_dir else []
        return qa.main(options)
    root = generate.ensure(args.set, args.data_dir)
    files = generate.prod_files(root)
    if args.set != "smoke":  # seconds in CI, not a timing
        compile_bytecode()
    warm_cache(root, files)
    work = args.work_dir or OUTPUT / args.set
    measurements = []
    for _ in range(args.repeat):
        load = os.getloadavg()[0]
        measurement = run_once(root, work, ",".join(TABLES), args.only)
        check_rows(files, measurement, work)
        measurement["load_at_start"] = round(load, 2)
        measurements.append(measurement)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    result = summarize(args.set, root, files, measurements)
    print(table(result))
    target = args.json or (
        OUTPUT / "smoke.json" if args.set == "smoke" else RESULTS / f"{args.set}.json"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {target}")


if __name__ == "__main__":
    main()
