"""Load edX.org table exports (TSV) from the landing zone into one consolidated table per edX
table: each course's newest prod export, nothing else (Parquet in dev, Iceberg + Glue in qa and
production)."""

import argparse
import json
import sys

from edxorg_s3_ingest.collector import no_collection_at_exit
from edxorg_s3_ingest.running.fork_server import parked_preload, server_forked, stop_fork_server
from edxorg_s3_ingest.running.progress import Progress, summary
from edxorg_s3_ingest.running.runner import load_tables, worker_count
from edxorg_s3_ingest.settings import ConfigurationError, Settings
from edxorg_s3_ingest.tables import (
    REJECTS_TABLE,
    TABLES,
    UnknownTableError,
    destination_table,
    parse_table_list,
)
from edxorg_s3_ingest.timeline import mark

EPILOG = """\
environment:
  DAGSTER_ENVIRONMENT   dev (default: Parquet under --data-dir), qa or production (Iceberg + Glue)
  AWS credentials come from the standard boto3 chain (env, profile, IRSA); endpoints from
  AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL_GLUE.

  Settings also come from .dlt/config.toml or SOURCES__EDXORG_S3__BUCKET_URL,
  EDXORG_S3_INGEST__DATA_DIR and EDXORG_S3_INGEST__PIPELINES_DIR (a flag wins).

The landing zone is checked once before any table starts: when it cannot be listed
(no answer, no credentials, a missing bucket or folder) the run ends with one message.

exit status: 0 when every table loaded (or was unchanged, or had no prod files); 1 when a table
failed, the landing zone cannot be listed, or no requested table has any prod file (wrong bucket
or prefix?); 2 for a usage or configuration error (an empty or malformed flag value too).
"""


WORKERS_HELP = (
    "load N tables at once, each in a worker process of its own (default: the number of CPUs, "
    "at most the number of tables); 1 loads them one after the other in this process"
)


