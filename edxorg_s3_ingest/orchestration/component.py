"""The Dagster side: one op, and so one step, per table, each running its table's own pipeline.

The stock `DltLoadCollectionComponent` makes one op of a load's resources and runs its one
pipeline; here each table has its own pipeline (loading/pipeline.py) and state
(table_state.py), so each table gets an op of its own: tables of a run load side by side under
the executor, share the concurrency pool one slot per table, and fail alone. A step loads its
table as the CLI does (table_load.py), reports SPEC §6's figures as materialization metadata,
then evaluates the table's checks.
"""

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any

import dagster as dg
from dagster.components.utils.translation import TranslationFn, TranslationFnResolver
from dagster_dlt import DltLoadCollectionComponent
from dagster_dlt.components.dlt_load_collection.component import _load_object_from_python_path
from dagster_dlt.translator import DltResourceTranslatorData
from dlt.extract.source import DltSource

from edxorg_s3_ingest.loading.table_load import load_table, pipeline_name
from edxorg_s3_ingest.orchestration.automation import (
    automation_sensor,
    latest_rows_rejected,
    reconciliation_result,
    rejected_rows_result,
    table_check_specs,
    upstream_exports_landed,
)
from edxorg_s3_ingest.orchestration.sensor import landing_zone_sensor
from edxorg_s3_ingest.orchestration.step_cores import step_cores
from edxorg_s3_ingest.orchestration.upkeep import DEFAULT_CRON, upkeep_job, upkeep_schedule
from edxorg_s3_ingest.report import TableReport
from edxorg_s3_ingest.settings import Settings
from edxorg_s3_ingest.tables import TABLES, UPSTREAM_COLUMNS, destination_table, known_columns

STORAGE_KIND = {"dev": "parquet", "qa": "iceberg", "production": "iceberg"}


def describe_table(table: str) -> str:
    columns = known_columns().get(table)
    text = (
        f"`{destination_table(table)}`: the edX.org `{table}` table of every course, as edX "
        "exports it for research. Each course's rows are those of its newest export: a new "
        "export of a course replaces that course's rows, older and `edge` exports are never "
        f"loaded.\n\nSource: the TSV files under `db_table/{table}/prod/<course id>/` in the "
        "edX landing zone (the upstream asset), one per course and export; this asset loads "
        "the new ones when upstream exports land.\n\nColumns: those of the files' headers, "
        "every one a string, as exported (cast them downstream, e.g. in dbt); plus "
        "`_course_id`, `_dlt_file_path` (the file a row came from), `_dlt_file_modified`, "
        "`_source_line` (its line in that file) and `_dlt_load_id`. Lines that could not be "
        "loaded are in `raw__edxorg__s3__rejected_rows` (see the `rejected_rows` check)."
    )
    if columns:
        text += f"\n\nDocumented export columns: {', '.join(name for name, _, _ in columns)}."
    return text


def column_schema(table: str) -> dg.TableSchema:
    documented = [
        dg.TableColumn(name, type="string", description=f"{hint}. {note}".strip())
        for name, hint, note in known_columns().get(table, [])
    ]
    appended = [
        dg.TableColumn(name, type="string", description=f"Appended upstream: {text}")
        for name, text in UPSTREAM_COLUMNS
    ]
    return dg.TableSchema(columns=documented + appended)


def qualified_table_name(table: str, settings: Settings) -> str:
    """The name a query uses: the Glue database's table in the lake; in dev there is no
    catalog, only the table's folder of that name."""
    if settings.environment == "dev":
        return destination_table(table)
    return f"{settings.glue_database}.{destination_table(table)}"


