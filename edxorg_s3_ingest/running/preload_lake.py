"""In qa and production, what the lake's store needs, imported by the CLI's fork server after
preload.py and the same way: pyiceberg, s3fs and its aiobotocore, ~0.9 s of CPU that each
worker otherwise paid again when it first committed."""

from edxorg_s3_ingest.running.preload import import_paused

LAKE = ["edxorg_s3_ingest.stores.iceberg_store", "pyiceberg.io.fsspec", "s3fs"]

import_paused(LAKE)
