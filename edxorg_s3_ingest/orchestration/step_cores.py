"""The cores of a table step, and when its load may take a spare one for a parse helper
(loading/parse_helper.py), as the CLI's largest load does once its other worker is done.

A step holds one of the cores its process may use (`runner.available_cpus`: its CPU
allowance, the container's CPU limit included) for itself, as a lock file shared by every
process of the machine or pod (spare_cores.machine_cores). Its load's helper takes another
core when no process holds it:

- one pod per step (`k8s_job_executor`): the pod's cores are the step's own; any beyond the
  first is spare from the start.
- steps side by side on one machine (the multiprocess executor): only once every step of the
  run has started. Until then, a free core belongs to a step still waiting to start, as the
  CLI keeps its cores for tables still to load; then the last steps running take the cores the
  others freed.
"""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import dagster as dg

from edxorg_s3_ingest.loading.spare_cores import machine_cores
from edxorg_s3_ingest.running.runner import available_cpus

POD_PER_STEP_EXECUTORS = ("k8s",)
"""Executors that run each step in a pod of its own: its cores are no other step's."""
LOOK_EVERY = 1.0
"""Seconds between two looks at the run's event log for steps still waiting to start."""


@contextmanager
def step_cores(context: dg.AssetExecutionContext) -> Iterator[bool]:
    """Around a step's load: yields whether the step got a core of its own (more steps than
    cores: it loads anyway, with no helper)."""
    alone = context.job_def.executor_def.name in POD_PER_STEP_EXECUTORS
    with machine_cores(available_cpus(), ready=None if alone else run_started(context)) as own:
        yield own


def run_started(context: dg.AssetExecutionContext) -> Callable[[], bool]:
    """Whether every step of the step's run has started, from the run's event log; asked at
    most every LOOK_EVERY seconds, True for good once it was True. An instance that cannot
    answer means no helper (the load goes on without one), never a failed load."""
    instance, run, log = context.instance, context.run, context.log
    seen = {"at": 0.0, "started": False, "steps": None}

    def started() -> bool:
        if seen["started"] or time.monotonic() - seen["at"] < LOOK_EVERY:
            return seen["started"]
        seen["at"] = time.monotonic()
        try:
            if seen["steps"] is None:
                plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
                seen["steps"] = set(plan.step_keys_to_execute)
            records = instance.get_records_for_run(
                run.run_id, of_type=dg.DagsterEventType.STEP_START
            ).records
        except Exception as error:  # noqa: BLE001 - a helper is an optimisation
            log.warning(f"no spare core for a parse helper: the run's steps are unknown ({error})")
            seen["at"] = float("inf")  # never asked again
            return False
        seen["started"] = seen["steps"] <= {record.event_log_entry.step_key for record in records}
        return seen["started"]

    return started
