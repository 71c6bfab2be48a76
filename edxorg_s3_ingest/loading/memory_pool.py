"""Arrow's allocator in the processes that read and write a table's rows (a load, its parse
helper, the workers' fork server): apart from source.py so that the CLI sets it up without
importing pyarrow, and a parse helper without importing dlt."""

import functools
import os
import sys
from contextlib import suppress

JEMALLOC_SETTINGS = "JE_ARROW_MALLOC_CONF"
RELEASE_SOON = "narenas:1,dirty_decay_ms:250,muzzy_decay_ms:0"


def prepare_allocator(environment: str) -> None:
    """In qa and production, memory a load frees goes back to the system within a quarter of a
    second, from one arena (rather than Arrow's one-second decay over one arena per thread): a
    pod is sized by its peak memory. With one arena per thread, pages a thread freed waited
    for that thread's next allocation to be given back, and a parse thread gone idle kept
    them: no decay but 0 held the peak down (qa-load on moto: 460 MB; 20 or 100 ms with the
    arenas: ~580-600 MB), and 0 faults every page in again at each reuse (~1.4 s more CPU of
    ~10). One shared arena gives back what any thread freed as the load goes on: ~470-500 MB
    with the CPU of the timed decay (benchmarks/README.md, "The allocator's decay"). Dev keeps
    Arrow's default.

    Arrow's jemalloc reads its settings from the environment once, when pyarrow's library
    loads: so this runs as the package is imported (edxorg_s3_ingest/__init__.py), before any
    of its processes imports pyarrow; a user's value wins."""
    if environment != "dev":
        os.environ.setdefault(JEMALLOC_SETTINGS, RELEASE_SOON)
        # The same for glibc's allocator (Python's objects, boto3's buffers): one arena rather
        # than workers.py's two, read as each child process starts (the fork server, a parse
        # helper, Dagster's step server): qa-load, 3 tables, peak 573-585 -> 554-557 MB, the
        # same wall time.
        os.environ.setdefault("MALLOC_ARENA_MAX", "1")


@functools.cache
def use_lean_memory_pool() -> None:
    """Arrow allocates from jemalloc rather than its default mimalloc, where there is one.

    The load's buffers are short-lived and move between threads (parsed on pyarrow's threads,
    decoded on the read thread, written on the writer's): mimalloc kept more of them for the same
    CPU (courseware_studentmodule of benchmarks/data/medium: peak RSS 400 MB against 320 MB,
    with under 40 MB of live Arrow memory). Once per process; process-wide. (Arrow still sets
    mimalloc up for its own defaults: worker processes get `ARROW_DEFAULT_MEMORY_POOL=jemalloc`
    in their environment, workers.py.)"""
    import pyarrow as pa

    with suppress(NotImplementedError):  # a pyarrow built without jemalloc: its default
        pa.set_memory_pool(pa.jemalloc_memory_pool())


@functools.cache
def leave_pandas_out() -> None:
    """pandas stays unimported in a process that reads and writes rows: the loader uses Arrow
    only, but pyarrow imports pandas, where it is installed, the first time it converts any
    Python or numpy value (`pa.array`, `pa.scalar`: it checks whether the value is a pandas
    object), ~0.2 s of CPU and ~40 MB in each worker, parse helper and Dagster step process.
    A finder first on `sys.meta_path` answers "no such module" for pandas: pyarrow's check then
    says "no pandas" at once, and dlt, which looks pandas up in `sys.modules`, sees none.
    (A None entry in `sys.modules` would not do: pyarrow's compiled import takes the None for
    the module.) Where pandas was imported already, nothing changes."""
    if "pandas" not in sys.modules:
        sys.meta_path.insert(0, _NoPandas)


class _NoPandas:
    @staticmethod
    def find_spec(name: str, path=None, target=None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"{name} is left out of a loading process", name=name)
