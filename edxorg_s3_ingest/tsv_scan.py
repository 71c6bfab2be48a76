"""Byte-level tokenizing for the TSV reader: the per-file quoting decision and record splitting.

Everything here works on raw bytes with compiled regexes, so that the loops run in C: the Python
loop turns once per buffer (pre-scan) or once per record (the rare slow path), never per byte.
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

TAB, LF, QUOTE = 0x09, 0x0A, 0x22

_QUOTED = rb'"[^"]*+(?:""[^"]*+)*+"'
_FIELD = rb"(?:" + _QUOTED + rb'|[^\t\n"][^\t\n]*+)?'
# Read with quoting and starting at any field start: complete records; fields ending in a tab;
# one record (without its LF). Possessive quantifiers keep the C matcher from backtracking.
_RECORDS = re.compile(rb"(?:(?:" + _FIELD + rb"\t)*+" + _FIELD + rb"\n)*+")
_TAB_FIELDS = re.compile(rb"(?:" + _FIELD + rb"\t)*+")
_RECORD = re.compile(rb"(?:" + _FIELD + rb"\t)*+" + _FIELD)
_QUOTED_BODY = re.compile(rb'[^"]*+(?:""[^"]*+)*+')
_UNQUOTED_REST = re.compile(rb"[^\t\n]*+")
_QUOTED_AT_FIELD_START = re.compile(rb"(?<![^\t])" + _QUOTED)

_OUT, _IN_QUOTED, _IN_UNQUOTED = range(3)


@dataclass(frozen=True)
class Scan:
    """Result of the pre-scan: the quoting decision and where the file may be cut.

    `cuts` are (byte offset, physical line) of record starts, ascending, the first being the
    first data line; consecutive cuts delimit segments that hold whole records only.
    """

    quoted: bool
    cuts: list[tuple[int, int]]


def scan(stream: BinaryIO, data_start: int, block: int) -> Scan:
    """Decides quoting (SPEC §2) and finds record starts roughly every `block` bytes."""
    cuts = _quoted_cuts(stream, data_start, block)
    if cuts is not None:
        return Scan(True, cuts)
    return Scan(False, _line_cuts(stream, data_start, block))


def _line_cuts(stream: BinaryIO, offset: int, block: int) -> list[tuple[int, int]]:
    # Unquoted: every LF ends a record.
    cuts, line = [(offset, 2)], 2
    stream.seek(offset)
    while buf := stream.read(block):
        count = buf.count(b"\n")
        last = buf.rfind(b"\n")
        if last >= 0:
            cuts.append((offset + last + 1, line + count))
        offset, line = offset + len(buf), line + count
    return cuts


def _quoted_cuts(stream: BinaryIO, offset: int, block: int) -> list[tuple[int, int]] | None:
    """Cuts for a quoted reading, or None as soon as one field starting with `"` is not
    well-formed (unclosed, or its closing quote followed by something other than TAB/LF/EOF)."""
    cuts, line, state = [(offset, 2)], 2, _OUT
    stream.seek(offset)
    while buf := stream.read(block):
        at_eof = len(buf) < block
        pos, cut, end = 0, -1, len(buf)
        while pos < end:
            if state == _IN_QUOTED:
                pos = _QUOTED_BODY.match(buf, pos).end()
                if pos == end:
                    break
                if pos + 1 == end and not at_eof:
                    break  # this quote may be the first half of a `""`: decide after reading on
                if pos + 1 < end and buf[pos + 1] not in (TAB, LF):
                    return None
                state, pos = _OUT, pos + 1
                if pos < end:
                    pos += 1
                    if buf[pos - 1] == LF:
                        cut = pos
            elif state == _IN_UNQUOTED:
                pos = _UNQUOTED_REST.match(buf, pos).end()
                if pos < end:
                    state, pos = _OUT, pos + 1
                    if buf[pos - 1] == LF:
                        cut = pos
            elif buf[pos] != QUOTE and buf.find(b'\t"', pos) < 0 and buf.find(b'\n"', pos) < 0:
                # No field in the rest of the buffer starts with a quote: every LF ends a record.
                last = buf.rfind(b"\n", pos)
                cut = last + 1 if last >= 0 else cut
                state = _OUT if buf[-1] in (TAB, LF) else _IN_UNQUOTED
                pos = end
            else:
                records_end = _RECORDS.match(buf, pos).end()
                if records_end > pos:
                    cut = records_end
                pos = _TAB_FIELDS.match(buf, records_end).end()
                if pos < end and buf[pos] == QUOTE:
                    state, pos = _IN_QUOTED, pos + 1
                elif pos < end:
                    state = _IN_UNQUOTED
        if cut > 0:
            cuts.append((offset + cut, line + buf.count(b"\n", 0, cut)))
        line += buf.count(b"\n", 0, pos)
        offset += pos
        if pos < end:
            stream.seek(offset)
    return None if state == _IN_QUOTED else cuts


def records(segment: bytes, quoted: bool) -> Iterator[bytes]:
    """The records of a segment of whole records, without their LF (slow path only)."""
    if not quoted:
        lines = segment.split(b"\n")
        if lines[-1] == b"":
            lines.pop()
        yield from lines
        return
    pos, end = 0, len(segment)
    while pos < end:
        stop = _RECORD.match(segment, pos).end()
        if stop < end and segment[stop] != LF:  # cannot happen in a file that passed the scan
            stop = segment.find(b"\n", stop)
            stop = end if stop < 0 else stop
        yield segment[pos:stop]
        pos = stop + 1


def field_count(record: bytes, quoted: bool) -> int:
    tabs = record.count(b"\t")
    if quoted and (record[:1] == b'"' or b'\t"' in record):
        tabs -= sum(field.count(b"\t") for field in _QUOTED_AT_FIELD_START.findall(record))
    return tabs + 1
