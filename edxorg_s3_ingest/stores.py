"""The store of each environment (SPEC §8): Parquet folders in dev, Iceberg + Glue in the lake."""

from edxorg_s3_ingest.consolidation import TableStore
from edxorg_s3_ingest.parquet_store import ParquetStore
from edxorg_s3_ingest.settings import Settings


def store_for(settings: Settings) -> TableStore:
    if settings.environment == "dev":
        return ParquetStore(settings.data_dir)
    # Imported here: dev runs (and the CLI's startup) need neither pyiceberg nor boto3.
    from edxorg_s3_ingest.iceberg_store import IcebergStore

    return IcebergStore(settings.lake_url, settings.glue_database)
