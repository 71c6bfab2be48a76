"""The dlt destination that consolidates (a dlt custom destination with a completion hook).

dlt's own destinations can only append or replace whole tables (STACK-NOTES); replacing one
course's rows needs the whole load at hand, which a custom destination sees only when dlt
completes the load package. This subclass of dlt's `destination` factory adds that hook.
"""

from dlt.common.schema import TTableSchema
from dlt.destinations.impl.destination.destination import DestinationClient
from dlt.destinations.impl.destination.factory import destination

from edxorg_s3_ingest.consolidation import Consolidator


class ConsolidatingDestination(destination):
    def __init__(self, consolidator: Consolidator, name: str) -> None:
        # dlt wraps the callable with its config injection, which needs a plain function.
        def stage(items: str, table: TTableSchema) -> None:
            consolidator.stage(items, table)

        super().__init__(
            destination_callable=stage,
            destination_name=name,
            loader_file_format="parquet",
            batch_size=0,
        )
        self.consolidator = consolidator

    @property
    def client_class(self) -> type[DestinationClient]:
        consolidator = self.consolidator

        class ConsolidatingClient(DestinationClient):
            def complete_load(self, load_id: str) -> None:
                consolidator.complete(load_id)

        return ConsolidatingClient
