"""The code location's Definitions: everything dg finds under `edxorg_s3_ingest/defs/`, run by
the executor that `EDXORG_S3_INGEST_EXECUTOR` names (README: "Dagster")."""

import os
from pathlib import Path

import dagster as dg

from edxorg_s3_ingest.settings import ConfigurationError

EXECUTOR_VARIABLE = "EDXORG_S3_INGEST_EXECUTOR"


def executor() -> dg.ExecutorDefinition:
    """`multiprocess` (the default): a run's table steps run side by side, each in a process of
    its own. `k8s`: each table step is a Kubernetes pod of its own (deploy/README.md)."""
    name = os.environ.get(EXECUTOR_VARIABLE, "").strip() or "multiprocess"
    if name == "multiprocess":
        return dg.multi_or_in_process_executor
    if name == "k8s":
        # Only here: the kubernetes client takes a second to import, and dev never needs it.
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    raise ConfigurationError(f"{EXECUTOR_VARIABLE}={name!r} is not one of multiprocess, k8s")


@dg.definitions
def defs() -> dg.Definitions:
    tables = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    return dg.Definitions.merge(tables, dg.Definitions(executor=executor()))
