"""What a fork server imports before it forks any process: the CLI's workers (workers.py) and
Dagster's step processes (definitions.step_preload). Imported there, as a preload module, once.

The imports run with Python's cyclic garbage collector paused: the ~160,000 objects they create
would otherwise set off collections that walk every object created so far (~9% of their CPU:
in a fresh interpreter, medians 0.60 s with it running, 0.55 s paused, on a busy machine; the
fork server's imports are the critical path of a run's start, benchmarks/README "A lighter
start"). Then what they made is frozen (`gc.freeze`): moved out of the collector's
generations, so that the collections of every process forked from the server never walk it,
nor write to the memory pages it shares with the server.
"""

import importlib

from edxorg_s3_ingest.collector import paused
from edxorg_s3_ingest.timeline import mark

LOADING = [
    "edxorg_s3_ingest.running.runner",
    "edxorg_s3_ingest.running.workers",
    "edxorg_s3_ingest.loading.source",
    "edxorg_s3_ingest.loading.destination",
    "edxorg_s3_ingest.stores.parquet_store",
    "edxorg_s3_ingest.stores",
    "dlt.pipeline.pipeline",
    "dlt.normalize",
    "dlt.load",
    "dlt.common.configuration.plugins",
    "dlt.common.libs.pyarrow",
    "dlt.common.normalizers.naming.direct",
    "dlt.sources.helpers.requests",
    "fsspec.implementations.local",
]
"""What a dev table load needs (~0.5 s of CPU), so that a worker forked from the server starts
with it imported. Not pandas, which loads leave out (memory_pool.leave_pandas_out); nor, in
dev, the lake's pyiceberg (preload_lake.py).
Neither `loads` nor `cli`, nor anything that imports them: a worker runs the CLI's main module
again (as `__mp_main__`, which is what multiprocessing does), and Python warns when that module
has been imported already."""


def import_paused(modules: list[str]) -> None:
    """Imports the modules with the garbage collector paused, then freezes what they made
    (collector.paused). A module that cannot be imported is skipped, whatever the error (the
    fork server itself skips only an ImportError, and dies of any other: each worker would then
    fail to start with a bare `EOFError`); the process that needs the module meets the error
    itself, and reports it."""
    with paused():
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - see above
                continue


import_paused(LOADING)
mark("preloaded")  # a fork server's imports done (benchmarks/fixed_cost.py)
