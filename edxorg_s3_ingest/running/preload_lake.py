"""In qa and production, what the lake's store needs, imported by the CLI's fork server after
preload.py and the same way: pyiceberg and its FileIO (stores/lake_io.py), which each worker
otherwise paid again when it first committed. Not s3fs and its aiobotocore (~0.15-0.2 s of CPU on
the start's critical path): the lake's objects go through the boto3 client, and only a scan of data
files (a copy-on-write, compaction) imports s3fs, in the worker that needs it. pandas is left out
first, as loads leave it out (memory_pool.leave_pandas_out): pyiceberg's pyarrow.dataset would
import it here, ~0.16 s of CPU and ~40 MB in the server that no load uses.

Then the process's S3 client and Glue catalog are built (landing/aws.py, iceberg_store.py:
cached per AWS environment, which a worker inherits with them): ~0.15 s of CPU each worker
paid before its first request. Built, a client has made no request and holds no connection,
so each forked worker has a copy of its own; the server itself never makes one. A failure is
left to the workers, which build their own and report it."""

from contextlib import suppress

from edxorg_s3_ingest.collector import paused
from edxorg_s3_ingest.loading.memory_pool import leave_pandas_out
from edxorg_s3_ingest.running.preload import import_paused

LAKE = ["edxorg_s3_ingest.stores.iceberg_store", "pyiceberg.io.fsspec"]

leave_pandas_out()
import_paused(LAKE)
with paused(), suppress(Exception):
    from edxorg_s3_ingest.landing.aws import s3_client
    from edxorg_s3_ingest.stores.iceberg_store import glue_catalog

    s3_client()
    glue_catalog()
