"""The Dagster code location: 44 table assets, loaded in-process and through the real dg CLI."""

import json
import os
import shutil
import subprocess
from datetime import timedelta

import dagster as dg
import pyarrow.parquet as pq
import pytest

from edxorg_s3_ingest.orchestration.automation import AUTOMATION_SENSOR, reconciliation_result
from edxorg_s3_ingest.settings import Settings
from edxorg_s3_ingest.tables import TABLES, UPSTREAM_COLUMNS

from conftest import REPO

TABLE_KEYS = {dg.AssetKey(["edxorg", "tables", table]) for table in TABLES}


def upstream(table: str) -> dg.AssetKey:
    return dg.AssetKey(["edxorg", "raw_data", "db_table", table])


@pytest.fixture(scope="module")
def definitions() -> dg.Definitions:
    from edxorg_s3_ingest.definitions import defs

    return defs()


def dg_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [shutil.which("dg") or "dg", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_definitions_hold_one_asset_per_table_with_its_upstream(definitions):
    graph = definitions.resolve_asset_graph()
    executable = {key for key in graph.get_all_asset_keys() if graph.get(key).is_executable}
    assert executable == TABLE_KEYS
    for table in TABLES:
        node = graph.get(dg.AssetKey(["edxorg", "tables", table]))
        assert set(node.parent_keys) == {upstream(table)}
        assert node.group_name == "ingestion"
        assert set(node.kinds) == {"dlt", "parquet"}


def test_tables_run_by_themselves_from_the_start(definitions):
    """The code location brings its own automation sensor, running by default, over exactly the
    table assets (Dagster's default one starts stopped): nobody has to turn it on."""
    sensor = definitions.resolve_sensor_def(AUTOMATION_SENSOR)
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    graph = definitions.resolve_asset_graph()
    assert sensor.asset_selection.resolve(graph) == TABLE_KEYS
    landing = definitions.resolve_sensor_def("edxorg_landing_zone_sensor")
    assert landing.default_status == dg.DefaultSensorStatus.STOPPED


def test_assets_carry_description_and_column_schema(definitions):
    spec = next(
        spec
        for spec in definitions.resolve_all_asset_specs()
        if spec.key == dg.AssetKey(["edxorg", "tables", "auth_user"])
    )
    assert "raw__edxorg__s3__tables__auth_user" in spec.description
    columns = spec.metadata["dagster/column_schema"].columns
    assert [column.name for column in columns][:3] == ["id", "username", "first_name"]
    assert spec.metadata["dagster/table_name"] == "raw__edxorg__s3__tables__auth_user"


UPSTREAM = [name for name, _ in UPSTREAM_COLUMNS]


def test_every_table_documents_the_upstream_columns_and_has_a_freshness_policy(definitions):
    specs = [spec for spec in definitions.resolve_all_asset_specs() if spec.key in TABLE_KEYS]
    assert len(specs) == len(TABLES)
    for spec in specs:
        columns = spec.metadata["dagster/column_schema"].columns
        assert [column.name for column in columns][-6:] == UPSTREAM
        assert "_course_id" in columns[-6].description
        # defs.yaml: warn after a week without a load, fail after eight days.
        assert spec.freshness_policy == dg.FreshnessPolicy.time_window(
            fail_window=timedelta(days=8), warn_window=timedelta(days=7)
        )
    # Tables without documented export columns still list the appended ones.
    course = next(spec for spec in specs if spec.key.path[-1] == "course")
    assert [c.name for c in course.metadata["dagster/column_schema"].columns] == UPSTREAM


def test_every_table_is_tagged_and_runs_when_its_exports_land(definitions):
    """What the component gives each table's spec (component.table_spec, no templates)."""
    specs = {spec.key: spec for spec in definitions.resolve_all_asset_specs()}
    for table in TABLES:
        spec = specs[dg.AssetKey(["edxorg", "tables", table])]
        assert spec.tags == {"edx_table": table, "dagster/kind/dlt": "", "dagster/kind/parquet": ""}
        assert spec.automation_condition.get_label() == "upstream_exports_landed"


def test_a_loads_translation_still_applies_over_the_table_specs():
    """A load in defs.yaml may still have a `translation`: it applies over the component's spec."""
    from dagster.components.testing import create_defs_folder_sandbox

    yaml = (
        "type: edxorg_s3_ingest.orchestration.component.EdxorgTablesComponent\n"
        "attributes:\n"
        "  loads:\n"
        "    - source: edxorg_s3_ingest.loads.source\n"
        "      translation:\n"
        '        group_name: "edx_{{ resource.name[:4] }}"\n'
    )
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.defs_folder_path / "tables"
        path.mkdir()
        (path / "defs.yaml").write_text(yaml)
        with sandbox.load_component_and_build_defs(defs_path=path) as (_, defs):
            specs = {spec.key: spec for spec in defs.resolve_all_asset_specs()}
    spec = specs[dg.AssetKey(["edxorg", "tables", "auth_user"])]
    assert spec.group_name == "edx_auth"
    assert spec.tags["edx_table"] == "auth_user"
    assert spec.deps[0].asset_key == dg.AssetKey(["edxorg", "raw_data", "db_table", "auth_user"])


def test_qa_assets_name_the_glue_table(monkeypatch):
    """In the lake the table a query names is `<glue database>.<table>` (README: The lake)."""
    monkeypatch.setenv("DAGSTER_ENVIRONMENT", "qa")
    from edxorg_s3_ingest.definitions import defs

    specs = {spec.key: spec for spec in defs().resolve_all_asset_specs()}
    for table in TABLES:
        spec = specs[dg.AssetKey(["edxorg", "tables", table])]
        name = spec.metadata["dagster/table_name"]
        assert name == f"ol_warehouse_qa_raw.raw__edxorg__s3__tables__{table}"
        assert spec.freshness_policy is not None and set(spec.kinds) == {"dlt", "iceberg"}


def test_dg_list_defs_shows_exactly_the_table_assets_and_their_deps():
    result = dg_cli("list", "defs", "--json")
    assert result.returncode == 0, result.stderr
    assets = {asset["asset_key"]: asset for asset in json.loads(result.stdout)["assets"]}
    tables = {key: asset for key, asset in assets.items() if asset["is_executable"]}
    assert set(tables) == {f"edxorg/tables/{table}" for table in TABLES}
    for table in TABLES:
        asset = tables[f"edxorg/tables/{table}"]
        assert asset["dependency_keys"] == [f"edxorg/raw_data/db_table/{table}"]
        assert asset["group_name"] == "ingestion"
        assert sorted(asset["kinds"]) == ["dlt", "parquet"]
    # No phantom `<source>_<resource>` deps: every other key is a declared upstream table.
    assert set(assets) - set(tables) == {f"edxorg/raw_data/db_table/{table}" for table in TABLES}


def test_dg_check_defs_passes():
    result = dg_cli("check", "defs")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "All definitions loaded successfully" in result.stdout + result.stderr


def test_unknown_environment_fails_loading_with_the_reason():
    result = dg_cli("check", "defs", env={"DAGSTER_ENVIRONMENT": "bogus"})
    assert result.returncode != 0
    assert "DAGSTER_ENVIRONMENT='bogus' is not one of dev, qa, production" in (
        result.stdout + result.stderr
    )


def test_materializing_an_asset_loads_its_table(tmp_path, monkeypatch, definitions):
    monkeypatch.setenv("EDXORG_S3_INGEST__DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EDXORG_S3_INGEST__PIPELINES_DIR", str(tmp_path / "pipelines"))
    key = dg.AssetKey(["edxorg", "tables", "teams"])
    job = definitions.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(asset_selection=[key], instance=dg.DagsterInstance.ephemeral())
    assert result.success
    (materialization,) = [
        event.materialization for event in result.get_asset_materialization_events()
    ]
    assert materialization.asset_key == key
    metadata = materialization.metadata
    # teams in the sample: 5 prod courses, one export of 4 rows each.
    assert metadata["rows_loaded"].value == 20
    assert metadata["files_loaded"].value == 5
    assert metadata["courses_replaced"].value == 5
    assert metadata["destination"].value.endswith("data/raw__edxorg__s3__tables__teams")
    assert metadata["dagster/row_count"].value == 20
    assert metadata["dlt_load_id"].value
    assert list((tmp_path / "data" / "raw__edxorg__s3__tables__teams").rglob("*.parquet"))
    checks = {
        evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()
    }
    assert set(checks) == {"rejected_rows", "reconciliation"}
    assert checks["rejected_rows"].passed and checks["reconciliation"].passed
    assert checks["reconciliation"].metadata["table_rows"].value == 20
    assert checks["reconciliation"].metadata["rows_in_newest_files"].value == 20


def test_reconciliation_fails_when_the_table_holds_extra_rows(tmp_path, monkeypatch, definitions):
    monkeypatch.setenv("EDXORG_S3_INGEST__DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EDXORG_S3_INGEST__PIPELINES_DIR", str(tmp_path / "pipelines"))
    key = dg.AssetKey(["edxorg", "tables", "teams"])
    job = definitions.resolve_implicit_global_asset_job_def()
    instance = dg.DagsterInstance.ephemeral()
    assert job.execute_in_process(asset_selection=[key], instance=instance).success
    table = tmp_path / "data" / "raw__edxorg__s3__tables__teams"
    stray = next(table.rglob("*.parquet"))
    shutil.copy(stray, stray.with_name("stray-copy.parquet"))
    evaluation = reconciliation_result(Settings.resolve(), "teams", key)
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["table_rows"].value == 20 + pq.read_metadata(stray).num_rows
