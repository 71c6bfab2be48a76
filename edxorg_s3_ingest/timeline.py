"""Benchmark-only timestamps of a run's milestones (benchmarks/fixed_cost.py reads them).

`EDXORG_S3_INGEST_TIMELINE=<file>` makes `mark("<event>")` append `<unix time> <pid> <event>`
to that file, from any process of the run (the CLI's and its workers'; one small O_APPEND write
each, so lines never interleave). Unset, `mark` is one comparison. With
`EDXORG_S3_INGEST_TIMELINE_CPU` set too, each line ends in ` cpu=<seconds>`: the CPU time of
the marking process so far (a forked process's counts from its fork).
"""

import os
import time

TIMELINE_ENV = "EDXORG_S3_INGEST_TIMELINE"
_PATH = os.environ.get(TIMELINE_ENV)
CPU_ENV = "EDXORG_S3_INGEST_TIMELINE_CPU"
_CPU = bool(os.environ.get(CPU_ENV))


def mark(event: str) -> None:
    """Records that the run reached `event` now, if a benchmark asked."""
    if not _PATH:
        return
    cpu = f" cpu={time.process_time():.4f}" if _CPU else ""
    line = f"{time.time():.6f} {os.getpid()} {event}{cpu}\n".encode()
    descriptor = os.open(_PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, line)
    finally:
        os.close(descriptor)
