"""Byte-level tokenizing for the TSV reader: the per-file quoting decision and record splitting.

Everything here works on raw bytes with compiled regexes, so that the loops run in C: the Python
loop turns once per buffer (pre-scan) or once per record (the rare slow path), never per byte.
The rest of a buffer that holds no quote at all skips the regex (bytes.find, memchr speed).
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

TAB, LF, QUOTE = 0x09, 0x0A, 0x22

_QUOTED = rb'"[^"]*+(?:""[^"]*+)*+"'
_FIELD = rb"(?:" + _QUOTED + rb'|[^\t\n"][^\t\n]*+)?'
# Text outside quoted fields: anything but a quote that opens a field (one after TAB or LF).
_OUTSIDE = rb'[^"]*+(?:(?<![\t\n])"[^"]*+)*+'
# As far as the quoted fields are well-formed; group 1 is the last quoted field. Possessive
# quantifiers keep the C matcher from backtracking, so this runs at about 1 GB/s.
_WELL_FORMED = re.compile(rb"(?:" + _OUTSIDE + rb"(" + _QUOTED + rb")(?=[\t\n]))*+" + _OUTSIDE)
_QUOTED_BODY = re.compile(rb'[^"]*+(?:""[^"]*+)*+')
_RECORD = re.compile(rb"(?:" + _FIELD + rb"\t)*+" + _FIELD)
_QUOTED_AT_FIELD_START = re.compile(rb"(?<![^\t])" + _QUOTED)


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
        last = buf.rfind(b"\n")
        if last >= 0:
            line += buf.count(b"\n")
            cuts.append((offset + last + 1, line))
        offset += len(buf)
    return _close(cuts, offset, line)


def _quoted_cuts(stream: BinaryIO, offset: int, block: int) -> list[tuple[int, int]] | None:
    """Cuts for a quoted reading, or None as soon as one field starting with `"` is not
    well-formed (unclosed, or its closing quote followed by something other than TAB/LF/EOF)."""
    cuts, line, in_quotes = [(offset, 2)], 2, False
    while True:
        # Outside quotes, re-read the byte before: the look-behind needs it (the header's LF
        # for the first buffer).
        back = 0 if in_quotes else 1
        stream.seek(offset - back)
        buf = stream.read(block + back)
        end = len(buf)
        if end <= back:
            break
        at_eof = end < block + back
        pos, cut = back, 0
        while pos < end:
            if in_quotes:
                pos = _QUOTED_BODY.match(buf, pos).end()
                if pos == end or (pos + 1 == end and not at_eof):
                    break  # a final quote may be the first half of `""`: read on
                if pos + 1 < end and buf[pos + 1] not in (TAB, LF):
                    return None
                in_quotes, pos = False, pos + 1
            elif buf.find(b'"', pos) < 0:
                # No quote up to the end of the buffer (a quote-free file, mostly): what the
                # regex would match, found at memchr speed.
                last = buf.rfind(b"\n", pos, end)
                cut = last + 1 if last >= 0 else cut
                pos = end
            else:
                match = _WELL_FORMED.match(buf, pos)
                last = buf.rfind(b"\n", max(match.end(1), pos), match.end())
                cut = last + 1 if last >= 0 else cut
                pos = match.end()
                if pos < end:
                    in_quotes, pos = True, pos + 1
        base, counted = offset - back, back
        if cut:
            line += buf.count(b"\n", back, cut)
            cuts.append((base + cut, line))
            counted = cut
        line += buf.count(b"\n", counted, pos)
        offset = base + pos
    return None if in_quotes else _close(cuts, offset, line)


def _close(cuts: list[tuple[int, int]], end: int, line: int) -> list[tuple[int, int]]:
    """Ends the cuts with the end of the file and the line a record there would start on."""
    if cuts[-1][0] != end:
        cuts.append((end, line))
    return cuts


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
    """TABs outside quoted fields, plus one."""
    tabs = record.count(b"\t")
    if quoted and (record[:1] == b'"' or b'\t"' in record):
        tabs -= sum(field.count(b"\t") for field in _QUOTED_AT_FIELD_START.findall(record))
    return tabs + 1
