"""Arrow's allocator in loading processes (loading/memory_pool.py): in qa and production, memory
a load frees goes back to the system within jemalloc's decay, whichever thread freed it (pods
are sized by their peak)."""

import json
import os
import subprocess
import sys

import pytest

MB = 1 << 20
PROBE = """
import json, os, threading, time
from edxorg_s3_ingest.loading.memory_pool import use_lean_memory_pool
import pyarrow as pa

def resident():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096

use_lean_memory_pool()
before = resident()
# Many mid-sized buffers, as a load's parse blocks and columns are (one large one is given back
# to the system whatever the decay).
buffers = [pa.allocate_buffer(256 << 10) for _ in range(1024)]
for buffer in buffers:
    memoryview(buffer).cast("B")[::4096] = b"x" * 64  # every page touched
held = resident()
del buffers, buffer
after = resident()


def allocate_elsewhere():
    # jemalloc gives pages back as its arenas are used, never by itself: here by a thread
    # other than the one that freed them (which, like a parse thread gone idle, allocates no
    # more).
    deadline = time.monotonic() + 10
    while resident() - before > (32 << 20) and time.monotonic() < deadline:
        pa.allocate_buffer(64 << 10)


thread = threading.Thread(target=allocate_elsewhere)
thread.start()
thread.join()
print(json.dumps({"pool": pa.default_memory_pool().backend_name, "before": before,
                  "arenas": os.environ.get("MALLOC_ARENA_MAX"), "held": held, "after": after,
                  "after_other_thread": resident()}))
"""


def probe(environment: str) -> dict:
    env = {**os.environ, "DAGSTER_ENVIRONMENT": environment}
    env.pop("MALLOC_ARENA_MAX", None)
    env.pop("JE_ARROW_MALLOC_CONF", None)
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out)


@pytest.mark.parametrize("environment", ["qa", "production"])
def test_a_lake_load_gives_freed_memory_back_within_the_decay(environment):
    figures = probe(environment)
    assert figures["pool"] == "jemalloc"
    assert figures["held"] - figures["before"] > 200 * MB  # the buffers were resident
    assert figures["after_other_thread"] - figures["before"] < 32 * MB
    assert figures["arenas"] == "1"  # for the processes it starts (workers, helpers)


def test_dev_keeps_arrows_timed_decay():
    """Faster: freed pages are used again without being faulted in (the speed targets are
    dev's)."""
    figures = probe("dev")
    assert figures["pool"] == "jemalloc"
    assert figures["after"] - figures["before"] > 64 * MB


LOAD_PROBE = """
import json, sys
from pathlib import Path
from edxorg_s3_ingest.loading.table_load import load_table
from edxorg_s3_ingest.settings import Settings

work = Path(sys.argv[2])
settings = Settings("dev", sys.argv[1], work / "data", work / "pipelines")
report = load_table("auth_user", settings, False)
try:
    import pandas  # noqa: F401
    importable = True
except ModuleNotFoundError:
    importable = False
print(json.dumps({"status": report.status, "rows": report.rows_loaded,
                  "imported": "pandas" in sys.modules, "importable": importable}))
"""


def test_a_load_never_imports_pandas(tmp_path):
    """pyarrow would import pandas at the reader's first conversion of Python or numpy values
    (~0.2 s of CPU and ~40 MB in each loading process): the load leaves it out and still
    loads every row."""
    from conftest import SAMPLE

    command = [sys.executable, "-c", LOAD_PROBE, str(SAMPLE), str(tmp_path)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    figures = json.loads(out)
    assert (figures["status"], figures["rows"]) == ("loaded", 20)
    assert (figures["imported"], figures["importable"]) == (False, False)


def test_pandas_already_imported_stays_usable():
    probe = (
        "import pandas, sys\n"
        "from edxorg_s3_ingest.loading.memory_pool import leave_pandas_out\n"
        "leave_pandas_out()\n"
        "import pandas.api.types\n"
        "print(pandas.Series([1, 2]).sum())\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "3"


def test_the_lake_preload_leaves_pandas_out():
    """The qa fork server imports pyiceberg, whose pyarrow.dataset would import pandas."""
    probe = "import sys, edxorg_s3_ingest.running.preload_lake; print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
