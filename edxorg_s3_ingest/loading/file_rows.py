"""The stages of a table's load between fetching its files and writing their rows: each file
pre-scanned (its quoting), then parsed into rows with lineage (small files together).

Apart from source.py so that a parse helper process (parse_helper.py) runs exactly the same
stages on the files it is given, without importing dlt.
"""

import shutil
from collections.abc import Iterator
from contextlib import closing
from typing import NamedTuple

import pyarrow as pa

from edxorg_s3_ingest.landing.listing import LandingFile
from edxorg_s3_ingest.reading.lineage import Lineage, many_lineage
from edxorg_s3_ingest.reading.staged_files import TABLE_ROWS, Rows, row_groups
from edxorg_s3_ingest.reading.tsv import InvalidHeaderError, Reject, TsvFile, read_together

SEGMENT_BYTES = 2 << 20
"""Bytes of a large file pre-scanned and parsed at once (`TsvFile` segments)."""
TOGETHER_BYTES = 4 << 20
"""... up to this many bytes of them at once."""


class Scanned(NamedTuple):
    """A fetched file, pre-scanned: its TsvFile (None if unreadable) and its rejects so far."""

    file: LandingFile
    tsv: TsvFile | None
    rejects: list[Reject]
    folder: str | None


class FileRead(NamedTuple):
    """The end of one source file, once all its rows went before: its TsvFile (None if
    unreadable), its rejects, its rows."""

    file: LandingFile
    tsv: TsvFile | None
    rejects: list[Reject]
    rows: int = 0


def scan_files(fetched: Iterator[tuple]) -> Iterator[Scanned]:
    """Each fetched file (file, its bytes or local path, its download folder or None)
    pre-scanned (`TsvFile` reads its header and decides its quoting). Runs on the scan thread,
    ahead of the parse."""
    with closing(fetched):
        for file, source, folder in fetched:
            rejects: list[Reject] = []
            try:
                tsv = TsvFile(source, rejects.append, segment_bytes=SEGMENT_BYTES)
            except InvalidHeaderError as error:
                rejects.append(Reject(1, "invalid_header", str(error).encode()))
                tsv = None
            yield Scanned(file, tsv, rejects, folder)


def read_files(scanned: Iterator[Scanned], load_id: str, own: set[str]) -> Iterator:
    """Each scanned file's rows with lineage as tables of about TABLE_ROWS rows, then its
    FileRead. Small files in memory are read together (TOGETHER_BYTES at a time) and their
    rows go as one table per header. Runs on the read thread: no dlt calls here (dlt's context
    is the main thread's)."""
    together: list[Scanned] = []
    together_bytes = 0
    for item in scanned:
        file, tsv, rejects, folder = item
        if tsv is not None and tsv.path is None and file.url not in own:
            together.append(item)
            together_bytes += file.size
            if together_bytes >= TOGETHER_BYTES:
                yield from _read_together(together, load_id)
                together, together_bytes = [], 0
            continue
        if tsv is not None:
            lineage = Lineage(file, load_id)
            own_url = file.url if file.url in own else None
            for rows in row_groups(tsv.batches()):
                yield Rows(lineage.add(rows), own_url)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        yield FileRead(file, tsv, rejects, tsv.rows if tsv is not None else 0)
    yield from _read_together(together, load_id)


def _read_together(files: list[Scanned], load_id: str) -> Iterator:
    """Small files' rows, read together, as tables of about TABLE_ROWS rows of one header
    each, then each file's FileRead."""
    read_together([tsv for _, tsv, _, _ in files])
    by_header: dict[tuple, list[tuple[LandingFile, list[pa.RecordBatch], int]]] = {}
    for file, tsv, _, _ in files:
        batches = list(tsv.batches())  # its share of the rows read together, or its own read
        by_header.setdefault(tuple(tsv.header), []).append((file, batches, tsv.rows))
    for group in by_header.values():
        batches = [batch for _, batches, _ in group for batch in batches]
        if batches:
            rows = pa.Table.from_batches(batches)
            rows = many_lineage(rows, [(file, count) for file, _, count in group], load_id)
            for start in range(0, rows.num_rows, TABLE_ROWS):
                yield Rows(rows.slice(start, TABLE_ROWS), None)
    for file, tsv, rejects, _ in files:
        yield FileRead(file, tsv, rejects, tsv.rows)
