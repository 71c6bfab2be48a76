"""Part 3 of the qa benchmark (benchmarks/qa.py): many small courses, then incremental runs.

On the landing zone of the set (`qa-many-courses`: 2,000 courses per table, ~25 MB), uploaded
under s3://landing/many/: a first load by the dev and by the qa CLI, then `runs` qa runs, each
after `share` of every table's courses were exported again (new content, new key: SPEC §2;
benchmarks/lake_tools.py reexport). After each run, from the Iceberg snapshots the run committed
(their summaries) and the current snapshot's manifest list:

- data files the run added (and removed), and bytes written per replaced course, also as a
  multiple of the new rows' own share of the table's bytes (1.0: only the new rows written);
- manifests and their bytes, data files and bytes in the table.

After the first and the last run, every table is read whole, with pyiceberg and with DuckDB's
iceberg reader (benchmarks/duckdb_iceberg_read.py, in its own environment), and so are the same
rows written once into a fresh table (one data file): the read time over the compacted one
(each the fastest of three reads in the same process: the first also sets the process up).
Every run's rows loaded, and every read's rows, must equal what the re-exports say, or it fails.
"""

import json
import shutil
import subprocess
from pathlib import Path

from benchmarks import generate

PREFIX = "many"
DUCKDB_VERSION = "1.4.4"
DUCKDB_EXTENSIONS = "1.4.4.20260205"
DUCKDB_READER = Path(__file__).resolve().parent / "duckdb_iceberg_read.py"


def scenario(bench, root: Path, runs: int, share: float, duckdb: bool, save=None) -> dict:
    """The scenario's figures; `save`, if given, is handed them so far after every run (a long
    run on a busy machine leaves what it measured even if it is stopped)."""
    tables = generate.TABLES
    bench.tool("upload", "--root", str(root), "--prefix", PREFIX)
    files = generate.prod_files(root)
    expected = {t: sum(f["rows"] for f in files if f["table"] == t) for t in tables}
    state = bench.work / "many-expected.json"
    state.unlink(missing_ok=True)
    for folder in ("many-dev", "many-qa"):
        shutil.rmtree(bench.work / folder, ignore_errors=True)
    first = {
        "dev": bench.cli("many_dev", PREFIX, tables, False, "many-dev"),
        "qa": bench.cli("many_qa", PREFIX, tables, True, "many-qa"),
    }
    for name, run in first.items():
        report = run.pop("report")
        loaded = {t: report["tables"][t]["rows_loaded"] for t in tables}
        if loaded != expected:
            raise SystemExit(f"many courses, first {name} load: {loaded} != {expected}")
    layout = bench.tool("layout", "--tables", ",".join(tables))
    history = [{"run": 0, **_run_figures(first["qa"], layout, None)}]
    reads = {}
    for number in range(1, runs + 1):
        change = bench.tool(
            "reexport",
            *("--root", str(root), "--prefix", PREFIX, "--run", str(number)),
            *("--share", str(share), "--expected", str(state)),
        )
        since = json.dumps({t: layout[t]["snapshot_id"] for t in tables})
        run = bench.cli(f"many_qa_run{number}", PREFIX, tables, True, "many-qa")
        report = run.pop("report")
        loaded = {t: report["tables"][t]["rows_loaded"] for t in tables}
        if loaded != change["rows"]:
            raise SystemExit(f"run {number} loaded {loaded}, re-exported {change['rows']}")
        layout = bench.tool("layout", "--tables", ",".join(tables), "--since", since)
        history.append({"run": number, **_run_figures(run, layout, change)})
        if number in (1, runs):
            reads[number] = read_tables(bench, layout, change["table_rows"], duckdb)
        if save:
            save({"first_load": first, "runs": history, "reads": reads})
    ratios = [
        value
        for per_run in reads.values()
        for per_table in per_run.values()
        for key, value in per_table.items()
        if key.endswith("_over_compacted")
    ]
    return {
        "set": root.name,
        "courses_per_table": {t: sum(1 for f in files if f["table"] == t) for t in tables},
        "rows": expected,
        "share": share,
        "first_load": first,
        "qa_over_dev_first_load_wall": round(first["qa"]["wall_s"] / first["dev"]["wall_s"], 2),
        "runs": history,
        "reads": reads,
        "read_over_compacted_max": max(ratios) if ratios else None,
    }


def _run_figures(run: dict, layout: dict, change: dict | None) -> dict:
    per_table = {}
    for table, figures in layout.items():
        entry = {
            key: figures[key]
            for key in (
                "snapshots_added",
                "added_data_files",
                "deleted_data_files",
                "added_delete_files",
                "added_files_size",
                "added_records",
                "manifests",
                "manifest_bytes",
                "data_files",
                "table_bytes",
                "table_rows",
                "snapshots",
            )
        }
        if change:
            courses, new_rows = change["courses"][table], change["rows"][table]
            entry["courses_replaced"] = courses
            entry["new_rows"] = new_rows
            entry["bytes_written_per_course"] = round(figures["added_files_size"] / courses)
            new_rows_bytes = new_rows * figures["table_bytes"] / max(1, figures["table_rows"])
            entry["written_over_new_rows_bytes"] = round(
                figures["added_files_size"] / max(1.0, new_rows_bytes), 2
            )
        per_table[table] = entry
    return {
        "wall_s": run["wall_s"],
        "cpu_s": run["cpu_s"],
        "peak_rss_mb": run["peak_rss_mb"],
        "tables": per_table,
    }


