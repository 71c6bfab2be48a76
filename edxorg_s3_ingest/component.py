"""The Dagster side: a `DltLoadCollectionComponent` whose assets run one pipeline per table.

The stock component runs the load's one pipeline; here each table has its own pipeline and state
(loads.py), so `execute` runs the selected tables through the same runner as the CLI and reports
SPEC §6's figures as materialization metadata.
"""

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg
from dagster_dlt import DltLoadCollectionComponent, dlt_assets
from dagster_dlt.components.dlt_load_collection.component import DltComponentTranslator
from dagster_dlt.translator import DltResourceTranslatorData

from edxorg_s3_ingest.automation import automation_sensor, table_checks, upstream_exports_landed
from edxorg_s3_ingest.report import TableReport
from edxorg_s3_ingest.runner import load_table
from edxorg_s3_ingest.sensor import landing_zone_sensor
from edxorg_s3_ingest.settings import Settings
from edxorg_s3_ingest.tables import destination_table, known_columns

STORAGE_KIND = {"dev": "parquet", "qa": "iceberg", "production": "iceberg"}


def describe_table(table: str) -> str:
    columns = known_columns().get(table)
    text = (
        f"The edX `{table}` export of every course, consolidated: the rows of each course's "
        f"newest prod file in the landing zone (`db_table/{table}/prod/`), as table "
        f"`{destination_table(table)}`. Every source column is a string; lineage columns "
        "`_course_id`, `_dlt_file_path`, `_dlt_file_modified`, `_source_line`, `_dlt_load_id`."
    )
    if columns:
        text += f"\n\nDocumented export columns: {', '.join(name for name, _, _ in columns)}."
    return text


def column_schema(table: str) -> dg.TableSchema | None:
    columns = known_columns().get(table)
    if not columns:
        return None
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name, type="string", description=f"{hint}. {note}".strip())
            for name, hint, note in columns
        ]
    )


def report_metadata(report: TableReport) -> dict:
    metadata = {
        key: value
        for key, value in report.as_dict().items()
        if key not in ("table", "error", "misplaced_files", "load_id", "destination")
    }
    metadata["destination"] = dg.MetadataValue.path(report.destination)
    metadata["dagster/row_count"] = report.table_rows
    if report.load_id:
        metadata["dlt_load_id"] = report.load_id
    if report.misplaced_files:
        metadata["misplaced_files"] = dg.MetadataValue.json(report.misplaced_files)
    return metadata


@dataclass
class EdxorgTablesComponent(DltLoadCollectionComponent):
    """Adds to the stock component: a concurrency pool, the table checks, and a template scope
    with `upstream_exports_landed` for the translation's automation_condition."""

    pool: str | None = None
    """Dagster concurrency pool of the table loads; its limit is set on the instance."""

    @classmethod
    def get_additional_scope(cls) -> Mapping[str, Any]:
        return {"upstream_exports_landed": upstream_exports_landed()}

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        assets = []
        for load in self.loads:

            @dlt_assets(
                dlt_source=load.source,
                dlt_pipeline=load.pipeline,
                name=f"dlt_assets_{load.source.name}",
                dagster_dlt_translator=DltComponentTranslator(self, load),
                pool=self.pool,
            )
            def tables(context: dg.AssetExecutionContext):
                yield from self.execute(context, self.dlt_pipeline_resource)

            assets.append(tables)
        keys = [key for asset in assets for key in asset.keys]
        return dg.Definitions(
            assets=assets,
            asset_checks=[table_checks(keys)],
            sensors=[automation_sensor(keys), landing_zone_sensor(keys)],
        )

    def get_asset_spec(self, data: DltResourceTranslatorData) -> dg.AssetSpec:
        spec = super().get_asset_spec(data)
        table = data.resource.name
        environment = Settings.resolve().environment
        metadata = {**spec.metadata}
        schema = column_schema(table)
        if schema:
            metadata["dagster/column_schema"] = schema
        metadata["dagster/table_name"] = destination_table(table)
        return spec.replace_attributes(
            description=describe_table(table),
            kinds={"dlt", STORAGE_KIND[environment]},
            metadata=metadata,
        )

    def execute(self, context: dg.AssetExecutionContext, dlt_pipeline_resource) -> Iterator:
        settings = Settings.resolve()
        failed = []
        for key in sorted(context.selected_asset_keys):
            table = key.path[-1]
            context.log.info(f"loading {table} from {settings.bucket_url}")
            report = load_table(table, settings)
            if not report.ok:
                failed.append(f"{table}: {report.error}")
                continue
            yield dg.MaterializeResult(asset_key=key, metadata=report_metadata(report))
        if failed:
            raise dg.Failure(description="table load failed: " + "; ".join(failed))
