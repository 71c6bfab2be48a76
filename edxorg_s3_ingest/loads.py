"""The dlt source and pipeline of each table, as the Dagster component and the CLI use them.

Every table has its own pipeline (its own state and working folder under the pipelines dir), so
tables load in parallel runs without touching each other's state.

dlt, pyarrow and the source are imported when a pipeline or a source is built, not when this
module is: a CLI process that only supervises worker processes never needs them (runner.py).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dlt.pipeline.pipeline import Pipeline

    from edxorg_s3_ingest.report import TableReport
    from edxorg_s3_ingest.settings import Settings

PIPELINE_PREFIX = "edxorg_s3__"
SOURCE_NAME = "edxorg_s3"
"""The name of the dlt source (source.py), under which dlt keeps each resource's state."""


def table_pipeline(table: str, settings: Settings, report: TableReport) -> Pipeline:
    import dlt

    from edxorg_s3_ingest.consolidation import Consolidator
    from edxorg_s3_ingest.destination import ConsolidatingDestination
    from edxorg_s3_ingest.stores import store_for

    # The store holds each load once dlt completes its package (consolidation.py): the job
    # files dlt would keep under load/loaded/ forever are a second copy of every load's data.
    dlt.config["load.delete_completed_jobs"] = True
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
    from edxorg_s3_ingest.source import edxorg_s3_source

    return edxorg_s3_source(bucket_url=settings.bucket_url, tables=[table], reports={table: report})


def resource_state(pipeline: Pipeline, table: str) -> dict:
    """The table's incremental state (incremental.py) as of its last extracted load; {} before
    the first one."""
    sources = pipeline.state.get("sources", {})
    return sources.get(SOURCE_NAME, {}).get("resources", {}).get(table, {})


def stored_resource_state(settings: Settings, table: str) -> dict | None:
    """The table's incremental state as dlt last saved it in the pipeline's folder, read as
    JSON without dlt (which would build a pipeline for it): for questions asked before a table's
    load, cheaply. None when there is none or it cannot be read (then only dlt can say)."""
    path = settings.pipelines_dir / f"{PIPELINE_PREFIX}{table}" / "state.json"
    try:
        state = json.loads(path.read_bytes())
        resource = state["sources"][SOURCE_NAME]["resources"][table]
    except (OSError, ValueError, LookupError, TypeError):
        return None
    return resource if isinstance(resource, dict) else None


PENDING_FOLDERS = ("normalize/extracted", "load/new", "load/normalized")
"""Where a table's pipeline folder holds load packages a killed run left unfinished (a package
being consolidated is still in load/normalized: consolidation.py completes it before dlt moves
it to load/loaded)."""


def has_pending_work(settings: Settings, table: str) -> bool:
    """Whether a killed run left work that the next load must finish first (runner.py)."""
    folder = settings.pipelines_dir / f"{PIPELINE_PREFIX}{table}"
    for name in PENDING_FOLDERS:
        try:
            if any((folder / name).iterdir()):
                return True
        except FileNotFoundError:
            continue
    return False


def __getattr__(name: str):
    """`source`: the dlt source of every table, whose resources the Dagster component makes its
    assets (defs.yaml). Each asset's step runs its resource through the table's own pipeline
    (`table_source` / `table_pipeline`, via runner.load_table). Built on first use, so that
    importing this module (the CLI) resolves nothing; building it writes nothing."""
    if name != "source":
        raise AttributeError(name)
    from edxorg_s3_ingest.settings import Settings
    from edxorg_s3_ingest.source import edxorg_s3_source

    return edxorg_s3_source(bucket_url=Settings.resolve().bucket_url)


if __name__ == "__main__":
    from edxorg_s3_ingest.cli import main

    raise SystemExit(main())
