"""An optional landing-zone sensor, for deployments without the upstream code location.

Off by default. Each tick lists every table's prod files once and requests a run for the tables
whose listing differs from what their state says was loaded. The "cursor" is that state, read
from the table's store (table_state.py) as the loads read it, so it works from the code-server
pod that never ran a load: it advances only when a load commits, so a failed run is requested
again on a later tick (the original sensor advanced its cursor at launch and lost failed
batches).
"""

import dagster as dg

from edxorg_s3_ingest.loading.table_load import TableLoad
from edxorg_s3_ingest.settings import Settings

TABLE_TAG = "edxorg_s3_ingest/table"
ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def has_new_prod_files(settings: Settings, table: str) -> bool:
    """Whether a load of the table has work: the question its load asks first."""
    return TableLoad(table, settings).has_work()


def landing_zone_sensor(keys: list[dg.AssetKey]) -> dg.SensorDefinition:
    @dg.sensor(
        name="edxorg_landing_zone_sensor",
        asset_selection=dg.AssetSelection.assets(*keys),
        minimum_interval_seconds=300,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Polls the landing zone; requests a run for each table with new prod files.",
    )
    def sensor(context: dg.SensorEvaluationContext):
        settings = Settings.resolve()
        for key in keys:
            table = key.path[-1]
            active = context.instance.get_runs(
                dg.RunsFilter(tags={TABLE_TAG: table}, statuses=ACTIVE), limit=1
            )
            if active or not has_new_prod_files(settings, table):
                continue
            yield dg.RunRequest(asset_selection=[key], tags={TABLE_TAG: table})

    return sensor
