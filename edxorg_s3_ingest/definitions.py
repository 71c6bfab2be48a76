"""The code location's Definitions: everything dg finds under `edxorg_s3_ingest/defs/`, run by
the executor that `EDXORG_S3_INGEST_EXECUTOR` names (README: "Dagster")."""

import multiprocessing
import os
import sys
from functools import lru_cache
from pathlib import Path

import dagster as dg

from edxorg_s3_ingest.collector import no_collection_at_exit, paused
from edxorg_s3_ingest.orchestration import step_server_fork
from edxorg_s3_ingest.settings import ConfigurationError
from edxorg_s3_ingest.timeline import mark

EXECUTOR_VARIABLE = "EDXORG_S3_INGEST_EXECUTOR"


def multiprocess() -> dg.ExecutorDefinition:
    """Dagster's multiprocess executor, its step processes forked from a server that imported the
    loader and built these definitions once (step_server.py), as the CLI's workers are: each
    step then starts in well under a second instead of importing dagster, dlt and pyarrow and
    building the definitions again (~4 s of CPU per table)."""
    return dg.multiprocess_executor.configured(
        lambda config: {
            "max_concurrent": config["max_concurrent"],
            "start_method": {"forkserver": {"preload_modules": step_preload()}},
        },
        name="multiprocess",
        config_schema={
            "max_concurrent": dg.Field(
                int, default_value=0, description="Table steps at once; 0: the number of CPUs."
            )
        },
    )


RUN_COMMANDS = {("asset", "materialize"), ("job", "execute"), ("api", "execute_run")}
"""The `dagster` commands whose process executes a run itself (`api execute_run`: the run worker
that a run launcher starts, locally or in a Kubernetes run pod)."""


def runs_here() -> bool:
    """Whether this process was started to execute a run, and so will start the step server (not
    the server itself, nor its steps, forked from such a process)."""
    return tuple(sys.argv[1:3]) in RUN_COMMANDS and not step_server_fork.serving()


@lru_cache(maxsize=2)
def serve_steps(*, built: bool) -> None:
    """Starts the step processes' fork server without waiting for it (as the CLI's
    workers.start_fork_server), rather than when the executor asks for the first step; the
    executor finds it running and forks its steps from it; it ends with this process. Called
    before the definitions are built and once they are (each at most once per process): it
    starts at the first of the two moments that can start it, and the second finds it running.

    Once the definitions are `built`, as a fork of this process (step_server_fork): the server
    then starts with dagster, the instance's storage modules, dlt and the definitions, and
    imports only pyarrow and the loader (~0.3 s of CPU, against ~1.2 s for a new interpreter,
    which imports dagster again and builds the definitions again). Before they are built, and
    only where this process cannot be forked (another thread running), as a new interpreter:
    its imports and definitions then run on another core while this process builds its own."""
    if not built and step_server_fork.can_fork():
        return
    preload = step_preload()
    multiprocessing.get_context("forkserver").set_forkserver_preload(preload)
    if not (built and step_server_fork.start(preload)):
        from multiprocessing import forkserver

        forkserver.ensure_running()  # nothing to do where it runs already
    mark("step-server started")


def step_preload() -> list[str]:
    """What the step processes' fork server imports: what the executor itself asks it to import
    first (dagster's multiprocess.py: it adds it unless listed), the CLI workers' loading code
    (running/preload.py), then the definitions, built there (step_server.py); all with the
    collector paused (step_server_preamble, preload.py, step_server.py)."""
    from edxorg_s3_ingest.running.fork_server import WORKER_PRELOAD

    executor = "dagster._core.executor.multiprocess"
    server = ["edxorg_s3_ingest.step_server_preamble", executor, *WORKER_PRELOAD]
    return [*server, "edxorg_s3_ingest.step_server"]


def executor() -> dg.ExecutorDefinition:
    """`multiprocess` (the default): a run's table steps run side by side, each in a process of
    its own. `k8s`: each table step is a Kubernetes pod of its own (deploy/README.md)."""
    name = executor_name()
    if name == "multiprocess":
        return multiprocess()
    if name == "k8s":
        # Only here: the kubernetes client takes a second to import, and dev never needs it.
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    raise ConfigurationError(f"{EXECUTOR_VARIABLE}={name!r} is not one of multiprocess, k8s")


def executor_name() -> str:
    return os.environ.get(EXECUTOR_VARIABLE, "").strip() or "multiprocess"


@dg.definitions
def defs() -> dg.Definitions:
    definitions = built(frozenset(os.environ.items()), os.getcwd())
    if runs_here() and executor_name() == "multiprocess":
        serve_steps(built=True)
    return definitions


@lru_cache(maxsize=4)
def built(environment: frozenset, working_dir: str) -> dg.Definitions:
    """The definitions, built once per process for the same environment variables and working
    directory (what settings and the executor read, besides the code and `.dlt/*.toml`, which a
    code location reloads with a new process): Dagster calls `defs` each time it reconstructs
    the code location from its pointer, six times in one `dagster asset materialize` and again
    in each step process, ~1 s each."""
    if not runs_here():
        return build()
    no_collection_at_exit()
    if executor_name() == "multiprocess":
        serve_steps(built=False)
    # Once in the run's process: what it builds lives as long as it does (collector.py).
    with paused():
        definitions = build()
    mark("definitions built")
    return definitions


def build() -> dg.Definitions:
    tables = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    return dg.Definitions.merge(tables, dg.Definitions(executor=executor()))