def worker_number(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return number


def table_list(text: str) -> list[str]:
    # `--tables ""` (an unset shell variable) once loaded all 44 tables: only an absent flag
    # means every table.
    if not text.strip(" ,"):
        raise argparse.ArgumentTypeError("needs at least one table name, e.g. --tables auth_user")
    try:
        return parse_table_list(text)
    except UnknownTableError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def non_empty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def landing_zone_url(text: str) -> str:
    text = non_empty(text)
    scheme, separator, rest = text.partition("://")
    if separator and not scheme:
        raise argparse.ArgumentTypeError(f"{text!r} has no scheme before '://'")
    if separator and scheme in ("s3", "s3a") and not rest.split("/", 1)[0]:
        raise argparse.ArgumentTypeError(f"{text!r} names no bucket (s3://<bucket>/<prefix>)")
    return text


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(
        prog="edxorg-s3-ingest",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cli.add_argument(
        "--tables",
        type=table_list,
        help="comma-separated edX tables to load (default: all 44)",
    )
    cli.add_argument(
        "--bucket-url",
        type=landing_zone_url,
        help="landing zone root holding db_table/ (default: sources.edxorg_s3.bucket_url in "
        ".dlt/config.toml, else the sample landing zone in dev, the production bucket in qa "
        "and production)",
    )
    cli.add_argument(
        "--data-dir", type=non_empty, help="dev: where the Parquet tables go (default .dlt/data)"
    )
    cli.add_argument(
        "--pipelines-dir",
        type=non_empty,
        help="dlt's working area, emptied by each load (default .dlt/pipelines); each table's "
        "state is kept with the table",
    )
    cli.add_argument(
        "--full-refresh",
        action="store_true",
        help="rebuild the tables from every course's newest file, ignoring their state",
    )
    cli.add_argument(
        "--workers",
        type=worker_number,
        metavar="N",
        help=WORKERS_HELP,
    )
    cli.add_argument("--json", action="store_true", help="print the run report as one JSON object")
    cli.add_argument("--list-tables", action="store_true", help="print the 44 tables and exit")
    cli.add_argument(
        "--loaded-files",
        action="store_true",
        help="print, from each table's state, every prod file it knows: which file each "
        "course's rows come from (current), their rows, rejects and load id; then exit",
    )
    cli.add_argument(
        "--upkeep",
        action="store_true",
        help="qa and production: compact small files, merge manifests, expire snapshots and "
        "delete unnamed state objects of the tables (and, without --tables, of the rejects "
        "table), as the Dagster job edxorg_lake_upkeep does; then exit",
    )
    return cli


def main(argv: list[str] | None = None) -> int:
    mark("main")
    # The run's last step, after its workers have ended: the interpreter's final collection
    # would traverse the CLI's objects for nothing (~5 ms of CPU, between the last byte written
    # and the exit).
    no_collection_at_exit()
    args = parser().parse_args(argv)
    if args.list_tables:
        print("\n".join(TABLES))
        return 0
    tables = args.tables or list(TABLES)
    workers = worker_count(args.workers, len(tables))
    try:
        settings = Settings.resolve(args.bucket_url, args.data_dir, args.pipelines_dir)
    except ConfigurationError as error:
        print(f"edxorg-s3-ingest: {error}", file=sys.stderr)
        return 2
    if args.loaded_files:
        return print_loaded_files(tables, settings, args.json)
    if args.upkeep:
        rejects = [] if args.tables else [REJECTS_TABLE]
        return run_upkeep([destination_table(t) for t in tables] + rejects, settings, args.json)
    if workers > 1:
        start_workers_early(settings.environment)
    try:
        with Progress(total=len(tables), parallel=workers > 1) as progress:
            run = load_tables(
                tables,
                settings,
                full_refresh=args.full_refresh,
                # As asked: a single table's load may use the other CPUs for a parse helper.
                workers=args.workers,
                on_start=progress.begin,
                on_done=progress.done,
                on_log=progress.log,
                on_wait=progress.wait,
            )
    finally:
        if workers > 1:  # whatever ended the run first (the landing zone could not be listed)
            stop_fork_server()
    if args.json:
        print(json.dumps(run.as_dict(), indent=2, default=str))
    elif not run.not_started:  # then the error below is all there is to say
        print(summary(run))
    if run.error:
        print(f"edxorg-s3-ingest: {run.error}", file=sys.stderr)
    mark("reported")
    return 0 if run.ok else 1


def start_workers_early(environment: str) -> None:
    """Forks the workers' fork server from this process before the landing zone is listed
    (orchestration/step_server_fork.py; only while this process runs no other thread), parked
    (running/fork_server.py): it starts with this process's modules instead of a new
    interpreter's, and imports the loading code once two tables are known to need a load
    (~0.05 s of CPU less on the way to the first read than a new interpreter started then).
    When the listing leaves fewer than two, the runner ends it, parked; where it could not be
    forked, the runner starts it as before."""
    from edxorg_s3_ingest.orchestration import step_server_fork

    forked = step_server_fork.start(parked_preload(environment))
    server_forked(forked)
    if forked:
        mark("server")


def print_loaded_files(tables: list[str], settings: Settings, as_json: bool) -> int:
    """The tables' ledgers (table_state.ledger), read from their stores: TSV or JSON lines."""
    from edxorg_s3_ingest.loading.table_load import TableLoad, describe
    from edxorg_s3_ingest.state.table_state import LEDGER_COLUMNS, ledger

    if not as_json:
        print("\t".join(("table", *LEDGER_COLUMNS)))
    failed = False
    for table in tables:
        try:
            rows = ledger(TableLoad(table, settings).stored().state)
        except Exception as error:  # noqa: BLE001 - said per table; the others are printed
            print(f"edxorg-s3-ingest: {table}: {describe(error)}", file=sys.stderr)
            failed = True
            continue
        for row in rows:
            if as_json:
                print(json.dumps({"table": table, **row}))
            else:
                values = ("" if row[key] is None else str(row[key]) for key in LEDGER_COLUMNS)
                print("\t".join((table, *values)))
    return 1 if failed else 0


def run_upkeep(table_names: list[str], settings: Settings, as_json: bool) -> int:
    """The lake tables' upkeep (stores/iceberg_upkeep.py), one line (or JSON object) each."""
    if settings.environment == "dev":
        print("edxorg-s3-ingest: dev keeps Parquet tables, which need no upkeep")
        return 0
    from edxorg_s3_ingest.loading.table_load import describe
    from edxorg_s3_ingest.stores.iceberg_upkeep import UpkeepPolicy, upkeep

    try:
        policy = UpkeepPolicy.from_environment()
    except ConfigurationError as error:
        print(f"edxorg-s3-ingest: {error}", file=sys.stderr)
        return 2
    failed = False
    for name in table_names:
        try:
            report = upkeep(settings.lake_url, settings.glue_database, name, policy).as_dict()
        except Exception as error:  # noqa: BLE001 - said per table; the others go on
            print(f"edxorg-s3-ingest: {name}: {describe(error)}", file=sys.stderr)
            failed = True
            continue
        if as_json:
            print(json.dumps(report))
        else:
            print("\t".join(f"{key}={value}" for key, value in report.items() if value != ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
