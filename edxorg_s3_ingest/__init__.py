"""edxorg-s3-ingest: edX.org table exports from an S3 landing zone into one consolidated table
per edX table (README.md)."""

import os as _os

# Before any process of the loader imports pyarrow, whose jemalloc reads its settings once, as
# the library loads (loading/memory_pool.py: qa and production pods give freed memory back).
if _os.environ.get("DAGSTER_ENVIRONMENT", "").strip() in ("qa", "production"):
    from edxorg_s3_ingest.loading.memory_pool import prepare_allocator as _prepare

    _prepare("qa")
