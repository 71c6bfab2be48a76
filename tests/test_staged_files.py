"""The staged Parquet files' dictionary encoding (reading/staged_files.py): chosen from the
first rows of each file, by how often a column's values repeat there."""

import pyarrow as pa
import pyarrow.parquet as pq

from edxorg_s3_ingest.reading.staged_files import StagedFile, _repetitive


def table(rows: int = 5000) -> pa.Table:
    return pa.table(
        {
            "id": [str(n) for n in range(rows)],
            "course_id": ["course-v1:MITx+6.00x+2T2026"] * rows,
            "state": [f'{{"answer": "{n}", "pad": "{"x" * 500}"}}' for n in range(rows)],
            "template": [f"{n % 3}" + "y" * 600 for n in range(rows)],  # long, 3 values
            "grade": [None if n % 2 else "1.0" for n in range(rows)],
        }
    )


def test_repeating_columns_are_found_short_or_long():
    """Long values are judged on fewer rows (a bounded number of bytes), with the same
    answer: a long value that repeats is found, a long unique one is not."""
    assert _repetitive(table()) == ["course_id", "template", "grade"]
    assert _repetitive(table(3)) == ["course_id", "grade"]  # 3 rows: one distinct value at most


def test_only_the_repeating_columns_are_dictionary_encoded(tmp_path):
    path = str(tmp_path / "rows.parquet")
    staged = StagedFile(path, table())
    staged.write(table())
    staged.close()
    row_group = pq.ParquetFile(path).metadata.row_group(0)
    encoded = {
        row_group.column(index).path_in_schema: row_group.column(index).has_dictionary_page
        for index in range(row_group.num_columns)
    }
    assert encoded == {
        "id": False,
        "course_id": True,
        "state": False,
        "template": True,
        "grade": True,
    }