def read_tables(bench, layout: dict, table_rows: dict, duckdb: bool) -> dict:
    tables = list(layout)
    read = bench.tool("read", "--tables", ",".join(tables), "--compacted")
    for table, entry in read.items():
        if entry["rows"] != table_rows[table] or entry["compacted_rows"] != table_rows[table]:
            raise SystemExit(f"{table}: read {entry}, expected {table_rows[table]} rows")
        entry["pyiceberg_over_compacted"] = round(
            entry["pyiceberg_s"] / entry["compacted_pyiceberg_s"], 2
        )
    if duckdb:
        locations = [f"{t}={layout[t]['metadata_location']}" for t in tables]
        locations += [f"{t}.compacted={read[t]['compacted_metadata_location']}" for t in tables]
        seconds = duckdb_read(bench, locations)
        for table, entry in read.items():
            mine, compacted = seconds[table], seconds[f"{table}.compacted"]
            if mine["rows"] != table_rows[table] or compacted["rows"] != table_rows[table]:
                raise SystemExit(f"{table}: DuckDB read {mine} / {compacted}")
            entry["duckdb_s"] = mine["seconds"]
            entry["compacted_duckdb_s"] = compacted["seconds"]
            entry["duckdb_over_compacted"] = round(mine["seconds"] / compacted["seconds"], 2)
    for entry in read.values():
        entry.pop("compacted_metadata_location")
    return read


def duckdb_read(bench, locations: list[str]) -> dict:
    """DuckDB's iceberg reader in an environment of its own (uv, packages from PyPI)."""
    uv = shutil.which("uv")
    if uv is None:
        raise SystemExit("DuckDB's iceberg reader needs uv on PATH (or pass --no-duckdb)")
    packages = [f"duckdb=={DUCKDB_VERSION}"] + [
        f"duckdb-ext-{name}=={DUCKDB_EXTENSIONS}" for name in ("iceberg", "httpfs", "avro")
    ]
    command = [uv, "run", "--no-project", "--quiet"]
    for package in packages:
        command += ["--with", package]
    command += ["python", str(DUCKDB_READER), "--endpoint", bench.endpoint, *locations]
    env = {k: v for k, v in bench.env(False).items() if k != "VIRTUAL_ENV"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd="/tmp")
    if done.returncode:
        raise SystemExit(f"DuckDB's iceberg reader failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def table(many: dict) -> str:
    lines = [
        f"many courses ({many['set']}: {many['courses_per_table']['auth_user']} courses per "
        f"table, {sum(many['rows'].values()):,} rows): first load dev "
        f"{many['first_load']['dev']['wall_s']:.2f} s, qa {many['first_load']['qa']['wall_s']:.2f}"
        f" s ({many['qa_over_dev_first_load_wall']}x), qa peak "
        f"{many['first_load']['qa']['peak_rss_mb']:.0f} MB",
        f"{'run':>3} {'wall s':>7} {'files added':>11} {'MB/course':>9} {'x new rows':>10} "
        f"{'manifests':>9} {'manifest KB':>11} {'data files':>10}   (sums over the tables)",
    ]
    for run in many["runs"]:
        figures = run["tables"].values()
        per_course = [f.get("bytes_written_per_course", 0) for f in figures]
        amplification = [f.get("written_over_new_rows_bytes", 0) for f in figures]
        lines.append(
            f"{run['run']:3} {run['wall_s']:7.2f} {sum(f['added_data_files'] for f in figures):11}"
            f" {max(per_course) / 1e6:9.3f} {max(amplification):10.2f}"
            f" {sum(f['manifests'] for f in figures):9}"
            f" {sum(f['manifest_bytes'] for f in figures) / 1e3:11.1f}"
            f" {sum(f['data_files'] for f in figures):10}"
        )
    for number, read in many["reads"].items():
        for name, entry in read.items():
            duck = (
                f", DuckDB {entry['duckdb_s']:.2f} s vs {entry['compacted_duckdb_s']:.2f} s "
                f"({entry['duckdb_over_compacted']}x)"
                if "duckdb_s" in entry
                else ""
            )
            lines.append(
                f"read after run {number}, {name} ({entry['rows']:,} rows): pyiceberg "
                f"{entry['pyiceberg_s']:.2f} s vs one file {entry['compacted_pyiceberg_s']:.2f} s "
                f"({entry['pyiceberg_over_compacted']}x){duck}"
            )
    return "\n".join(lines)
