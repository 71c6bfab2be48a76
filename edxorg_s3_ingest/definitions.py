"""The code location's Definitions: everything dg finds under `edxorg_s3_ingest/defs/`, run by
the executor that `EDXORG_S3_INGEST_EXECUTOR` names (README: "Dagster")."""

import os
from pathlib import Path

import dagster as dg

from edxorg_s3_ingest.settings import ConfigurationError

EXECUTOR_VARIABLE = "EDXORG_S3_INGEST_EXECUTOR"


def multiprocess() -> dg.ExecutorDefinition:
    """Dagster's multiprocess executor, its step processes forked from a server that imported the
    loader once, as the CLI's workers are: each step then starts in about a second instead of
    importing dagster, dlt and pyarrow again (~4 s of CPU per table)."""
    from edxorg_s3_ingest.running.workers import WORKER_PRELOAD

    preload = [__name__, "edxorg_s3_ingest.orchestration.component", *WORKER_PRELOAD]
    return dg.multiprocess_executor.configured(
        lambda config: {
            "max_concurrent": config["max_concurrent"],
            "start_method": {"forkserver": {"preload_modules": preload}},
        },
        name="multiprocess",
        config_schema={
            "max_concurrent": dg.Field(
                int, default_value=0, description="Table steps at once; 0: the number of CPUs."
            )
        },
    )


def executor() -> dg.ExecutorDefinition:
    """`multiprocess` (the default): a run's table steps run side by side, each in a process of
    its own. `k8s`: each table step is a Kubernetes pod of its own (deploy/README.md)."""
    name = os.environ.get(EXECUTOR_VARIABLE, "").strip() or "multiprocess"
    if name == "multiprocess":
        return multiprocess()
    if name == "k8s":
        # Only here: the kubernetes client takes a second to import, and dev never needs it.
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    raise ConfigurationError(f"{EXECUTOR_VARIABLE}={name!r} is not one of multiprocess, k8s")


@dg.definitions
def defs() -> dg.Definitions:
    tables = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    return dg.Definitions.merge(tables, dg.Definitions(executor=executor()))
