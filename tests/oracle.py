"""Independent readings used as test oracles: plain Python, no project code."""

import csv
import io
from pathlib import Path

import duckdb

LINEAGE = ("_course_id", "_dlt_file_path", "_dlt_file_modified", "_source_line", "_dlt_load_id")


def unescape(value: str) -> str:
    out, chars = [], iter(value)
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        following = next(chars, None)
        mapped = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}.get(following)
        if mapped is None:
            out.append("\\" + (following or ""))
        else:
            out.append(mapped)
    return "".join(out)


def export_fields(path: Path) -> list[list[str]]:
    """The header and records of one export file (`fields_of`)."""
    return fields_of(path.read_bytes().decode("utf-8"))


def fields_of(text: str) -> list[list[str]]:
    """The header and records of one export, each a list of its raw fields (quoting undone,
    edX escapes and `NULL` kept), by SPEC §2's per-file rule: quoted when the file parses as
    well-formed quoted TSV (LF ends records), otherwise plain split on LF and tab."""
    try:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", strict=True)
        records = list(reader)
        # An unquoted raw CR ends a record for the csv module: the counts then disagree.
        if all(len(record) == len(records[0]) for record in records):
            return records
    except csv.Error:
        pass
    return [line.split("\t") for line in text.removesuffix("\n").split("\n")]


def read_export(path: Path) -> list[dict]:
    """The rows of one export file as dicts of column -> value (None for NULL)."""
    header, *data = export_fields(path)
    return [
        {
            name: (None if value == "NULL" else unescape(value))
            for name, value in zip(header, row, strict=True)
        }
        for row in data
    ]


def table_rows(data_dir: Path, table_name: str, columns: list[str] | None = None) -> list[dict]:
    """The whole table, exactly as the README's DuckDB expression reads it (SPEC §8)."""
    glob = f"{data_dir}/{table_name}/**/*.parquet"
    relation = duckdb.sql(f"select * from read_parquet('{glob}', union_by_name=true)")
    names = relation.columns
    return [dict(zip(names, row, strict=True)) for row in relation.fetchall()]


def canonical(rows: list[dict], keep: set[str] | None = None) -> list[tuple]:
    """Rows as sorted tuples of their (column, value) pairs, for comparing as multisets."""
    result = []
    for row in rows:
        pairs = tuple(
            sorted(
                (key, value)
                for key, value in row.items()
                if (keep is None or key in keep) and value is not None
            )
        )
        result.append(pairs)
    return sorted(result)
