"""The Dagster side: a `DltLoadCollectionComponent` whose assets run one pipeline per table.

The stock component runs the load's one pipeline; here each table has its own pipeline and state
(loads.py), so `execute` runs the selected tables through the same runner as the CLI and reports
SPEC §6's figures as materialization metadata.
"""

from collections.abc import Iterator

import dagster as dg
from dagster_dlt import DltLoadCollectionComponent
from dagster_dlt.translator import DltResourceTranslatorData

from edxorg_s3_ingest.report import TableReport
from edxorg_s3_ingest.runner import load_table
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
    if report.load_id:
        metadata["dlt_load_id"] = report.load_id
    if report.misplaced_files:
        metadata["misplaced_files"] = dg.MetadataValue.json(report.misplaced_files)
    return metadata


class EdxorgTablesComponent(DltLoadCollectionComponent):
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
