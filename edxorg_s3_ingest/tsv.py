"""Reads one landing-zone TSV file (SPEC §2 dialect) as Arrow record batches.

First version: correct for the sample landing zone, whole file in memory. The streaming,
full-dialect reader replaces it (issue 3) behind the same interface.
"""

import csv
import io
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyarrow as pa

SOURCE_LINE = "_source_line"
_HEADER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ESCAPE = re.compile(r"\\([\\tnr])")
_UNESCAPED = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}


@dataclass(frozen=True)
class Reject:
    """A physical line that could not be loaded as a row, or was loaded altered."""

    line: int | None
    """Physical line where the row starts (header = 1); None when the whole file is meant."""
    reason: str
    raw_line: bytes


class InvalidHeaderError(ValueError):
    """The first line is not a header of column names: the file is not loaded."""


def decode_escapes(value: str) -> str:
    """Undoes the edX export escapes; any other backslash sequence stays as written."""
    if "\\" not in value:
        return value
    return _ESCAPE.sub(lambda match: _UNESCAPED[match.group(1)], value)


class TsvFile:
    """One landing-zone file: its header, and its rows as Arrow record batches.

    Every column is a string; `NULL` is null; `_source_line` is the physical line (header = 1)
    where the row starts. Lines that cannot be rows go to `on_reject`, never into a batch.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        on_reject: Callable[[Reject], None],
        batch_rows: int = 65_536,
    ) -> None:
        self.path = os.fspath(path)
        self.on_reject = on_reject
        self.batch_rows = batch_rows
        with open(self.path, "rb") as stream:
            first = stream.readline()
        header = first.rstrip(b"\n").decode("utf-8", errors="replace").split("\t")
        bad = [name for name in header if not _HEADER_NAME.match(name)]
        if bad or len(set(header)) != len(header):
            raise InvalidHeaderError(
                f"line 1 is not a header of column names (e.g. {(bad or header)[0][:60]!r})"
            )
        self.header = header
        self.quoted = True

    def batches(self) -> Iterator[pa.RecordBatch]:
        with open(self.path, "rb") as stream:
            data = stream.read()
        text = data.decode("utf-8", errors="replace")
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", strict=False)
        next(reader)
        width = len(self.header)
        columns: list[list[str | None]] = [[] for _ in range(width)]
        lines: list[int] = []
        line = 2
        for row in reader:
            start = line
            line = reader.line_num + 1
            if len(row) != width:
                self.on_reject(Reject(start, "ragged_line", "\t".join(row).encode()))
                continue
            for column, value in zip(columns, row, strict=True):
                column.append(None if value == "NULL" else decode_escapes(value))
            lines.append(start)
            if len(lines) >= self.batch_rows:
                yield self._batch(columns, lines)
                columns = [[] for _ in range(width)]
                lines = []
        if lines:
            yield self._batch(columns, lines)

    def _batch(self, columns: list[list[str | None]], lines: list[int]) -> pa.RecordBatch:
        arrays = [pa.array(values, pa.string()) for values in columns]
        arrays.append(pa.array(lines, pa.int64()))
        return pa.RecordBatch.from_arrays(arrays, names=[*self.header, SOURCE_LINE])
