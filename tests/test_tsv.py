"""The TSV reader on the real edX fixtures (SPEC §2, §4, §6), and on files derived from them."""

import csv
import io
import json
from pathlib import Path
from random import Random

import pyarrow as pa
import pytest

from edxorg_s3_ingest.reading.tsv import (
    SOURCE_LINE,
    InvalidHeaderError,
    Reject,
    TsvFile,
    decode_escapes,
)

FIXTURES = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "realdata"
    / "edx_fixtures"
    / "edx-analytics-pipeline"
)
RESEARCH = FIXTURES / "research_package_tsv"
OBFUSCATED = FIXTURES / "research_package_tsv_obfuscated"
HEADER_FIRST = FIXTURES / "studentmodule_export_header_first"
SORTED = FIXTURES / "studentmodule_export_sorted"
TSV_FIXTURES = sorted(
    path
    for path in FIXTURES.rglob("*.sql")
    if not {"mysqldump_not_tsv", "studentmodule_export_sorted"} & set(path.parts)
)


def fixture(folder: Path, table: str) -> Path:
    (path,) = folder.glob(f"*-{table}-*.sql")
    return path


def load(path: Path, **options) -> tuple[TsvFile, list[dict], list[Reject]]:
    rejects: list[Reject] = []
    reader = TsvFile(path, rejects.append, **options)
    batches = list(reader.batches())
    for batch in batches:
        assert batch.schema == pa.schema(
            [*((name, pa.string()) for name in reader.header), (SOURCE_LINE, pa.int64())]
        )
    return reader, [row for batch in batches for row in batch.to_pylist()], rejects


