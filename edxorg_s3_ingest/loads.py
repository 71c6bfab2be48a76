"""The dlt source and pipeline of each table, as the Dagster component and the CLI use them.

Every table has its own pipeline (its own state and working folder under the pipelines dir), so
tables load in parallel runs without touching each other's state.
"""

import dlt
from dlt.pipeline.pipeline import Pipeline

from edxorg_s3_ingest.consolidation import Consolidator
from edxorg_s3_ingest.destination import ConsolidatingDestination
from edxorg_s3_ingest.report import TableReport
from edxorg_s3_ingest.settings import Settings
from edxorg_s3_ingest.source import edxorg_s3_source
from edxorg_s3_ingest.stores import store_for

PIPELINE_PREFIX = "edxorg_s3__"


def table_pipeline(table: str, settings: Settings, report: TableReport) -> Pipeline:
    consolidator = Consolidator(
        store_for(settings),
        staging_dir=settings.pipelines_dir / f"{PIPELINE_PREFIX}{table}" / "consolidation",
        report=report,
    )
    return dlt.pipeline(
        pipeline_name=f"{PIPELINE_PREFIX}{table}",
        pipelines_dir=str(settings.pipelines_dir),
        destination=ConsolidatingDestination(consolidator, f"edxorg_{settings.environment}"),
        dataset_name="edxorg",
    )


def table_source(table: str, settings: Settings, report: TableReport):
    return edxorg_s3_source(bucket_url=settings.bucket_url, tables=[table], reports={table: report})


def __getattr__(name: str):
    """`source` and `pipeline`: what the Dagster component reads (defs.yaml) to build one asset
    per resource. Built on first use, so that importing this module (the CLI) resolves nothing.
    Runs use `table_pipeline` / `table_source`, one pipeline per table."""
    if name == "source":
        return edxorg_s3_source(bucket_url=Settings.resolve().bucket_url)
    if name == "pipeline":
        pipelines_dir = str(Settings.resolve().pipelines_dir)
        return dlt.pipeline(pipeline_name="edxorg_s3", pipelines_dir=pipelines_dir)
    raise AttributeError(name)


if __name__ == "__main__":
    from edxorg_s3_ingest.cli import main

    raise SystemExit(main())
