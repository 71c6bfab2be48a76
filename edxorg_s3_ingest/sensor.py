"""An optional landing-zone sensor, for deployments without the upstream code location.

Off by default. Each tick lists every table's prod files once and requests a run for the tables
whose listing differs from what their dlt state says was loaded. The "cursor" is that state: it
advances only when a load succeeds, so a failed run is requested again on a later tick (the
original sensor advanced its cursor at launch and lost failed batches).
"""

import copy

import dagster as dg
import dlt
from dlt.pipeline.exceptions import CannotRestorePipelineException

from edxorg_s3_ingest.incremental import plan
from edxorg_s3_ingest.landing import list_prod_files
from edxorg_s3_ingest.loads import PIPELINE_PREFIX
from edxorg_s3_ingest.settings import Settings

TABLE_TAG = "edxorg_s3_ingest/table"
ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def loaded_state(settings: Settings, table: str) -> dict:
    """The table's resource state as of its last successful load ({} if never loaded)."""
    try:
        name = f"{PIPELINE_PREFIX}{table}"
        state = dlt.attach(name, pipelines_dir=str(settings.pipelines_dir)).state
    except CannotRestorePipelineException:
        return {}
    return state.get("sources", {}).get("edxorg_s3", {}).get("resources", {}).get(table, {})


def has_new_prod_files(settings: Settings, table: str) -> bool:
    listing = list_prod_files(settings.bucket_url, table)
    return plan(listing.files, copy.deepcopy(loaded_state(settings, table))).state_changed


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
