"""Property tests of the TSV reader against its contract (SPEC §2, §4, §6).

Round trips compare with the values written. Corrupted files compare with `reference`, a
deliberately naive byte-by-byte reading of SPEC §2 written for these tests only.
"""

import csv
import io
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edxorg_s3_ingest.reading.tsv import (
    SOURCE_LINE,
    InvalidHeaderError,
    Reject,
    TsvFile,
    decode_escapes,
)

# TSV_PROPERTY_EXAMPLES=5000 for a deeper run than CI's.
SETTINGS = settings(
    max_examples=int(os.environ.get("TSV_PROPERTY_EXAMPLES", "120")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TAB, LF, QUOTE = 0x09, 0x0A, 0x22

# Characters that stress the dialect, plus some plain and non-ASCII text.
_ALPHABET = st.sampled_from(list('\t\n\r"\\NUL tnrx,é€😀\u2028\ue000'))
_TEXT = st.one_of(
    st.text(_ALPHABET, max_size=12),
    st.text(max_size=6),
    st.builds(
        lambda text, times: text * times, st.text(_ALPHABET, max_size=3), st.integers(0, 3000)
    ),
).filter(lambda value: value != "NULL")
# Small segments and parse blocks exercise the pre-scan's buffer edges and pyarrow retries.
_SEGMENT = st.sampled_from([2, 3, 5, 16, 64, 1 << 20])


def _escape(value: str, raw_controls: bool) -> str:
    """edX export escaping; with raw_controls, TAB/LF/CR stay raw and the writer quotes them."""
    value = value.replace("\\", "\\\\")
    if raw_controls:
        return value
    return value.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


@st.composite
def tables(draw, quote_free: bool = False):
    width = draw(st.integers(1, 5))
    text = _TEXT.filter(lambda value: '"' not in value) if quote_free else _TEXT
    value = st.one_of(st.none(), text)
    rows = draw(st.lists(st.lists(value, min_size=width, max_size=width), max_size=12))
    return [f"c{index}" for index in range(width)], rows


def _write_quoted(header, rows, raw_controls) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    writer.writerow(header)
    for row, raw in zip(rows, raw_controls, strict=True):
        writer.writerow(["NULL" if value is None else _escape(value, raw) for value in row])
    return out.getvalue().encode()


def _write_unquoted(header, rows) -> bytes:
    lines = ["\t".join(header)]
    lines += ["\t".join("NULL" if v is None else _escape(v, False) for v in row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def _read(path: Path, data: bytes, segment: int = 1 << 20, block: int = 1 << 20):
    path.write_bytes(data)
    rejects: list[Reject] = []
    reader = TsvFile(path, rejects.append, segment_bytes=segment, parse_block_bytes=block)
    batches = list(reader.batches())
    for batch in batches:
        assert batch.schema.names == [*reader.header, SOURCE_LINE]
    return reader, [row for batch in batches for row in batch.to_pylist()], rejects


def reference(data: bytes):
    """SPEC §2 read naively: (quoted, rows as dicts, rejects)."""
    header_line, _, body = data.partition(b"\n")
    header = header_line.decode().split("\t")
    records = _records(body, True)
    quoted = records is not None
    records = records if quoted else _records(body, False)
    rows, rejects = [], []
    for line, raw, fields in records:
        if len(fields) != len(header):
            rejects.append(Reject(line, "ragged_line", raw))
            continue
        try:
            raw.decode()
        except UnicodeDecodeError:
            rejects.append(Reject(line, "invalid_utf8", raw))
        row = {
            name: None
            if (text == b"NULL" and not was_quoted)
            else decode_escapes(text.decode("utf-8", "replace"))
            for name, (text, was_quoted) in zip(header, fields, strict=True)
        }
        rows.append({**row, SOURCE_LINE: line})
    return quoted, rows, rejects


def _records(body: bytes, quoted: bool):
    """[(line, raw, [(text, was_quoted)])], or None when quoting is asked for but a field that
    starts with a quote is not well-formed."""
    records, i, line = [], 0, 2
    while i < len(body):
        start, fields = i, []
        while True:
            if quoted and body[i : i + 1] == b'"':
                text, i = bytearray(), i + 1
                while True:
                    if i >= len(body):
                        return None  # unclosed
                    if body[i] == QUOTE and body[i + 1 : i + 2] == b'"':
                        text, i = text + b'"', i + 2
                    elif body[i] == QUOTE:
                        i += 1
                        break
                    else:
                        text, i = text + body[i : i + 1], i + 1
                if i < len(body) and body[i] not in (TAB, LF):
                    return None  # closing quote followed by something else
                fields.append((bytes(text), True))
            else:
                end = i
                while end < len(body) and body[end] not in (TAB, LF):
                    end += 1
                fields.append((body[i:end], False))
                i = end
            if i < len(body) and body[i] == TAB:
                i += 1
                continue
            break
        raw = body[start:i]
        records.append((line, raw, fields))
        line += 1 + raw.count(b"\n")
        i += 1
    return records


@SETTINGS
@given(
    table=tables(),
    modes=st.lists(st.booleans(), min_size=12, max_size=12),
    segment=_SEGMENT,
    block=st.sampled_from([1, 7, 1 << 20]),
)
def test_quoted_round_trip(tmp_path, table, modes, segment, block):
    header, rows = table
    data = _write_quoted(header, rows, modes[: len(rows)])
    reader, loaded, rejects = _read(tmp_path / "t.tsv", data, segment, block)
    assert reader.header == header
    assert reader.quoted
    assert rejects == []
    assert [[row[name] for name in header] for row in loaded] == rows
    # Raw LFs inside quoted fields push later rows down.
    expected_lines, line = [], 2
    for row, raw in zip(rows, modes, strict=False):
        expected_lines.append(line)
        line += 1 + (sum((v or "").count("\n") for v in row) if raw else 0)
    assert [row[SOURCE_LINE] for row in loaded] == expected_lines


@SETTINGS
@given(table=tables(), segment=_SEGMENT)
def test_unquoted_round_trip(tmp_path, table, segment):
    """An old unquoted export: `"` is text. The first field opens with a malformed quoted
    field, so the file must be read unquoted whatever the other quotes look like."""
    header, rows = table
    rows = [['"x"y', *([""] * (len(header) - 1))], *rows]
    reader, loaded, rejects = _read(tmp_path / "t.tsv", _write_unquoted(header, rows), segment)
    assert not reader.quoted
    assert rejects == []
    assert [[row[name] for name in header] for row in loaded] == rows
    assert [row[SOURCE_LINE] for row in loaded] == list(range(2, 2 + len(rows)))


_DAMAGE = st.lists(
    st.tuples(
        st.sampled_from(["delete", "tab", "lf", "quote", "bad_bytes"]),
        st.floats(0, 1),
        st.integers(1, 4),
    ),
    min_size=1,
    max_size=4,
)


def _damage(data: bytes, damage, start: int) -> bytes:
    for kind, where, size in damage:
        at = start + int(where * (len(data) - start))
        insert = {
            "tab": b"\t",
            "lf": b"\n",
            "quote": b'"',
            "bad_bytes": [b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80"][size - 1],
        }.get(kind)
        data = data[:at] + insert + data[at:] if insert else data[:at] + data[at + size :]
    return data


@SETTINGS
@given(
    table=tables(),
    quoted_writer=st.booleans(),
    modes=st.lists(st.booleans(), min_size=12, max_size=12),
    damage=_DAMAGE,
    segment=_SEGMENT,
)
def test_damaged_body_matches_reference(tmp_path, table, quoted_writer, modes, damage, segment):
    header, rows = table
    if quoted_writer:
        data = _write_quoted(header, rows, modes[: len(rows)])
    else:
        data = _write_unquoted(header, rows)
    data = _damage(data, damage, data.index(b"\n") + 1)
    reader, loaded, rejects = _read(tmp_path / "t.tsv", data, segment)
    quoted, expected_rows, expected_rejects = reference(data)
    assert reader.quoted == quoted
    assert loaded == expected_rows
    assert rejects == expected_rejects
    assert reader.rows + reader.rejected["ragged_line"] == len(
        _records(data.partition(b"\n")[2], quoted) or []
    )


@SETTINGS
@given(
    table=tables(quote_free=True), damage=_DAMAGE.map(lambda damage: damage[:1]), segment=_SEGMENT
)
def test_damage_never_shifts_columns(tmp_path, table, damage, segment):
    """One damage in a file without quotes never moves a value to another column. Values are
    tagged "<row>.<column>:"; a tag is at least 4 bytes, so one damage of up to 4 bytes can
    drop a TAB or an LF, not both, and the line it hits is then ragged (or, cut in two, keeps
    its later fields in place)."""
    header, rows = table
    tagged = [[f"{r}.{c}:{v or ''}" for c, v in enumerate(row)] for r, row in enumerate(rows)]
    data = _write_unquoted(header, tagged)
    data = _damage(data, [d for d in damage if d[0] != "quote"], data.index(b"\n") + 1)
    _, loaded, rejects = _read(tmp_path / "t.tsv", data, segment)
    for row in loaded:
        for column, name in enumerate(header):
            tag = re.fullmatch(r"\d+\.(\d)", (row[name] or "").split(":", 1)[0])
            if tag:
                assert tag.group(1) == str(column)
    lines = data.partition(b"\n")[2].split(b"\n")
    records = len(lines) - (lines[-1] == b"")
    assert len(loaded) + sum(r.reason == "ragged_line" for r in rejects) == records


@SETTINGS
@given(table=tables(), damage=_DAMAGE)
def test_damaged_header_is_refused_or_read(tmp_path, table, damage):
    header, rows = table
    data = _write_unquoted(header, rows)
    data = _damage(data, damage, 0)
    try:
        reader, loaded, rejects = _read(tmp_path / "t.tsv", data)
    except InvalidHeaderError as error:
        assert "line 1" in str(error) or "empty" in str(error)
        return
    _, expected_rows, expected_rejects = reference(data)
    assert (loaded, rejects) == (expected_rows, expected_rejects)


@pytest.mark.parametrize(
    "body",
    [
        b'1\t"a""b"\n',  # quoted: a"b
        b'1\t"a\nb"\t\n',  # ragged after a quoted LF
        b'"',
        b'1\t"x"',  # closing quote at end of file
        b'1\t"x""',  # unclosed: `""` is a quote inside
        b"\n\n1\t2\n",
        b"1\t\\\\\\t\\\n",
    ],
)
def test_edge_cases_match_reference(tmp_path, body):
    data = b"a\tb\n" + body
    for segment in (2, 3, 4, 1 << 20):
        _, loaded, rejects = _read(tmp_path / "t.tsv", data, segment)
        _, expected_rows, expected_rejects = reference(data)
        assert (loaded, rejects) == (expected_rows, expected_rejects)
