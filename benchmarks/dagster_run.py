"""Times one Dagster run of a set's tables against the CLI on the same prod files.

    uv run python -m benchmarks.run --set dagster [--repeat N] [--json OUT.json]
    uv run python -m benchmarks.dagster_run [--data medium] [--repeat N] [--json OUT.json]

Each repetition, each in a child process of its own, fresh outputs, the files read once
beforehand (page cache):

1. cli      `python -m edxorg_s3_ingest.loads --tables … --json` (one worker per CPU)
2. dagster  `dagster asset materialize -m edxorg_s3_ingest.definitions --select …`: one run of
            the tables with the code location's executor (one step per table, as many at once
            as CPUs), against a Dagster home of its own (temp dir, telemetry off) whose storage
            is created beforehand, untimed, as a deployment's instance exists before its runs

The whole command is timed, code-location load included: a launched run's process loads it too
(benchmarks/README.md: "Dagster against the CLI"). Modules are compiled to bytecode first
(run.compile_bytecode), as in the image.

Both run in dev (Parquet) with the same landing zone, and each must load every generated row.
Besides the wall, CPU and peak memory of each child (benchmarks/measure.py: `cpu s` from wait4
leaves out Dagster's step processes, which a fork server that nobody waits for starts; `tree
cpu s`, sampled from /proc, counts every process of the tree), Dagster's own
account is read from the run's events: the run's duration (RUN_START to its end, what the UI
shows) and when each table step started and ended. The target (issue 14): Dagster's wall time
at most 1.3 times the CLI's.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import generate
from benchmarks.measure import measure as measure_child
from benchmarks.run import (
    OUTPUT,
    REPO,
    RESULTS,
    TABLES,
    check_rows,
    child_env,
    compile_bytecode,
    expected_rows,
    parquet_rows,
    warm_cache,
)

TARGET_DAGSTER_OVER_CLI_WALL = 1.3


def run_once(root: Path, work: Path) -> dict:
    if work.exists():
        shutil.rmtree(work)
    logs = work / "logs"
    cli = [sys.executable, "-m", "edxorg_s3_ingest.loads", "--bucket-url", str(root)]
    cli += ["--data-dir", str(work / "cli" / "data")]
    cli += ["--pipelines-dir", str(work / "cli" / "pipelines"), "--tables", ",".join(TABLES)]
    runs = {"cli": measure_child("cli", [*cli, "--json"], logs, REPO, child_env())}
    with tempfile.TemporaryDirectory(prefix="dagster-home-") as home:
        Path(home, "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        # A deployment's instance and its storage exist before any run: created untimed.
        in_child("--init-home", home)
        runs["dagster"] = measure_dagster(root, work / "dagster", Path(home), logs)
        # In children, like the row counts: this process stays small (see benchmarks.run).
        runs["dagster"].update(in_child("--account", home))
    for result in runs.values():
        result.pop("stdout")
    rows = {name: in_child("--count-rows", work / name / "data") for name in ("cli", "dagster")}
    return {"runs": runs, "rows": rows}


def in_child(flag: str, path: Path | str):
    command = [sys.executable, "-m", "benchmarks.dagster_run", flag, str(path)]
    done = subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def measure_dagster(root: Path, work: Path, home: Path, logs: Path) -> dict:
    env = {
        **child_env(),
        "DAGSTER_HOME": str(home),
        "SOURCES__EDXORG_S3__BUCKET_URL": str(root),
        "EDXORG_S3_INGEST__DATA_DIR": str(work / "data"),
        "EDXORG_S3_INGEST__PIPELINES_DIR": str(work / "pipelines"),
    }
    selection = ",".join(f"edxorg/tables/{table}" for table in TABLES)
    dagster = Path(sys.executable).with_name("dagster")
    command = [str(dagster), "asset", "materialize", "-m", "edxorg_s3_ingest.definitions"]
    return measure_child("dagster", [*command, "--select", selection], logs, REPO, env)


def init_home(home: Path) -> dict:
    """Creates the Dagster home's storage (its SQLite databases and their schema)."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        return {"runs": len(instance.get_runs())}