def derived(tmp_path: Path, data: bytes, name: str = "derived.tsv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_fixtures_are_there():
    assert len(TSV_FIXTURES) == 28, "shared/realdata/edx_fixtures is expected beside the repo"


@pytest.mark.parametrize("path", TSV_FIXTURES, ids=lambda path: path.name)
def test_every_tsv_fixture_loads(path):
    lines = path.read_bytes().split(b"\n")
    reader, rows, rejects = load(path)
    assert reader.header == lines[0].decode().split("\t")
    assert rejects == []
    assert [row[SOURCE_LINE] for row in rows] == list(range(2, len(lines)))
    # No fixture quotes a field, and none has a CR or an LF inside a field: one row a line.
    for row, line in zip(rows, lines[1:], strict=False):
        fields = line.decode().split("\t")
        assert [row[name] for name in reader.header] == [
            None if field == "NULL" else decode_escapes(field) for field in fields
        ]


@pytest.mark.parametrize("path", sorted(SORTED.glob("*.sql")), ids=lambda path: path.name)
def test_sorted_export_has_no_header_on_line_1(path):
    with pytest.raises(InvalidHeaderError, match=r"line 1 is not a header.*'9\d+' is not a column"):
        TsvFile(path, pytest.fail)


def test_zero_byte_file_is_refused_clearly(tmp_path):
    with pytest.raises(InvalidHeaderError, match="empty"):
        TsvFile(derived(tmp_path, b""), pytest.fail)


@pytest.mark.parametrize("folder", [RESEARCH, OBFUSCATED, HEADER_FIRST])
def test_studentmodule_state_is_json_once_loaded(folder):
    for path in folder.glob("*courseware_studentmodule*.sql"):
        _, rows, _ = load(path)
        assert rows
        for row in rows:
            assert isinstance(json.loads(row["state"]), dict)


def test_escaped_quotes_in_state_decode_to_json_escapes():
    _, rows, _ = load(fixture(RESEARCH, "courseware_studentmodule"))
    state = json.loads(rows[0]["state"])
    answer = json.loads(state["student_answers"]["5b60fa3470a2440eafeee24d6806eb1a_2_1"])
    assert answer["answer"] == "correct"
    assert json.loads(answer["state"])["answer"] == "OC(O)C(Cl)(Cl)Cl"


def test_null_and_empty_string_stay_apart():
    _, rows, _ = load(fixture(RESEARCH, "auth_userprofile"))
    assert rows[1]["meta"] == ""  # empty field: empty string
    assert rows[1]["gender"] is None  # NULL
    assert rows[0]["meta"] == '{"old_emails": [["honor@example.com"]]}'
    _, rows, _ = load(fixture(OBFUSCATED, "auth_userprofile"))
    assert [row["name"] for row in rows] == ["", "", "", ""]  # PII blanked to ""
    assert [row["gender"] for row in rows] == ["m", None, None, None]  # NULL stays NULL
    assert rows[1]["profile_image_uploaded_at"] is None


def test_obfuscated_ids_beyond_int32_survive_as_text():
    _, rows, _ = load(fixture(OBFUSCATED, "auth_user"))
    assert [row["id"] for row in rows] == ["2048", "2147483648", "2147485696", "8388608"]
    _, rows, _ = load(fixture(OBFUSCATED, "courseware_studentmodule"))
    assert rows[2]["student_id"] == "2147485696"


def test_wiki_escaped_crlf_decodes_to_cr_lf():
    _, rows, _ = load(fixture(RESEARCH, "wiki_articlerevision"))
    assert rows[0]["content"] == "<h2Instructions:</h2>\r\nThis is the wiki for **edX**."
    assert rows[2]["content"].count("\r\n") == 4
    assert [row[SOURCE_LINE] for row in rows] == [2, 3, 4]


def test_raw_cr_inside_a_field_is_kept(tmp_path):
    # The wiki file with each escaped CR written raw, as SPEC §2 allows.
    data = fixture(RESEARCH, "wiki_articlerevision").read_bytes().replace(b"\\r", b"\r")
    reader, rows, rejects = load(derived(tmp_path, data))
    assert rejects == []
    assert rows[0]["content"] == "<h2Instructions:</h2>\r\nThis is the wiki for **edX**."
    assert rows[1]["title"] == "Course Guide"
    assert [row[SOURCE_LINE] for row in rows] == [2, 3, 4]
    # A CR at the end of a line is data of the last field, not half of a CRLF.
    data = b"a\tb\n1\tx\r\n2\t\r\r\n"
    _, rows, _ = load(derived(tmp_path, data, "cr.tsv"))
    assert rows == [{"a": "1", "b": "x\r", SOURCE_LINE: 2}, {"a": "2", "b": "\r\r", SOURCE_LINE: 3}]


def _quoted_copy(path: Path, edit) -> bytes:
    """A fixture rewritten as a current export: minimal quoting, some controls raw."""
    _, rows, _ = load(path)
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    header = [name for name in rows[0] if name != SOURCE_LINE]
    writer.writerow(header)
    for row in rows:
        edit(row)
        writer.writerow(
            ["NULL" if row[name] is None else row[name].replace("\\", "\\\\") for name in header]
        )
    return out.getvalue().encode()


def test_quoted_fields_with_tabs_quotes_and_line_feeds(tmp_path):
    def edit(row):
        row["content"] = row["content"].replace("\r\n", "\n")  # raw LFs, inside quotes
        row["user_message"] = 'say "hi"\tthen\\go'

    data = _quoted_copy(fixture(RESEARCH, "wiki_articlerevision"), edit)
    assert b'"say ""hi""\tthen\\\\go"' in data
    reader, rows, rejects = load(derived(tmp_path, data))
    assert reader.quoted and rejects == []
    assert [row["user_message"] for row in rows] == ['say "hi"\tthen\\go'] * 3
    assert rows[2]["content"] == (
        "This is the wiki for **edX**.\n\n<h2>Purpose of the edX Guides</h2>\n\n"
        "The purpose of this activity."
    )
    # Rows start lower as the LFs inside quoted contents push them down.
    assert [row[SOURCE_LINE] for row in rows] == [2, 4, 6]
    assert [row["title"] for row in rows] == ["Demo_Course", "Course Guide", "Lecture Guide"]


def test_quoted_json_state_round_trips(tmp_path):
    path = fixture(HEADER_FIRST, "E929-2014_T1-courseware_studentmodule")
    _, original, _ = load(path)
    data = _quoted_copy(path, lambda row: None)
    assert data.count(b'\t"{""') == len(original)  # every JSON state is quoted
    for segment in (64, 1 << 20):
        reader, rows, rejects = load(derived(tmp_path, data), segment_bytes=segment)
        assert reader.quoted and rejects == []
        assert rows == original


def test_malformed_quote_makes_the_file_unquoted(tmp_path):
    lines = fixture(RESEARCH, "auth_userprofile").read_bytes().split(b"\n")
    # A stray quote in the middle of a field, and a field that starts with a quote whose
    # closing quote is followed by text: the file is an old unquoted one.
    lines[1] = lines[1].replace(b"4th Street", b'4th "B" Street')
    lines[2] = lines[2].replace(b"\taudit\t", b'\t"audit" user\t')
    lines[3] = lines[3].replace(b"\tverified\t", b'\t"verified\t')
    reader, rows, rejects = load(derived(tmp_path, b"\n".join(lines)))
    assert not reader.quoted
    assert rejects == []
    assert [row["name"] for row in rows] == ["honor", '"audit" user', '"verified', "staff"]
    assert rows[0]["mailing_address"] == '4th "B" Street'
    # Well-formed, the same quoted field is unquoted, as a current export writes it.
    lines[2] = lines[2].replace(b'\t"audit" user\t', b'\t"audit ""A"" user"\t')
    lines[3] = lines[3].replace(b'\t"verified\t', b"\tverified\t")
    reader, rows, _ = load(derived(tmp_path, b"\n".join(lines), "quoted.tsv"))
    assert reader.quoted
    assert rows[1]["name"] == 'audit "A" user'
    assert rows[0]["mailing_address"] == '4th "B" Street'


def test_unclosed_quote_makes_the_file_unquoted(tmp_path):
    data = b'a\tb\n1\t"x\n2\ty\n3\t"z"\n'
    reader, rows, rejects = load(derived(tmp_path, data))
    assert not reader.quoted and rejects == []
    assert [row["b"] for row in rows] == ['"x', "y", '"z"']


def test_ragged_lines_are_rejected_and_neighbours_load(tmp_path):
    path = fixture(RESEARCH, "teams")
    _, original, _ = load(path)
    lines = path.read_bytes().split(b"\n")
    lines[2] += b"\textra"  # line 3: one field too many
    lines[4] = lines[4].replace(b"\t", b" ", 1)  # line 5: one too few
    lines.insert(4, b"")  # a blank line 5 (the short line moves to 6)
    reader, rows, rejects = load(derived(tmp_path, b"\n".join(lines)))
    assert [(reject.line, reject.reason) for reject in rejects] == [
        (3, "ragged_line"),
        (5, "ragged_line"),
        (6, "ragged_line"),
    ]
    assert rejects[0].raw_line == lines[2]
    assert rejects[1].raw_line == b""
    assert rows == [original[0], {**original[2], SOURCE_LINE: 4}]
    assert reader.rows + reader.rejected["ragged_line"] == 5


def test_invalid_utf8_row_loads_with_replacement_and_is_recorded(tmp_path):
    path = fixture(RESEARCH, "auth_user")
    _, original, _ = load(path)
    data = path.read_bytes().replace(b"audit_first", b"audit\xff\xc3first", 1)
    reader, rows, rejects = load(derived(tmp_path, data))
    assert [(reject.line, reject.reason) for reject in rejects] == [(3, "invalid_utf8")]
    assert b"audit\xff\xc3first" in rejects[0].raw_line
    assert rows[1]["first_name"] == "audit\ufffd\ufffdfirst"
    assert rows[0] == original[0] and rows[2:] == original[2:]
    assert reader.rows == 4 and reader.rejected == {"invalid_utf8": 1}


def test_source_line_with_multiline_quoted_fields_across_segments(tmp_path):
    body = b"".join(b'%d\t"line\n%d\nend"\t\\n\n' % (i, i) for i in range(200))
    data = b"id\ttext\tnote\n" + body
    for segment in (7, 100, 1 << 20):
        reader, rows, _ = load(derived(tmp_path, data), segment_bytes=segment)
        assert reader.quoted
        assert [row[SOURCE_LINE] for row in rows] == list(range(2, 2 + 3 * 200, 3))
        assert rows[5] == {"id": "5", "text": "line\n5\nend", "note": "\n", SOURCE_LINE: 17}


def test_header_only_file_has_no_rows(tmp_path):
    header = fixture(RESEARCH, "teams").read_bytes().split(b"\n")[0]
    for data in (header + b"\n", header):
        reader, rows, rejects = load(derived(tmp_path, data))
        assert reader.header[:2] == ["id", "team_id"]
        assert (rows, rejects, list(reader.batches())) == ([], [], [])


def test_escapes_decode_exactly():
    assert decode_escapes(r"a\\nb") == "a\\nb"  # backslash + n, not backslash + LF
    assert decode_escapes(r"\t\n\r\\") == "\t\n\r\\"
    assert decode_escapes(r"\x \" \N \\\n") == '\\x \\" \\N \\\n'


def test_many_segments_and_parse_blocks_agree_with_what_was_written(tmp_path):
    """A few MB of current-style rows: pyarrow splits segments into blocks in parallel, and
    quoted LFs, raw CRs and escapes land on every kind of boundary."""
    random = Random(3)
    pool = ["", None, "plain", 'say "hi"', "tab\there", "two\nlines", "cr\rhere", "back\\slash"]
    pool += ["é€😀 " * 30, "\\n is not a line feed", "x" * 5000, "\\", "NUL"]
    header = ["id", "a", "b", "c"]
    rows, line = [], 2
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    writer.writerow(header)
    for index in range(6000):
        row = [str(index), *(random.choice(pool) for _ in range(3))]
        raw = random.random() < 0.3  # TAB/LF/CR raw inside quotes, or escaped
        written = ["NULL" if value is None else value.replace("\\", "\\\\") for value in row]
        if not raw:
            written = [
                value.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
                for value in written
            ]
        writer.writerow(written)
        rows.append({**dict(zip(header, row, strict=True)), SOURCE_LINE: line})
        line += 1 + (sum((value or "").count("\n") for value in row) if raw else 0)
    path = derived(tmp_path, out.getvalue().encode())
    assert path.stat().st_size > 4_000_000
    for segment, block in ((16 << 20, 4 << 20), (300_000, 40_000), (1 << 20, 8 << 20)):
        reader, loaded, rejects = load(path, segment_bytes=segment, parse_block_bytes=block)
        assert reader.quoted and rejects == []
        assert loaded == rows


def test_field_over_16_mb(tmp_path):
    big = b"x\\n" * (6 << 20)
    data = b"id\tstate\n1\t" + big + b'\n2\t"' + big + b'"\n'
    _, rows, rejects = load(derived(tmp_path, data), segment_bytes=1 << 20)
    assert rejects == []
    assert [len(row["state"]) for row in rows] == [12 << 20, 12 << 20]
    assert rows[1]["state"][:4] == "x\nx\n"


@pytest.mark.parametrize("quoted", [False, True])
@pytest.mark.parametrize("ragged", [False, True])
def test_every_run_of_backslashes_before_every_kind_of_byte_decodes_exactly(
    tmp_path, quoted, ragged
):
    """pyarrow drops the first backslash of each pair while parsing, after the reader has
    marked the other escapes (reading/escapes.py): runs of 0-5 backslashes before an escape
    letter, another letter, a quote, a field's end, a line's end and the file's end, at every
    place in a field, must read as `decode_escapes` reads the raw field. With a ragged line
    the segment is read again unmarked and decoded after the parse: both ways must agree."""
    tails = ["t", "n", "r", "x", "N", '"', "é"]
    values = [
        before + "\\" * run + tail
        for run in range(6)
        for tail in [*tails, ""]
        for before in ("", "a")
    ]
    values += [value + "z" for value in values]

    def field(value: str) -> str:
        # Unquoted, the lone `"` field is an unclosed quote: the whole file is read unquoted.
        return '"' + value.replace('"', '""') + '"' if quoted else value

    lines = ["id\tv\tw"]
    expected = []
    for index, value in enumerate(values):
        lines.append(f"{index}\t{field(value)}\t{field(value[::-1])}")
        expected.append((str(index), value))
    if ragged:
        lines.insert(24, "only one field")  # among lone backslashes and escapes
    # The file ends in an odd run of backslashes, with no LF.
    data = ("\n".join(lines) + f"\nlast\t{field('a')}\tb\\").encode()
    rejects: list[Reject] = []
    reader = TsvFile(derived(tmp_path, data), rejects.append, segment_bytes=97)
    rows = [row for batch in reader.batches() for row in batch.to_pylist()]
    assert reader.quoted is quoted
    assert [reject.reason for reject in rejects] == (["ragged_line"] if ragged else [])
    assert [(row["id"], row["v"]) for row in rows[:-1]] == [
        (index, decode_escapes(raw)) for index, raw in expected
    ]
    assert [row["w"] for row in rows[:-1]] == [decode_escapes(raw[::-1]) for _, raw in expected]
    assert rows[-1] == {"id": "last", "v": "a", "w": "b\\", SOURCE_LINE: len(lines) + 1}


def test_a_row_starting_like_a_byte_order_mark_reads_with_tiny_parse_blocks(tmp_path):
    """U+F000 is EF 80 80: a first parse block shorter than a byte-order mark that starts with
    EF is refused by pyarrow as a truncated mark, unless the block is made long enough."""
    path = derived(tmp_path, "c0\n\uf000\n".encode())
    for segment in (2, 1 << 20):
        reader, rows, rejects = load(path, segment_bytes=segment, parse_block_bytes=1)
        assert (rows, rejects) == ([{"c0": "\uf000", SOURCE_LINE: 2}], [])
