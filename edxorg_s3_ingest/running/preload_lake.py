"""In qa and production, what the lake's store needs, imported by the CLI's fork server after
preload.py and the same way: pyiceberg, s3fs and its aiobotocore, ~0.9 s of CPU that each
worker otherwise paid again when it first committed. pandas is left out first, as loads leave it
out (memory_pool.leave_pandas_out): pyiceberg's pyarrow.dataset would import it here, ~0.16 s
of CPU and ~40 MB in the server that no load uses."""

from edxorg_s3_ingest.loading.memory_pool import leave_pandas_out
from edxorg_s3_ingest.running.preload import import_paused

LAKE = ["edxorg_s3_ingest.stores.iceberg_store", "pyiceberg.io.fsspec", "s3fs"]

leave_pandas_out()
import_paused(LAKE)
