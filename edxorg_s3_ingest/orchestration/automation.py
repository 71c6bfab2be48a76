"""When the table assets run by themselves, and how they check their own data (SPEC §8).

Texts shown in the UI (descriptions) are for a data engineer who has not read the SPEC: what is
checked and what to do when it fails, never a SPEC section."""

import dagster as dg

from edxorg_s3_ingest.loading.table_load import TableLoad
from edxorg_s3_ingest.settings import Settings
from edxorg_s3_ingest.state.table_state import expected_rows
from edxorg_s3_ingest.tables import destination_table


def upstream_exports_landed() -> dg.AutomationCondition:
    """Request the table once when any upstream partition (course × source system) has been
    materialized since the table was last requested, and never while a run of it is in progress.

    Not `eager()`: it holds back while any upstream partition is missing, and upstream never
    materializes header-only exports, so it would never fire (STACK-NOTES).
    """
    return (
        dg.AutomationCondition.any_deps_updated().since_last_handled()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("upstream_exports_landed")


AUTOMATION_SENSOR = "edxorg_tables_automation"


def automation_sensor(keys: list[dg.AssetKey]) -> dg.AutomationConditionSensorDefinition:
    """The sensor that evaluates the tables' automation conditions, running from the start: the
    tables load by themselves once upstream exports land, with nobody to turn Dagster's default
    automation sensor on (which starts stopped, STACK-NOTES). Stopping it in the UI stops that."""
    return dg.AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR,
        target=dg.AssetSelection.assets(*keys),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Requests each table once upstream exports of it have landed.",
    )


def table_of(key: dg.AssetKey) -> str:
    return key.path[-1]


def table_check_specs(key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    """The table's checks: rejected rows in its latest load (warn), reconciliation (error).
    Evaluated in the table's own step right after its load, or alone from that same step."""
    table = table_of(key)
    return [
        dg.AssetCheckSpec(
            "rejected_rows",
            asset=key,
            description=(
                f"Warns when the latest load of `{table}` rejected lines: a line whose number "
                "of fields differs from the header's (not loaded), invalid UTF-8 (loaded with "
                "U+FFFD in place of the bad bytes), a zero-byte file or a file without a header "
                "(the course keeps its previous rows). Each is in `raw__edxorg__s3__rejected_"
                "rows` with its file, line, reason and raw text:\n\n"
                "SELECT reason, _dlt_file_path, _source_line, raw_line FROM "
                f"raw__edxorg__s3__rejected_rows WHERE \"table\" = '{table}' ORDER BY "
                "_dlt_file_path, _source_line;\n\nIf the export itself is wrong, ask for the "
                "course to be exported again: its next load replaces the course's rows and "
                "its rejects."
            ),
        ),
        dg.AssetCheckSpec(
            "reconciliation",
            asset=key,
            description=(
                f"Fails when `{table}` does not hold exactly the rows of each course's newest "
                "export, as the loader recorded them when it loaded them (the row counts are "
                "in the check's metadata). That means the table was changed outside this "
                "loader, or its files or state were damaged. Rebuild it from the landing zone: "
                f"`edxorg-s3-ingest --tables {table} --full-refresh`."
            ),
        ),
    ]


def latest_rows_rejected(instance: dg.DagsterInstance, key: dg.AssetKey) -> int:
    """Rows the table's latest materialization rejected: for the checks run without a load."""
    event = instance.get_latest_materialization_event(key)
    metadata = event.asset_materialization.metadata if event else {}
    return metadata["rows_rejected"].value if "rows_rejected" in metadata else 0


def rejected_rows_result(key: dg.AssetKey, rejected: int) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=key,
        check_name="rejected_rows",
        passed=rejected == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"rows_rejected": rejected, "rejects_table": "raw__edxorg__s3__rejected_rows"},
    )


def reconciliation_result(settings: Settings, table: str, key: dg.AssetKey):
    """The table's rows against its state's (SPEC §5), both read from the store: right from
    any pod, loaded there or not."""
    load = TableLoad(table, settings)
    expected = expected_rows(load.stored().state)
    actual = load.store.row_count(destination_table(table))
    return dg.AssetCheckResult(
        asset_key=key,
        check_name="reconciliation",
        passed=actual == expected,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"table_rows": actual, "rows_in_newest_files": expected},
    )
