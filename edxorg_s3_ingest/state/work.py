"""What one run of one table does, decided before dlt runs (SPEC §7): the table's listing, the
state its store holds, and the plan made from both (incremental.py)."""

from dataclasses import dataclass, field

from edxorg_s3_ingest.landing.listing import Listing
from edxorg_s3_ingest.state.incremental import Plan
from edxorg_s3_ingest.state.table_state import StoredState


@dataclass
class Work:
    listing: Listing
    stored: StoredState
    """The state the plan starts from, and the version the commit must still find."""
    plan: Plan
    state: dict
    """The state after this run: the plan's, then the rows the source read (source.py)."""
    full_refresh: bool = False
    courses_read: dict = field(default_factory=dict)
    """What the source read of each course (source.py; the package's manifest holds the same):
    committed as it is when dlt completes no package (Consolidator.commit_state)."""

    @property
    def changes_nothing(self) -> bool:
        return not (self.full_refresh or self.stored.interrupted) and self.plan.changes_nothing
