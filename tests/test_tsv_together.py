"""Small files read together (`tsv.read_together`) and from memory give exactly what each file
gives read alone from its path: the same rows, `_source_line`s, rejects and counts.

Generated files (tests/test_fuzz.py's hostile fields: quoted and unquoted, raw CRs, ragged
lines, blank lines, invalid UTF-8, BOMs) share a few headers, so that groups form, some clean
(read together) and some not (each file then reads itself).
"""

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fuzz import field, hostile

from edxorg_s3_ingest.reading.tsv import InvalidHeaderError, Reject, TsvFile, read_together

HEADERS = [b"id\tname", b"id\tname\tstate", b"a", b"name\tid"]


def alone(path) -> tuple[list[dict], list[Reject], TsvFile]:
    rejects: list[Reject] = []
    reader = TsvFile(path, rejects.append)
    rows = [row for batch in reader.batches() for row in batch.to_pylist()]
    return rows, rejects, reader


def together(datas: list[bytes]) -> tuple[list[tuple], int]:
    """Each file's (rows, rejects, reader) when read together; and how many were."""
    readers, rejects = [], []
    for data in datas:
        found: list[Reject] = []
        readers.append(TsvFile(data, found.append))
        rejects.append(found)
    read_together(readers)
    shared = sum(reader._parsed is not None for reader in readers)
    results = []
    for reader, found in zip(readers, rejects, strict=True):
        rows = [row for batch in reader.batches() for row in batch.to_pylist()]
        results.append((rows, found, reader))
    return results, shared


def generated(rng: random.Random) -> bytes:
    header = rng.choice(HEADERS)
    width = header.count(b"\t") + 1
    clean = rng.random() < 0.6
    records = []
    for _ in range(rng.randint(0, 8)):
        if clean:
            values = [rng.choice([b"1", b"x", b"NULL", b"", b"\\n", b'"q""t"', b"\xc3\xa9"])]
            records.append(b"\t".join(values * width))
        else:
            count = width if rng.random() < 0.9 else width + 1
            records.append(b"\t".join(field(rng) for _ in range(count)))
    end = rng.choice([b"\n", b"\n", b""])
    return header + b"\n" + b"\n".join(records) + (end if records else b"\n")


def assert_same(tmp_path, datas: list[bytes]) -> int:
    readable = []
    for number, data in enumerate(datas):
        path = tmp_path / f"{number}.tsv"
        path.write_bytes(data)
        try:
            readable.append((data, alone(path)))
        except InvalidHeaderError:
            with pytest.raises(InvalidHeaderError):
                TsvFile(data, lambda reject: None)
    results, shared = together([data for data, _ in readable])
    for (data, (rows, rejects, reader)), (rows2, rejects2, reader2) in zip(
        readable, results, strict=True
    ):
        assert (rows2, rejects2) == (rows, rejects), data
        assert (reader2.rows, reader2.rejected) == (reader.rows, reader.rejected), data
        assert (reader2.header, reader2.quoted) == (reader.header, reader.quoted), data
    return shared


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 2**63 - 1))
def test_generated_files_read_together_as_alone(tmp_path, seed):
    rng = random.Random(seed)
    datas = [generated(rng) if rng.random() < 0.8 else hostile(rng) for _ in range(12)]
    assert_same(tmp_path, datas)


def test_clean_files_are_read_in_one_go_and_numbered_in_their_own_lines(tmp_path):
    datas = [
        b'id\tname\n1\t"two\nlines"\n2\tb\n',  # a record over two lines
        b"id\tname\n3\tc\r\n4\td",  # a raw CR kept as data, no final LF
        b"id\tname\n\xef\xbb\xbf5\t\\\\n\n",  # a BOM as data, an escaped backslash
        b"id\tname\n",  # header only: no rows
        b"name\tid\nx\t6\n",  # another header: a group of one
    ]
    shared = assert_same(tmp_path, datas)
    assert shared == 3
    results, _ = together(datas)
    assert [row["_source_line"] for row in results[0][0]] == [2, 4]
    assert results[0][0][0]["name"] == "two\nlines"
    assert results[1][0][0]["name"] == "c\r" and results[1][0][1]["_source_line"] == 3
    assert results[2][0][0]["id"] == "\ufeff5" and results[2][0][0]["name"] == "\\n"


def test_a_group_with_a_bad_line_reads_each_file_alone(tmp_path):
    datas = [b"id\tname\n1\ta\n", b"id\tname\n2\n3\tc\n", b"id\tname\n4\td\xff\n"]
    assert assert_same(tmp_path, datas) == 0
    results, _ = together(datas)
    assert results[1][1] == [Reject(2, "ragged_line", b"2")]
    assert results[2][1] == [Reject(2, "invalid_utf8", b"4\td\xff")]


def test_quoted_and_unquoted_files_are_separate_groups(tmp_path):
    datas = [b'id\tname\n1\t"a""b"\n', b'id\tname\n2\t"a"b\n', b'id\tname\n3\t"x"\n']
    results, shared = together(datas)
    assert shared == 2  # the first and the last: quoted; the middle one is unquoted
    assert [reader.quoted for _, _, reader in results] == [True, False, True]
    assert [rows[0]["name"] for rows, _, _ in results] == ['a"b', '"a"b', "x"]
    assert_same(tmp_path, datas)
