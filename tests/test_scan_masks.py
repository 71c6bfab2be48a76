"""The reader's bit-mask scans (reading/bitmasks.py) against plain readings of SPEC §2: the
quoting decision and record starts of the pre-scan (tsv_scan._paired_cuts, checked against the
regex reading it stands in for) and the escaping backslashes that escapes.mark marks (checked
against a walk over each run of backslashes). Blocks of a few bytes and runs of hundreds
put every quote, LF and run across the masks' 64-bit words and the scan's buffers."""

import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edxorg_s3_ingest.reading import escapes, tsv_scan

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HEADER = b"a\tb\n"


def record_starts(data: bytes, quoted: bool) -> set[int]:
    """Where records start, by the regex reading's record split (offsets in `data`)."""
    starts, position = {len(HEADER)}, len(HEADER)
    for record in tsv_scan.records(data[len(HEADER) :], quoted):
        position += len(record) + 1
        starts.add(min(position, len(data)))
    return starts | {len(data)}


def check_cuts(data: bytes, cuts: list[tuple[int, int]], quoted: bool) -> None:
    starts = record_starts(data, quoted)
    offsets = [offset for offset, _ in cuts]
    assert offsets == sorted(set(offsets)) and offsets[-1] == len(data)
    for offset, line in cuts:
        assert offset in starts
        assert line == 2 + data.count(b"\n", len(HEADER), offset)


_FIELD = st.one_of(
    st.binary(max_size=6).map(lambda raw: raw.replace(b'"', b"x").replace(b"\t", b"y")),
    st.lists(st.sampled_from([b"a", b"\t", b"\n", b'""', b"\\", b"\r"]), max_size=40).map(
        lambda parts: b'"' + b"".join(parts) + b'"'
    ),
).filter(lambda field: not field.startswith(b'"') or field.endswith(b'"'))
_WELL_FORMED = st.lists(
    st.tuples(
        _FIELD.filter(lambda field: b"\n" not in field or field.startswith(b'"')),
        st.sampled_from([b"\t", b"\n"]),
    ),
    max_size=30,
).map(lambda fields: b"".join(field + end for field, end in fields))
_ANY = st.lists(st.sampled_from([b"a", b"\t", b"\n", b'"', b'""', b"\r", b"\\"]), max_size=80).map(
    b"".join
)


@SETTINGS
@given(body=_WELL_FORMED, block=st.integers(2, 70), cut_end=st.booleans())
def test_files_whose_quotes_all_pair_up_are_scanned_by_masks(body, block, cut_end):
    """Every quote opens, closes or doubles: the mask scan decides (quoted), with record
    starts only, each on its line, whatever the blocks."""
    body = body[:-1] if cut_end and body else body  # the last record without its LF
    data = HEADER + body
    cuts = tsv_scan._paired_cuts(io.BytesIO(data), len(HEADER), block)
    assert cuts is not None
    assert tsv_scan._quoted_cuts(io.BytesIO(data), len(HEADER), block) is not None
    check_cuts(data, cuts, quoted=True)


@SETTINGS
@given(body=st.one_of(_ANY, _WELL_FORMED), block=st.integers(2, 70), at=st.integers(0, 200))
def test_the_mask_scan_never_decides_otherwise_than_the_regex(body, block, at):
    """On anything (a quote in an unquoted field, an unclosed or malformed quoted field, a
    stray quote inserted anywhere) the mask scan declines or agrees with the regex reading."""
    at = min(at, len(body))
    for data in (HEADER + body, HEADER + body[:at] + b'"' + body[at:]):
        paired = tsv_scan._paired_cuts(io.BytesIO(data), len(HEADER), block)
        regex = tsv_scan._quoted_cuts(io.BytesIO(data), len(HEADER), block)
        if paired is not None:
            assert regex is not None
            check_cuts(data, paired, quoted=True)
        scanned = tsv_scan.scan(io.BytesIO(data), len(HEADER), block)
        assert scanned.quoted == (regex is not None)
        check_cuts(data, scanned.cuts, scanned.quoted)


@pytest.mark.parametrize(
    ("body", "block", "paired", "quoted"),
    [
        (b'1\t"x"\n2\t"y"y\n', 4, False, False),  # a closing quote followed by a letter
        (b'1\t"x"\n22\t"y"y\n', 4, False, False),  # ... that starts the next block
        (b'1\t"ab"\nx\t"', 6, False, False),  # unclosed at the end
        (b'1\t5\'10"\n2\t"q"\n', 4, False, True),  # a quote inside an unquoted field
        (b'1\t"a""b"\n2\t"c\nd"\n', 4, True, True),  # `""` and an LF across blocks
        (b'1\t"ab"\n2\t"cd"\n', 5, True, True),  # a closing quote ends a block
        (b'"x"\t"y"\n', 64, True, True),  # a quote opens the first field of the file
    ],
)
def test_mask_scan_edges(body, block, paired, quoted):
    data = HEADER + body
    assert (tsv_scan._paired_cuts(io.BytesIO(data), len(HEADER), block) is not None) == paired
    assert tsv_scan.scan(io.BytesIO(data), len(HEADER), block).quoted == quoted


def marked_by_runs(data: bytes) -> bytes:
    """escapes.mark's contract, walked run by run: in a run of backslashes the pairs stay; an
    odd run's last backslash escapes the next byte: a t, n or r becomes its stand-in, anything
    else (or nothing) turns that backslash into the lone stand-in. Raw CRs get theirs."""
    stand_in = {ord("t"): 0xFD, ord("n"): 0xFC, ord("r"): 0xFB}
    out, position = bytearray(data), 0
    while position < len(data):
        if data[position] != 0x5C:
            if data[position] == 0x0D:
                out[position] = 0xFF
            position += 1
            continue
        end = position
        while end < len(data) and data[end] == 0x5C:
            end += 1
        if (end - position) % 2:
            following = data[end] if end < len(data) else None
            if following in stand_in:
                out[end] = stand_in[following]
                end += 1
            else:
                out[end - 1] = 0xFA
        position = end
    return bytes(out)


_RUNS = st.lists(
    st.one_of(
        st.sampled_from([b"t", b"n", b"r", b"x", b"\r", b'"', b"\n"]),
        st.integers(1, 300).map(lambda length: b"\\" * length),  # across one or more words
    ),
    max_size=40,
).map(b"".join)


@SETTINGS
@given(data=_RUNS)
def test_marking_finds_every_odd_run_of_backslashes(data):
    if not data:
        return
    assert bytes(escapes.mark(data, True, True)) == marked_by_runs(data)
    marked = bytearray(data)
    escapes.mark(marked, True, True)
    escapes.restore(marked)
    assert bytes(marked) == data
