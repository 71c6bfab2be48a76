"""Parquet footers written again (stores/parquet_footer.py): field ids stamped, files joined;
the data pages as they were, the rows read back the same, the ids where readers look for them."""

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from edxorg_s3_ingest.stores.parquet_footer import (
    MAGIC,
    FooterError,
    columns_of,
    field_ids,
    joined_footer,
    read_footer,
    tail,
    with_field_ids,
)


def rows(count: int) -> pa.Table:
    return pa.table(
        {
            "username": pa.array(
                [None if i % 7 == 0 else f"u{i}" for i in range(count)], pa.string()
            ),
            "_source_line": pa.array(range(2, count + 2), pa.int64()),
            "_course_id": pa.array([f"course-v1:X+{i % 3}+2026" for i in range(count)]),
            "_dlt_file_modified": pa.array(range(count), pa.timestamp("us", tz="UTC")),
        }
    )


def stamped(path, ids):
    start, footer = read_footer(path)
    new = with_field_ids(footer, ids)
    out = path.with_name(f"stamped-{path.name}")
    out.write_bytes(path.read_bytes()[:start] + new + tail(new))
    return out


@pytest.mark.parametrize("options", [{}, {"use_dictionary": ["_course_id"]}, {"version": "2.4"}])
def test_a_stamped_file_has_the_ids_and_the_same_rows(tmp_path, options):
    table = rows(10_000)
    path = tmp_path / "staged.parquet"
    pq.write_table(table, path, row_group_size=1_000, compression="snappy", **options)
    ids = {"username": 3, "_source_line": 1, "_course_id": 200, "_dlt_file_modified": 17}
    out = stamped(path, ids)

    assert pq.read_table(out).equals(table)
    schema = pq.read_schema(out)
    assert {f.name: int(f.metadata[b"PARQUET:field_id"]) for f in schema} == ids
    assert field_ids(read_footer(out)[1]) == ids
    assert field_ids(read_footer(path)[1]) == {}
    start = read_footer(path)[0]
    assert out.read_bytes()[:start] == path.read_bytes()[:start]
    assert pq.read_metadata(out).num_row_groups == 10


def test_ids_are_replaced_and_columns_not_named_keep_theirs(tmp_path):
    path = tmp_path / "staged.parquet"
    pq.write_table(rows(10), path)
    once = stamped(path, {"username": 1, "_source_line": 2, "_course_id": 3})
    twice = stamped(once, {"username": 40})
    assert field_ids(read_footer(twice)[1]) == {"username": 40, "_source_line": 2, "_course_id": 3}
    assert pq.read_table(twice).equals(rows(10))


def test_what_is_not_a_plain_parquet_footer_is_refused(tmp_path):
    path = tmp_path / "not.parquet"
    path.write_bytes(b"name\tvalue\n" * 10)
    with pytest.raises(FooterError):
        read_footer(path)
    with pytest.raises(FooterError):
        with_field_ids(b"\x15\x04", {"a": 1})  # a struct cut short
    nested = tmp_path / "nested.parquet"
    pq.write_table(pa.table({"s": pa.array([{"a": 1}])}), nested)
    with pytest.raises(FooterError, match="nested"):
        with_field_ids(read_footer(nested)[1], {"s": 1})


def joined(paths, out):
    parts = [read_footer(path) for path in paths]
    footer = joined_footer(parts)
    with out.open("wb") as stream:
        stream.write(MAGIC)
        for path, (start, _) in zip(paths, parts, strict=True):
            stream.write(path.read_bytes()[len(MAGIC) : start])
        stream.write(footer + tail(footer))
    return out


def test_files_with_the_same_columns_join_into_one_with_every_row(tmp_path):
    """Row groups copied one after the other behind one footer: pyarrow and DuckDB read the
    rows of all the files, in order, from the joined file."""
    tables, paths = [], []
    for number, count in enumerate([1_000, 2_500, 1, 7_000]):
        table = rows(count)
        path = tmp_path / f"staged-{number}.parquet"
        pq.write_table(table, path, row_group_size=900, use_dictionary=["_course_id"])
        tables.append(table)
        paths.append(path)
    out = joined(paths, tmp_path / "joined.parquet")
    whole = pa.concat_tables(tables)
    assert pq.read_table(out).equals(whole)
    metadata = pq.read_metadata(out)
    assert metadata.num_rows == 10_501
    assert metadata.num_row_groups == 2 + 3 + 1 + 8
    assert len({columns_of(read_footer(path)[1]) for path in paths}) == 1
    got = duckdb.sql(f"SELECT username, _source_line FROM '{out}'").fetchall()
    expected = zip(whole["username"].to_pylist(), whole["_source_line"].to_pylist(), strict=True)
    assert got == list(expected)


def test_files_with_other_columns_or_page_indexes_are_not_joined(tmp_path):
    first, other, indexed = (tmp_path / f"{name}.parquet" for name in ("a", "b", "c"))
    pq.write_table(rows(10), first)
    pq.write_table(rows(10).drop_columns(["username"]), other)
    pq.write_table(rows(10), indexed, write_page_index=True)
    assert columns_of(read_footer(first)[1]) != columns_of(read_footer(other)[1])
    with pytest.raises(FooterError, match="different columns"):
        joined_footer([read_footer(first), read_footer(other)])
    with pytest.raises(FooterError, match="page indexes"):
        joined_footer([read_footer(first), read_footer(indexed)])
