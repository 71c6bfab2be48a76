"""The store of each environment (SPEC §8): Parquet folders in dev, Iceberg + Glue in the lake."""

from edxorg_s3_ingest.consolidation import TableStore
from edxorg_s3_ingest.parquet_store import ParquetStore
from edxorg_s3_ingest.settings import ConfigurationError, Settings


def store_for(settings: Settings) -> TableStore:
    if settings.environment == "dev":
        return ParquetStore(settings.data_dir)
    raise ConfigurationError(
        f"DAGSTER_ENVIRONMENT={settings.environment}: the Iceberg + Glue store is not yet "
        "available; use dev (unset) for Parquet under .dlt/data."
    )
