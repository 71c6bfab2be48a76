"""Byte-level tokenizing for the TSV reader: the per-file quoting decision and record splitting.

Everything here works on raw bytes in C, so that the Python loop turns once per buffer
(pre-scan) or once per record (the rare slow path), never per byte. The pre-scan first tries bit
masks (bitmasks.py: a few numpy passes per buffer), which settle the files whose every quote
opens, closes or doubles; any other file (a quote inside an unquoted field, a malformed quoted
field) is decided by compiled regexes, whose matcher steps through every quote (on the quoted
studentmodule exports of benchmarks' `medium`, 1.2 GB: 1.85 s of CPU against 0.77 s). The rest
of a buffer that holds no quote at all skips the regex (bytes.find, memchr speed).
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from edxorg_s3_ingest.reading import bitmasks

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
    cuts = _paired_cuts(stream, data_start, block)
    if cuts is None:
        cuts = _quoted_cuts(stream, data_start, block)
    if cuts is not None:
        return Scan(True, cuts)
    return Scan(False, _line_cuts(stream, data_start, block))


def _paired_cuts(stream: BinaryIO, offset: int, block: int) -> list[tuple[int, int]] | None:
    """Cuts for a quoted reading of a file in which every quote opens or closes a quoted field
    (or is half of a `""`), or None when the file is not shown to be so (a quote inside an
    unquoted field, a malformed or unclosed quoted field): `_quoted_cuts` then decides.

    Then quotes alternate: quote k (from 0) opens a field when k is even, closes one when odd,
    a `""` being a close and a re-open with nothing between. Checked with bit masks: an opening
    quote must follow TAB, LF or a quote (the header's LF before the first byte), a closing
    one be followed by TAB, LF, a quote or the end of the file. When both hold everywhere
    and the quotes are even in number, the file is well-formed (each quote does what the
    regex reading would make of it, by induction over the quotes), and a record ends at each
    LF with an even number of quotes before it."""
    cuts, line = [(offset, 2)], 2
    inside, before = False, True  # the header's LF
    lfs, hits = bitmasks.scratch(block), bitmasks.scratch(block)
    stream.seek(offset)
    buffer = stream.read(block)
    while buffer:
        following = stream.read(block)
        values = np.frombuffer(buffer, np.uint8)
        is_lf = bitmasks.compared(values, LF, lfs)
        quotes = bitmasks.mask(values, QUOTE, hits)
        last = None
        if quotes.any():
            tabs = bitmasks.compared(values, TAB, hits)
            bounds = bitmasks.of(np.bitwise_or(tabs, is_lf, out=tabs)) | quotes
            if not following or following[0] in (TAB, LF, QUOTE):
                bitmasks.set_bit(bounds, len(buffer))
            fields = bitmasks.parity(quotes, inside)  # inside a quoted field after each byte
            opening, closing = quotes & fields, quotes & ~fields
            if (opening & ~bitmasks.shifted_up(bounds, before)).any():
                return None
            if (closing & ~bitmasks.shifted_down(bounds)).any():
                return None
            inside = bitmasks.bit(fields, len(buffer) - 1)
            last = _last_record_end(buffer, is_lf, fields)
        elif not inside:  # no quote: the state before the buffer holds throughout
            last = buffer.rfind(b"\n")
            last = None if last < 0 else last
        lines = int(np.count_nonzero(is_lf))
        if last is not None:
            cuts.append((offset + last + 1, line + lines - buffer.count(b"\n", last + 1)))
        line += lines
        offset += len(buffer)
        before = buffer[-1] in (TAB, LF, QUOTE)
        buffer = following
    return None if inside else _close(cuts, offset, line)


def _last_record_end(buffer: bytes, is_lf: np.ndarray, fields: np.ndarray) -> int | None:
    """The position of the buffer's last LF outside quoted fields, if any: mostly its last LF,
    else (a record with LFs in a quoted field at its end) one found in the masks."""
    last = len(buffer)
    for _ in range(4):
        last = buffer.rfind(b"\n", 0, last)
        if last < 0:
            return None
        if not bitmasks.bit(fields, last):
            return last
    return bitmasks.last(bitmasks.of(is_lf) & ~fields)


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
