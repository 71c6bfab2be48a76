"""Python's cyclic garbage collector in the processes of a Dagster run, where a run pays for
collections that find nothing to free.

A process that loads the code location holds some 1.5 million objects that live as long as it
does: dagster's, dlt's and pyarrow's modules, and the definitions. Every full collection
traverses all of them, and so does the last one, as the interpreter exits: ~0.3 s of CPU in a
process that only built the definitions, ~0.7 s in the process of a run, after its run ended.
"""

import atexit
import functools
import gc
from collections.abc import Iterator
from contextlib import contextmanager


@functools.cache
def no_collection_at_exit() -> None:
    """At exit, once every `atexit` function registered later has run (the run's storage
    closed, logs flushed), moves every object out of the collector's reach, so that the
    interpreter's final collection has nothing to traverse: the process's memory goes back to
    the system with it, and objects in reference cycles, left uncollected, hold nothing that
    a process ending needs to close. Registered once, however often it is called."""
    atexit.register(gc.freeze)


def keep_for_good() -> None:
    """Moves every object alive now out of the collector's reach, for objects that live as long
    as the process (modules, the definitions), and resumes collections, which then traverse only
    what is allocated afterwards. In a fork server, before it forks: the children share those
    objects' pages with it instead of copying them as a collection writes to them."""
    gc.freeze()
    gc.enable()


@contextmanager
def paused() -> Iterator[None]:
    """Around what builds objects that live as long as the process (the code location's imports
    and definitions): no collection meanwhile (they would traverse ever more objects to free
    next to nothing: ~3% of them are garbage, ~1 MB), then keep_for_good."""
    gc.disable()
    try:
        yield
    finally:
        keep_for_good()