def run_account(home: Path) -> dict:
    """The run's duration and its steps' intervals (seconds from the run's start), from the
    instance's event log."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs()
        if run.status != dg.DagsterRunStatus.SUCCESS:
            raise SystemExit(f"the Dagster run ended {run.status}")
        events = [e for e in instance.all_logs(run.run_id) if e.dagster_event]
    started = next(e.timestamp for e in events if e.dagster_event_type.value == "PIPELINE_START")
    ended = max(e.timestamp for e in events)
    steps: dict[str, list[float]] = {}
    for event in events:
        kind = event.dagster_event_type.value
        if kind in ("STEP_START", "STEP_SUCCESS"):
            steps.setdefault(event.step_key, []).append(round(event.timestamp - started, 2))
    return {"run_s": round(ended - started, 3), "steps_s": steps}


def count_rows(data: Path) -> dict:
    return {table: parquet_rows(data / f"raw__edxorg__s3__tables__{table}") for table in TABLES}


def summarize(data_set: str, files: list[dict], measurements: list[dict]) -> dict:
    expected = expected_rows(files)
    approaches = {}
    for name in ("cli", "dagster"):
        samples = sorted((m["runs"][name] for m in measurements), key=lambda s: s["wall_s"])
        approaches[name] = {**samples[(len(samples) - 1) // 2]}
        approaches[name]["wall_s_all"] = [s["wall_s"] for s in samples]
    cli, dagster = approaches["cli"], approaches["dagster"]
    ratio = round(dagster["wall_s"] / cli["wall_s"], 3)
    return {
        "set": "dagster",
        "data": data_set,
        "input": {
            "prod_files": len(files),
            "prod_mb": round(sum(f["bytes"] for f in files) / 1e6, 1),
            "rows": sum(expected.values()),
        },
        "machine": {"cpus": os.cpu_count()},
        "repeat": len(measurements),
        "approaches": approaches,
        "ratios": {
            "dagster_over_cli_wall": ratio,
            "dagster_run_over_cli_wall": round(dagster["run_s"] / cli["wall_s"], 3),
            "dagster_over_cli_tree_cpu": round(dagster["tree_cpu_s"] / cli["tree_cpu_s"], 3),
        },
        "targets": {
            "dagster_over_cli_wall": {
                "target": f"<= {TARGET_DAGSTER_OVER_CLI_WALL}",
                "met": ratio <= TARGET_DAGSTER_OVER_CLI_WALL,
            }
        },
    }


def table(result: dict) -> str:
    head = (
        f"{'approach':34} {'wall s':>7} {'cpu s':>7} {'tree cpu s':>10} {'peak MB':>8} {'load':>5}"
    )
    lines = [head, "-" * len(head)]
    labels = {
        "cli": "CLI (edxorg-s3-ingest)",
        "dagster": "Dagster (dagster asset materialize)",
    }
    for name, r in result["approaches"].items():
        lines.append(
            f"{labels[name]:34} {r['wall_s']:7.2f} {r['cpu_s']:7.2f} {r['tree_cpu_s']:10.2f}"
            f" {r['peak_rss_mb']:8.0f}"
            f" {r['load_1min_before']:5.2f}"
        )
    dagster = result["approaches"]["dagster"]
    lines.append(f"the Dagster run itself (RUN_START to its end): {dagster['run_s']:.2f} s")
    for step, (start, end) in sorted(dagster["steps_s"].items(), key=lambda kv: kv[1]):
        lines.append(f"  step {step}: {start:.1f} s to {end:.1f} s")
    i, ratios = result["input"], result["ratios"]
    lines.append(
        f"input: {result['data']} set, {i['prod_files']} prod files, {i['prod_mb']} MB, "
        f"{i['rows']:,} rows (equal in both outputs); repeat {result['repeat']}"
    )
    lines.append(
        f"Dagster/CLI wall {ratios['dagster_over_cli_wall']:.2f} (the run alone "
        f"{ratios['dagster_run_over_cli_wall']:.2f}); tree CPU "
        f"{ratios['dagster_over_cli_tree_cpu']:.2f}"
    )
    target = result["targets"]["dagster_over_cli_wall"]
    lines.append(
        f"target: dagster_over_cli_wall {target['target']}: {'met' if target['met'] else 'NOT met'}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="medium", choices=sorted(generate.SETS))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", type=Path, help="default benchmarks/results/dagster.json")
    parser.add_argument("--data-dir", type=Path, default=generate.DEFAULT_DIR)
    parser.add_argument("--work-dir", type=Path, default=OUTPUT / "dagster")
    parser.add_argument("--account", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--count-rows", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--init-home", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    helpers = {"account": run_account, "count_rows": count_rows, "init_home": init_home}
    for option, helper in helpers.items():
        if getattr(args, option):
            print(json.dumps(helper(getattr(args, option))))
            return
    root = generate.ensure(args.data, args.data_dir)
    files = generate.prod_files(root)
    compile_bytecode()
    measurements = []
    for _ in range(args.repeat):
        warm_cache(root, files)
        measurements.append(run_once(root, args.work_dir))
        check_rows(files, measurements[-1], args.work_dir)
    shutil.rmtree(args.work_dir, ignore_errors=True)
    result = summarize(args.data, files, measurements)
    print(table(result))
    target = args.json or RESULTS / "dagster.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {target}")


if __name__ == "__main__":
    main()
