"""Declarative automation against an upstream declared as upstream declares it (STACK-NOTES):
multi-partitioned course_id × source_system, some partitions never materialized."""

import dagster as dg
import pytest
from dagster._core.execution.api import create_execution_plan
from dagster._core.storage.dagster_run import DagsterRunStatus

from edxorg_s3_ingest.tables import TABLES

COURSES = dg.DynamicPartitionsDefinition(name="edxorg_course_ids")
PARTITIONS = dg.MultiPartitionsDefinition(
    {"course_id": COURSES, "source_system": dg.StaticPartitionsDefinition(["edge", "prod"])}
)


def upstream_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["edxorg", "raw_data", "db_table", table])


def table_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["edxorg", "tables", table])


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    from edxorg_s3_ingest.definitions import defs as code_location

    tables = [
        asset
        for asset in code_location().assets
        if isinstance(asset, dg.AssetsDefinition) and asset.is_executable
    ]
    upstream = [dg.AssetSpec(upstream_key(table), partitions_def=PARTITIONS) for table in TABLES]
    return dg.Definitions(assets=[*upstream, *tables])


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("edxorg_course_ids", ["MITx-6.002x", "edX-DemoX", "x-y"])
        yield instance


def land(instance, table: str, *courses: str, system: str = "prod") -> None:
    for course in courses:
        partition = dg.MultiPartitionKey({"course_id": course, "source_system": system})
        instance.report_runless_asset_event(
            dg.AssetMaterialization(upstream_key(table), partition=partition)
        )


def tick(defs, instance, cursor=None):
    selection = dg.AssetSelection.assets(*[table_key(table) for table in TABLES])
    return dg.evaluate_automation_conditions(
        defs=defs, instance=instance, asset_selection=selection, cursor=cursor
    )


def requested(result) -> set[dg.AssetKey]:
    return {key for key in (table_key(t) for t in TABLES) if result.get_num_requested(key)}


def test_upstream_partitions_request_exactly_their_table_once(defs, instance):
    first = tick(defs, instance)
    assert first.total_requested == 0  # nothing landed yet; missing partitions do not block
    land(instance, "auth_user", "MITx-6.002x", "edX-DemoX")
    second = tick(defs, instance, first.cursor)
    assert requested(second) == {table_key("auth_user")}
    assert second.total_requested == 1  # once, not once per partition
    third = tick(defs, instance, second.cursor)
    assert third.total_requested == 0


def test_each_table_follows_its_own_upstream(defs, instance):
    cursor = tick(defs, instance).cursor
    land(instance, "teams", "x-y")
    land(instance, "wiki_article", "edX-DemoX", system="edge")
    result = tick(defs, instance, cursor)
    assert requested(result) == {table_key("teams"), table_key("wiki_article")}


def test_a_run_in_progress_suppresses_a_second_request(defs, instance):
    cursor = tick(defs, instance).cursor
    # A run of the table that has started (its materialization is planned) and not finished.
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection={table_key("auth_user")}
    )
    instance.create_run_for_job(
        job_def=job,
        execution_plan=create_execution_plan(job),
        asset_selection=frozenset({table_key("auth_user")}),
        status=DagsterRunStatus.STARTED,
    )
    land(instance, "auth_user", "MITx-6.002x")
    assert tick(defs, instance, cursor).total_requested == 0
