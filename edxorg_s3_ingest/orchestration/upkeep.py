"""The lake's table upkeep as a Dagster job, and its daily schedule (README: "Table upkeep").

One op per table (the 44 edX tables and the rejects table), so each table's upkeep is a step
of its own that fails alone. The job runs its steps one after the other in the run's own
process (in-process executor): upkeep is mostly waiting on S3 and Glue, and a pod per table
would cost more than the work. In dev (Parquet) every step says so and does nothing.
"""

import dagster as dg

from edxorg_s3_ingest.settings import Settings, current_environment
from edxorg_s3_ingest.tables import REJECTS_TABLE, TABLES, destination_table

JOB = "edxorg_lake_upkeep"
SCHEDULE = "edxorg_lake_upkeep_daily"
DEFAULT_CRON = "0 5 * * *"


def upkeep_op(table_name: str, op_name: str, pool: str | None) -> dg.OpDefinition:
    @dg.op(name=op_name, pool=pool, tags={"edxorg_s3_ingest/upkeep": table_name})
    def upkeep_step(context: dg.OpExecutionContext) -> dict:
        settings = Settings.resolve()
        if settings.environment == "dev":
            context.log.info(f"{table_name}: dev keeps Parquet tables, which need no upkeep")
            return {}
        from edxorg_s3_ingest.stores.iceberg_upkeep import UpkeepPolicy, upkeep

        policy = UpkeepPolicy.from_environment()
        report = upkeep(settings.lake_url, settings.glue_database, table_name, policy)
        context.log.info(f"{table_name}: {report.as_dict()}")
        context.add_output_metadata(report.as_dict())
        return report.as_dict()

    return upkeep_step


def upkeep_job(pool: str | None = None) -> dg.JobDefinition:
    steps = [upkeep_op(destination_table(table), f"upkeep_{table}", pool) for table in TABLES]
    steps.append(upkeep_op(REJECTS_TABLE, "upkeep_rejected_rows", pool))

    @dg.job(
        name=JOB,
        executor_def=dg.in_process_executor,
        description="Compacts small files, merges manifests, expires snapshots older than the "
        "retention and deletes unnamed state objects of every lake table (qa, production).",
    )
    def job():
        for step in steps:
            step()

    return job


def upkeep_schedule(job: dg.JobDefinition, cron: str = DEFAULT_CRON) -> dg.ScheduleDefinition:
    """Running by default in qa and production (upkeep needs no human), stopped in dev."""
    lake = current_environment() != "dev"
    return dg.ScheduleDefinition(
        name=SCHEDULE,
        job=job,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=(
            dg.DefaultScheduleStatus.RUNNING if lake else dg.DefaultScheduleStatus.STOPPED
        ),
    )
