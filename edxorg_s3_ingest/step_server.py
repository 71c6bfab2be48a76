"""Imported once by the fork server of Dagster's multiprocess executor (definitions.multiprocess):
builds the code location's definitions there, so that each step process forked from the server
finds them built (`definitions.defs` keeps them per process) rather than building them again;
and imports the modules of the run's Dagster instance (its storage, compute logs, launcher), which
each step process opens first: ~0.6 s of CPU per step otherwise (sqlalchemy, alembic and
dagster's storage modules, for the SQLite instance of a local Dagster home).

The server starts with the run's environment and working directory, which its step processes
inherit: they ask `defs` for exactly what was built here, and open the instance of the same
DAGSTER_HOME. Where the server is a fork of the run's process (orchestration/step_server_fork),
it has both already, and what this module does costs next to nothing.
"""

import importlib
import os

from edxorg_s3_ingest.collector import paused
from edxorg_s3_ingest.definitions import defs
from edxorg_s3_ingest.timeline import mark


def import_instance_modules() -> list[str]:
    """Imports the modules of the classes DAGSTER_HOME's instance names (what
    `DagsterInstance.from_ref` imports), without creating the instance: nothing is opened or
    connected here. Returns the modules; none when there is no Dagster home to read."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        return []
    # dagster's own (private) names: should they move, the steps import what they need
    # themselves, as they did before; a step opens its instance and reports any error.
    try:
        from dagster._core.instance.ref import InstanceRef
        from dagster._serdes import ConfigurableClassData

        ref = InstanceRef.from_dir(home)
    except Exception:  # noqa: BLE001 - see above
        return []
    imported = []
    for data in ref:
        if isinstance(data, ConfigurableClassData):
            try:
                importlib.import_module(data.module_name)
            except Exception:  # noqa: BLE001 - see above
                continue
            imported.append(data.module_name)
    return imported


# As running/preload.py's imports: the collector paused, then what was built frozen.
with paused():
    defs()
    import_instance_modules()
mark("step-server ready")