def time_window(fail_hours: float, warn_hours: float | None = None) -> dg.FreshnessPolicy:
    """`freshness_policy` in defs.yaml: a table not loaded for `warn_hours` warns, for
    `fail_hours` fails."""
    return dg.FreshnessPolicy.time_window(
        fail_window=timedelta(hours=fail_hours),
        warn_window=timedelta(hours=warn_hours) if warn_hours is not None else None,
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


def landing_zone_holds_tables(bucket_url: str) -> None:
    """A table without exports is no error, but a landing zone without a single edX table's
    folder is a wrong bucket URL or prefix (SPEC §6), which the CLI says once for its run: a
    step, which sees only its own table, asks the landing zone's check (one listing of
    `db_table/`) rather than report the table as not exported yet."""
    from edxorg_s3_ingest.landing.check import table_folders

    if not set(table_folders(bucket_url)) & set(TABLES):
        raise dg.Failure(
            description=f"no edX table folder under {bucket_url.rstrip('/')}/db_table/: "
            "is the bucket URL or prefix right? (SOURCES__EDXORG_S3__BUCKET_URL or "
            ".dlt/config.toml)"
        )


def no_exports_metadata(report: TableReport) -> dict:
    return {
        "status": "no exports yet",
        "files_seen": report.files_seen,
        "destination": dg.MetadataValue.path(report.destination),
    }


@dataclass
class TableLoads(dg.Resolvable):
    """The stock load model without its `pipeline`: each table runs its own
    (loading/pipeline.py)."""

    source: Annotated[DltSource, dg.Resolver(_load_object_from_python_path, model_field_type=str)]
    translation: (
        Annotated[
            TranslationFn[DltResourceTranslatorData],
            TranslationFnResolver[DltResourceTranslatorData](
                lambda data: {"resource": data.resource}
            ),
        ]
        | None
    ) = None


@dataclass
class EdxorgTablesComponent(DltLoadCollectionComponent):
    """Adds to the stock component: an op per table, a concurrency pool, op tags per table, the
    table checks, the lake's upkeep job and schedule, and each table's asset spec made here
    (`table_spec`) rather than by translation templates, which jinja compiled and dagster
    resolved again for each of the 44 tables in every process that loads the code location
    (~0.15 s of CPU; a run pays it twice before its first step: in its own process and in the
    step server). A load's `translation`, if given, still applies over it, with
    `upstream_exports_landed` and `time_window` in its template scope."""

    loads: Sequence[TableLoads]
    group_name: str = "ingestion"
    """The table assets' group."""
    freshness_warn_hours: float | None = None
    """Hours since a table's last load before the UI shows it late (warn)."""
    freshness_fail_hours: float | None = None
    """Hours since a table's last load before the UI shows it stale (fail); without it the
    tables have no freshness policy."""
    pool: str | None = None
    """Dagster concurrency pool of the table loads; its limit is set on the instance."""
    op_tags: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Op tags of single tables' steps, e.g. the Kubernetes resources of their pods."""
    upkeep_cron: str = DEFAULT_CRON
    """When the lake's table upkeep job runs (UTC), README: "Table upkeep"."""

    @classmethod
    def get_additional_scope(cls) -> Mapping[str, Any]:
        return {"upstream_exports_landed": upstream_exports_landed(), "time_window": time_window}

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        if unknown := sorted(set(self.op_tags) - set(TABLES)):
            raise ValueError(f"op_tags name tables that do not exist: {', '.join(unknown)}")
        settings = Settings.resolve()
        shared = self.shared_spec_attributes(settings)
        assets = [
            self.table_asset(resource.name, self.table_spec(resource, load, shared, settings))
            for load in self.loads
            for resource in load.source.selected_resources.values()
        ]
        keys = [key for asset in assets for key in asset.keys]
        upkeep = upkeep_job(self.pool)
        return dg.Definitions(
            assets=assets,
            sensors=[automation_sensor(keys), landing_zone_sensor(keys)],
            jobs=[upkeep],
            schedules=[upkeep_schedule(upkeep, self.upkeep_cron)],
        )

    def shared_spec_attributes(self, settings: Settings) -> dict[str, Any]:
        """What every table's asset spec has alike, made once (`table_spec`)."""
        freshness = None
        if self.freshness_fail_hours is not None:
            freshness = time_window(self.freshness_fail_hours, self.freshness_warn_hours)
        return {
            "group_name": self.group_name,
            # Runs the table when any upstream partition lands (the automation sensor).
            "automation_condition": upstream_exports_landed(),
            "freshness_policy": freshness,
            "kinds": {"dlt", STORAGE_KIND[settings.environment]},
        }

    def table_spec(
        self, resource, load: TableLoads, shared: dict[str, Any], settings: Settings
    ) -> dg.AssetSpec:
        """A table's asset `edxorg/tables/<table>`, downstream of its landing folder's asset
        `edxorg/raw_data/db_table/<table>` (explicit: the stock translator would add a phantom
        `edxorg_s3_<table>` dep), tagged `edx_table: <table>`; then the load's `translation`,
        if any."""
        table = resource.name
        data = DltResourceTranslatorData(resource=resource, pipeline=None)
        stock = super().get_asset_spec(data)
        metadata = {
            **stock.metadata,
            "dagster/column_schema": column_schema(table),
            "dagster/table_name": qualified_table_name(table, settings),
        }
        spec = stock.replace_attributes(
            key=dg.AssetKey(["edxorg", "tables", table]),
            deps=[dg.AssetKey(["edxorg", "raw_data", "db_table", table])],
            description=describe_table(table),
            metadata=metadata,
            tags={"edx_table": table},
            **shared,
        )
        return load.translation(spec, data) if load.translation else spec

    def table_asset(self, table: str, spec: dg.AssetSpec) -> dg.AssetsDefinition:
        # Subsettable, so that the checks also run alone (the asset's "Execute checks").
        @dg.multi_asset(
            name=pipeline_name(table),
            specs=[spec],
            check_specs=table_check_specs(spec.key),
            can_subset=True,
            pool=self.pool,
            op_tags=self.op_tags.get(table),
        )
        def load(context: dg.AssetExecutionContext):
            yield from self.execute_table(context, table, spec.key)

        return load

    def execute_table(
        self, context: dg.AssetExecutionContext, table: str, key: dg.AssetKey
    ) -> Iterator:
        settings = Settings.resolve()
        if key in context.selected_asset_keys:
            context.log.info(f"loading {table} from {settings.bucket_url}")
            # The step's own core, and a spare one for its load's parse helper when no other
            # step holds it (step_cores.py).
            with step_cores(context):
                report = load_table(table, settings)
            if not report.ok:
                raise dg.Failure(description=f"{table}: {report.error}")
            if report.status == "no_prod_files":
                landing_zone_holds_tables(settings.bucket_url)
                # Not a materialization: the table may not exist yet, and a green
                # materialization would point at a destination no query can read.
                context.log.info(f"{table}: no exports yet under {settings.bucket_url}")
                yield dg.AssetObservation(asset_key=key, metadata=no_exports_metadata(report))
                return
            yield dg.MaterializeResult(asset_key=key, metadata=report_metadata(report))
            rejected = report.rows_rejected
        else:
            rejected = latest_rows_rejected(context.instance, key)
        for check in sorted(context.selected_asset_check_keys, key=str):
            if check.name == "rejected_rows":
                yield rejected_rows_result(key, rejected)
            else:
                yield reconciliation_result(settings, table, key)
