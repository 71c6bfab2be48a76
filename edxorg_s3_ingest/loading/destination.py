"""The dlt destination that consolidates (a dlt custom destination with a completion hook).

dlt's own destinations can only append or replace whole tables (STACK-NOTES); replacing one
course's rows needs the whole load at hand, which a custom destination sees only when dlt
completes the load package. This subclass of dlt's `destination` factory adds that hook.

Its jobs only set staged files aside (a hard link each): at most MAX_PARALLEL_JOBS run at once,
rather than dlt's 20 loader threads (each job commits the whole load package state; with many
jobs on 20 threads, dlt has crashed in orjson, see source.MAX_OWN_FILES). Not one at a time:
dlt's "sequential" strategy waited a second on the job it finalizes without running it (the
pipeline state's, which loads carried then: loading/pipeline.py), every load.
"""

import copy
from typing import Any

from dlt.common.destination.capabilities import DestinationCapabilitiesContext
from dlt.common.schema import TTableSchema
from dlt.destinations.impl.destination.destination import DestinationClient
from dlt.destinations.impl.destination.factory import destination

from edxorg_s3_ingest.loading.consolidation import Consolidator

FIXED = ("destination_callable", "loader_file_format", "batch_size", "max_parallel_load_jobs")
MAX_PARALLEL_JOBS = 4


class ConsolidatingDestination(destination):
    def __init__(
        self,
        consolidator: Consolidator | None = None,
        destination_name: str = "edxorg",
        **kwargs: Any,
    ) -> None:
        # dlt re-creates the destination from the pipeline's saved state (with no consolidator)
        # when a pipeline is only attached, e.g. to read its state: that must work, loading not.
        def stage(items: str, table: TTableSchema) -> None:
            self._consolidator().stage(items, table)

        super().__init__(
            destination_callable=stage,
            destination_name=destination_name,
            loader_file_format="parquet",
            batch_size=0,
            max_parallel_load_jobs=MAX_PARALLEL_JOBS,
            **{key: value for key, value in kwargs.items() if key not in FIXED},
        )
        self.consolidator = consolidator
        self._capabilities: dict[Any, DestinationCapabilitiesContext] = {}

    def capabilities(
        self, config: Any = None, naming: Any = None
    ) -> DestinationCapabilitiesContext:
        """dlt's, computed once per naming convention for this destination (one table's
        load): without a `config`, dlt resolves the destination's whole configuration for
        each call, a dozen times per pipeline run (~0.03 s of CPU each). Its settings cannot
        change within a load. Each caller gets its own copy, as from dlt."""
        if config is not None:
            return super().capabilities(config, naming)
        if naming not in self._capabilities:
            self._capabilities[naming] = super().capabilities(None, naming)
        return copy.copy(self._capabilities[naming])

    def _consolidator(self) -> Consolidator:
        if self.consolidator is None:
            raise RuntimeError("this pipeline was attached, not built by edxorg_s3_ingest.loads")
        return self.consolidator

    @property
    def client_class(self) -> type[DestinationClient]:
        factory = self

        class ConsolidatingClient(DestinationClient):
            def complete_load(self, load_id: str) -> None:
                factory._consolidator().complete(load_id)

        return ConsolidatingClient
