"""The dlt source and pipeline of one table's load (table_load.py runs them).

Every table has its own pipeline, `edxorg_s3__<table>`, whose folder under the pipelines dir is
a disposable working area (emptied at each run's start): the table's state lives in its store.

dlt, pyarrow and the source are imported when a pipeline or a source is built, not when this
module is: a CLI process that only supervises worker processes never needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dlt.pipeline.pipeline import Pipeline

    from edxorg_s3_ingest.loading.consolidation import Consolidator
    from edxorg_s3_ingest.loading.table_load import TableLoad
    from edxorg_s3_ingest.report import TableReport
    from edxorg_s3_ingest.state.work import Work
    from edxorg_s3_ingest.stores.lake_uploads import EarlyUploads


def table_pipeline(
    load: TableLoad, work: Work, uploads: EarlyUploads | None = None
) -> tuple[Pipeline, Consolidator]:
    import dlt

    from edxorg_s3_ingest.loading.consolidation import Consolidator
    from edxorg_s3_ingest.loading.destination import ConsolidatingDestination
    from edxorg_s3_ingest.loading.table_load import STAGING, pipeline_name

    # The store holds each load once dlt completes its package (consolidation.py): the job
    # files dlt would keep under load/loaded/ are a second copy of every load's data.
    dlt.config["load.delete_completed_jobs"] = True
    # The table's state lives in its store; dlt's own pipeline state is a disposable working
    # file. Left on, each run first asks the destination for that state (it has none), and
    # dlt adds it to every load package as one more table, which it normalizes and loads and
    # the store then ignores: ~10-20 ms of CPU per table's load. A package then left with no
    # file at all (every file read was header-only) is dropped by dlt uncompleted: the source
    # still replaces its courses (Consolidator.commit_state).
    dlt.config["restore_from_destination"] = False
    consolidator = Consolidator(
        load.store, load.working_dir / STAGING, report=load.report, work=work, uploads=uploads
    )
    destination = ConsolidatingDestination(consolidator, f"edxorg_{load.settings.environment}")
    pipeline = dlt.pipeline(
        pipeline_name=pipeline_name(load.table),
        pipelines_dir=str(load.settings.pipelines_dir),
        destination=destination,
        dataset_name="edxorg",
    )
    return pipeline, consolidator


def table_source(table: str, work: Work, report: TableReport, uploads: EarlyUploads | None = None):
    from edxorg_s3_ingest.loading.resources import edxorg_s3_source

    return edxorg_s3_source(
        tables=[table],
        works={table: work},
        reports={table: report},
        uploads={table: uploads} if uploads is not None else None,
    )
