"""Worker processes: the CLI's tables loaded several at once (runner.load_tables).

Tables are independent (own dlt pipeline, state and lock), so the workers share nothing but the
landing zone and the store. Each worker loads one table at a time (table_load.load_table) and sends
its progress, its log records and each table's report to the CLI process, which shows them. A
table that fails, and a worker process that dies (killed, crashed), fail only their own table:
the others load, and the run's report says what happened.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from contextlib import suppress
from multiprocessing.connection import wait
from typing import TYPE_CHECKING

from edxorg_s3_ingest.landing.aws import s3_retry_note
from edxorg_s3_ingest.loading.spare_cores import use_spare_cores
from edxorg_s3_ingest.loading.table_load import TableLoad, describe, load_table
from edxorg_s3_ingest.report import TableReport
from edxorg_s3_ingest.running.fork_server import open_gate, server_preload, stop_fork_server
from edxorg_s3_ingest.timeline import mark

if TYPE_CHECKING:
    from edxorg_s3_ingest.settings import Settings

PROGRESS_INTERVAL = 0.25
"""Seconds between two progress messages of a worker (at most 4 a second, only on change)."""
WORKER_START_METHOD = "forkserver"
"""How worker processes start (see `_worker_context`)."""


def load_in_workers(
    tables: list[str],
    settings: Settings,
    full_refresh: bool,
    workers: int,
    on_start: Callable[[TableReport], None] | None,
    on_done: Callable[[TableReport], None] | None,
    on_log: Callable[[logging.LogRecord], None] | None,
    sizes: dict[str, int] | None = None,
) -> dict[str, TableReport]:
    """The tables in `workers` worker processes, largest tables first (by `sizes`, the bytes
    each table's load reads, when the caller listed them; else `_largest_first`); each worker
    loads one table at a time, asked by this process, and is asked for the next one when it
    reports.

    Supervised here rather than by a `ProcessPoolExecutor`: when a worker dies (SIGKILL from
    the kernel's out-of-memory killer or a user, a crash in native code), this process knows
    which table it was loading and how it ended (its exit status), fails that table alone and
    starts a new worker for the tables left. A broken `ProcessPoolExecutor` fails every table
    in flight with the same `BrokenProcessPool` and terminates the other workers mid-load.
    Workers live for the whole run rather than one per table: each new process pays dlt's
    set-up (runtime, plugins, configuration) again, ~0.1 s of CPU, more than a table with
    nothing new costs.
    """
    context = _worker_context(settings.environment)
    waiting = load_order(tables, settings, sizes) if len(tables) > workers else list(tables)
    pool: list[_Worker] = []
    # A core whose worker ended with nothing left to load: a load still under way may take it
    # for a parse helper process (loading/parse_helper.py). The only reference: dropped before
    # stop_fork_server ends the resource tracker, so that the semaphore is unlinked first.
    spare: list = [context.Semaphore(0)]
    reports: dict[str, TableReport] = {}

    def finished(report: TableReport) -> None:
        reports[report.table] = report
        if on_done:
            on_done(report)

    try:
        while waiting or any(worker.table for worker in pool):
            while waiting and len(pool) < workers:
                pool.append(_Worker(context, settings, full_refresh, spare[0]))
            for worker in list(pool):
                if worker.table is not None or not worker.alive:
                    continue
                if not waiting:  # nothing left for it: its memory and its core go back now
                    worker.stop()
                    pool.remove(worker)
                    spare[0].release()
                    continue
                table = waiting.pop(0)
                if not worker.load(table):
                    waiting.insert(0, table)  # that worker has just died: another takes it
                elif on_start:
                    on_start(worker.report)
            ready = wait([handle for worker in pool for handle in worker.handles()])
            for worker in list(pool):
                for report in worker.receive(ready, on_log or _log_here):
                    finished(report)
                if not worker.alive:
                    pool.remove(worker)
                    if worker.table:
                        finished(worker.died())
    finally:
        for worker in pool:
            worker.stop()
        spare.clear()
        stop_fork_server()
    return reports


def start_fork_server(environment: str) -> None:
    """Starts the fork server (fork_server.server_preload imported there) without waiting for
    it, before the first worker is asked for: its imports overlap what this process does
    meanwhile. A server the CLI forked, parked, is let go on instead (fork_server.open_gate)."""
    from multiprocessing import forkserver

    _worker_context(environment)
    forkserver.ensure_running()


def _worker_context(environment: str):
    """The fork server start method, with the loading code preloaded in the server.

    - fork would be cheapest (a worker inherits every imported module) but forks this process
      while it has threads (the live progress display, and whatever dlt, boto3 or pyarrow
      started): a lock one of them holds at that instant, say the one of stderr or of logging,
      stays held forever in the child. macOS system libraries are not fork-safe either, which
      is why Python defaults to spawn there (and will default to forkserver on Linux).
    - spawn starts each worker as a new interpreter that imports dlt, pyarrow, boto3 and the
      loader again: ~0.7 s of CPU per worker.
    - forkserver starts one clean, single-threaded server process that imports the loading code
      once (fork_server.server_preload) and forks the workers from it: as safe as spawn, one
      import for all workers, on another core than this process.

    Measured, a run with nothing new over 3 tables of 3,333 files each, 2 workers, 2 busy cores:
    fork 2.1-2.2 s of CPU (1.5-2.1 s wall), forkserver 2.5-2.7 s (1.8-2.6 s), spawn 3.2-3.6 s
    (2.3-3.3 s). What forkserver costs over fork, ~0.5 s of CPU once per run, is the server's
    imports (this process imports dlt and boto3 too): the price of workers that cannot inherit a
    held lock, whatever threads this process or its libraries start.
    """
    context = multiprocessing.get_context(WORKER_START_METHOD)
    context.set_forkserver_preload(server_preload(environment))
    open_gate()  # a server the CLI forked, parked (cli.start_workers_early), starts its imports
    return context


def load_order(
    tables: list[str], settings: Settings, sizes: dict[str, int] | None = None
) -> list[str]:
    """The order tables are handed to workers: largest load first, so that the longest load
    starts first instead of last (LPT scheduling: with the big tables under way, the small ones
    fill the other workers). By `sizes`, the bytes each table's load reads (the CLI's dev runs
    list every table before loading, runner._unchanged_tables); else by the bytes of each
    course's current file in the table's state (in its store): a table's size is a good guess
    of what a run of it reads (a re-export is about the size of the file it replaces), and a
    table never loaded (no state) comes last. Ties keep the requested order."""
    if sizes is not None:
        return sorted(tables, key=lambda table: -sizes.get(table, -1))

    def size(table: str) -> int:
        try:
            state = TableLoad(table, settings).stored().state
            return sum(int(version[2]) for version in state["courses"].values())
        except Exception:  # noqa: BLE001 - no state, or none readable: last; its load says why
            return -1

    sizes = {table: size(table) for table in tables}
    return sorted(tables, key=lambda table: -sizes[table])


class _Worker:
    """A worker process, as this process sees it: the table it is loading, if any."""

    def __init__(self, context, settings: Settings, full_refresh: bool, spare_cores) -> None:
        self.channel, theirs = context.Pipe()
        self.process = context.Process(
            target=_serve,
            args=(settings, full_refresh, theirs, spare_cores),
            name="edxorg-s3-ingest worker",
        )
        self.process.start()
        theirs.close()  # the worker's end: the channel ends when the worker does
        self.table: str | None = None
        self.report: TableReport | None = None
        """This process's copy of the table's report, updated from the worker's progress."""
        self.alive = True
        self.open = True

    def load(self, table: str) -> bool:
        try:
            self.channel.send(table)
        except OSError:
            return False
        self.table = table
        self.report = TableReport(table)
        self.report.start()
        return True

    def handles(self) -> list:
        return [self.channel, self.process.sentinel] if self.open else [self.process.sentinel]

    def receive(
        self, ready: list, on_log: Callable[[logging.LogRecord], None]
    ) -> list[TableReport]:
        """The reports of the tables the worker finished; reads all it sent."""
        if self.process.sentinel in ready:
            self.alive = False  # what it sent before it ended is in the pipe: read it all
        finished = []
        if self.open and (self.channel in ready or not self.alive):
            try:
                while self.channel.poll():
                    kind, payload = self.channel.recv()
                    if kind == "progress" and self.report:
                        self.report.update(payload)
                    elif kind == "log":
                        on_log(payload)
                    elif kind == "done":
                        finished.append(payload)
                        self.table = self.report = None
            except Exception:  # noqa: BLE001 - the end of the channel, or a message cut short
                self.open = False
                self.channel.close()
        return finished

    def died(self) -> TableReport:
        """The report of the table the worker was loading when its process ended."""
        self.process.join()
        code = self.process.exitcode
        if code is not None and code < 0:
            how = f"was killed by {_signal_name(-code)}"
            if -code == signal.SIGKILL:
                how += " (by a user, or by the kernel when memory ran out)"
        else:
            how = f"exited with status {code}"
        report = self.report or TableReport(str(self.table))
        report.finish(
            "failed",
            error=f"WorkerDied: the worker process loading {self.table} (pid {self.process.pid}) "
            f"{how} before it reported; the table is as that process left it, and the next run "
            "completes or redoes its load",
        )
        return report

    def stop(self) -> None:
        """Asks an idle worker to end; ends a busy one (this process is being interrupted)."""
        if self.table is None and self.open:
            with suppress(OSError):
                self.channel.send(None)
        elif self.process.is_alive():
            self.process.terminate()
        if self.open:
            # Before waiting: a worker inside a dlt run may outlive SIGTERM (dlt defers it to a
            # safe point and the load goes on); with its channel closed it then ends after its
            # table instead of waiting for another one.
            self.channel.close()
            self.open = False
        self.process.join()


def _signal_name(number: int) -> str:
    try:
        return f"{signal.Signals(number).name} (signal {number})"
    except ValueError:
        return f"signal {number}"


def _log_here(record: logging.LogRecord) -> None:
    logging.getLogger(record.name).handle(record)


def _serve(settings: Settings, full_refresh: bool, channel, spare_cores=None) -> None:
    """The body of a worker process: loads the tables it is sent, one at a time, until it is
    sent None. For each, sends its progress (every PROGRESS_INTERVAL, when it changed), its log
    records and, last, its report. A load may take one of `spare_cores` for a parse helper."""
    use_spare_cores(spare_cores)
    # stdout is the CLI's (`--json` prints the run report there): nothing of a worker lands on
    # it. stderr stays the CLI's stderr, where dlt's own logger writes.
    os.dup2(2, 1)
    # Ctrl-C on a terminal reaches every process of the CLI: the CLI ends the workers (SIGTERM,
    # as a kill it is completed by the next run) rather than each printing its traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sending = threading.Lock()

    def send(kind: str, payload) -> None:
        with sending:  # the progress thread and any logging thread send too
            channel.send((kind, payload))

    logging.getLogger().addHandler(_Forward(send))
    with suppress(EOFError, OSError):  # the CLI has gone (after the table it had asked for)
        while (table := channel.recv()) is not None:
            mark(f"worker {table}")
            send("done", _load_sampled(table, settings, full_refresh, send))
    channel.close()


def _load_sampled(table: str, settings: Settings, full_refresh: bool, send) -> TableReport:
    """`load_table`, with a thread that sends the report's progress while it runs."""
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def sample(report: TableReport) -> None:
        last = None
        while not stop.wait(PROGRESS_INTERVAL):
            report._s3_note = s3_retry_note()  # the CLI's live line shows this worker's wait
            progress = report.progress()
            if progress != last:
                try:
                    send("progress", progress)
                except OSError:  # the CLI has gone; the load goes on
                    return
                last = progress

    def started(report: TableReport) -> None:
        threads.append(threading.Thread(target=sample, args=(report,), daemon=True))
        threads[-1].start()

    try:
        return load_table(table, settings, full_refresh, on_start=started)
    except Exception as error:  # noqa: BLE001 - load_table reports its failures itself
        report = TableReport(table)
        report.finish("failed", error=describe(error))
        return report
    finally:
        stop.set()
        for thread in threads:
            thread.join()


class _Forward(logging.Handler):
    """Sends a worker's log records to the CLI process, which shows them where its own go.
    The message is formatted here (with any traceback) and masked like every error text."""

    def __init__(self, send: Callable) -> None:
        super().__init__()
        self.send = send

    def emit(self, record: logging.LogRecord) -> None:
        from edxorg_s3_ingest.landing.aws import redact

        try:
            fields = {**record.__dict__, "msg": redact(self.format(record)), "args": None}
            fields.update(exc_info=None, exc_text=None, stack_info=None)
            self.send("log", logging.makeLogRecord(fields))
        except Exception:  # noqa: BLE001 - logging must never fail the load
            self.handleError(record)
