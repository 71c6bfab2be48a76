"""collector.py: what Python's cyclic garbage collector does in the processes of a Dagster run."""

import subprocess
import sys

from conftest import REPO

AT_EXIT = """
import sys
from edxorg_s3_ingest import collector

class Node:
    def __del__(self):
        print("collected", flush=True)

if sys.argv[1] == "cli":  # first: its imports run collections of their own
    from edxorg_s3_ingest import cli

    cli.main(["--list-tables"])
node = Node()
node.cycle = node  # only the collector frees it
del node
if sys.argv[1] == "skip":
    collector.no_collection_at_exit()
    collector.no_collection_at_exit()  # once is enough: registered once
print("exiting", flush=True)
"""


def exit_output(mode: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", AT_EXIT, mode],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_the_run_process_skips_the_last_collection_at_exit():
    """The interpreter's last collection traverses every object (~0.7 s of CPU in a run's
    process); skipped, what only it would free stays unfreed as the process ends."""
    assert exit_output("collect") == ["exiting", "collected"]
    assert exit_output("skip") == ["exiting"]


def test_the_cli_skips_the_last_collection_at_exit():
    """The CLI's process ends after its workers: its last collection would only delay the
    exit (the fixed cost after the last byte written, benchmarks/fixed_cost.py)."""
    output = exit_output("cli")
    assert output[-1] == "exiting"
    assert "auth_user" in output and "collected" not in output


PAUSED = """
import gc
from edxorg_s3_ingest import collector

with collector.paused():
    during = gc.isenabled()
    kept = [[] for _ in range(1000)]
print(during, gc.isenabled(), gc.get_freeze_count() >= 1000)
"""


def test_what_is_built_while_paused_is_kept_out_of_later_collections():
    result = subprocess.run(
        [sys.executable, "-c", PAUSED], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True", "True"]
