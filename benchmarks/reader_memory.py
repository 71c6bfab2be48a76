"""Peak memory and speed of the TSV reader (SPEC §2 files), against pyarrow.csv's plain read.

    uv run python benchmarks/reader_memory.py [--gb 1.0]

Generates, in a temporary folder, a file with a 16 MB field, a ~200 MB and a ~1 GB
courseware_studentmodule-like file (minimal quoting, JSON states with edX escapes, some raw LFs
inside quoted fields, raw CRs, NULLs), then reads each in a child process of its own so that
each peak RSS (getrusage) is that read's alone. Not a test: run by hand.
"""

import argparse
import csv
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEADER = ["id", "module_type", "module_id", "student_id", "state", "grade", "created", "done"]
LIMIT_MB = 600


def _escape(value: str) -> str:
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


def _rows(start: int, count: int) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    for i in range(start, start + count):
        answer = json.dumps({"answer": f"x{i}", "state": "line 1\nline 2"})
        text = "é to the €, " * (i % 40)
        state = _escape(
            json.dumps({"student_answers": {"q_2_1": answer}, "t": text}, ensure_ascii=False)
        )
        if i % 50 == 0:
            state += "\nraw line feed inside the quoted field"
        created = "2015-11-06 11:28:36" + ("\r" if i % 70 == 0 else "")
        grade = "NULL" if i % 3 else f"{i % 7}.0"
        module = f"block-v1:edX+DemoX+Demo_Course+type@problem+block@{i:032x}"
        writer.writerow([i, "problem", module, 2_147_483_648 + i, state, grade, created, "na"])
    return out.getvalue().encode()


def generate(folder: Path, gb_large: float) -> list[Path]:
    big = folder / "field_16mb.tsv"
    field = _escape("a\tb\nc\\" * (4 << 20)).encode()  # 16 MiB decoded, 28 MiB as written
    big.write_bytes(
        "\t".join(HEADER).encode()
        + b"\n"
        + _rows(0, 3)
        + b"3\tproblem\tm\t4\t"
        + field
        + b"\tNULL\t2015-11-06\tna\n"
        + _rows(4, 3)
    )
    paths = [big]
    for name, size in (
        ("studentmodule_200mb.tsv", 200e6),
        ("studentmodule_1gb.tsv", gb_large * 1e9),
    ):
        path = folder / name
        block = _rows(0, 20_000)
        with path.open("wb") as out:
            out.write("\t".join(HEADER).encode() + b"\n")
            while out.tell() < size:
                out.write(block)
        paths.append(path)
    return paths


def read_tsv(path: str) -> None:
    from edxorg_s3_ingest.reading.tsv import TsvFile

    rejects: list = []
    started = time.perf_counter()
    reader = TsvFile(path, rejects.append)
    scanned = time.perf_counter()
    rows = sum(batch.num_rows for batch in reader.batches())
    done = time.perf_counter()
    mb = os.path.getsize(path) / 1e6
    print(
        f"TsvFile      {Path(path).name:26} {mb:7.0f} MB  rows {rows:>9}  rejects {len(rejects)}"
        f"  quoted {reader.quoted}  scan {mb / (scanned - started):5.0f} MB/s"
        f"  parse {mb / (done - scanned):5.0f} MB/s  total {mb / (done - started):5.0f} MB/s"
        f"  peak RSS {_peak_mb():5.0f} MB"
    )


def read_pyarrow(path: str) -> None:
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    started = time.perf_counter()
    table = pa_csv.read_csv(
        path,
        parse_options=pa_csv.ParseOptions(
            delimiter="\t",
            newlines_in_values=True,
            invalid_row_handler=lambda row: "skip",  # rows cut in two at raw CRs
        ),
        convert_options=pa_csv.ConvertOptions(
            column_types=dict.fromkeys(HEADER, pa.string()),
            null_values=["NULL"],
            strings_can_be_null=True,
        ),
    )
    done = time.perf_counter()
    mb = os.path.getsize(path) / 1e6
    print(
        f"pyarrow.csv  {Path(path).name:26} {mb:7.0f} MB  rows {table.num_rows:>9}"
        f"  (whole table in memory; no escapes, CRs end lines)"
        f"  total {mb / (done - started):5.0f} MB/s"
    )


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gb", type=float, default=1.0, help="size of the large file")
    parser.add_argument("--read", help=argparse.SUPPRESS)
    parser.add_argument("--pyarrow", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read:
        return read_tsv(args.read)
    if args.pyarrow:
        return read_pyarrow(args.pyarrow)
    with tempfile.TemporaryDirectory() as folder:
        paths = generate(Path(folder), args.gb)
        peaks = []
        for path in paths:
            child = [sys.executable, __file__, "--read", str(path)]
            subprocess.run(child, check=True)
            peaks.append(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
        subprocess.run([sys.executable, __file__, "--pyarrow", str(paths[1])], check=True)
    worst = max(peaks)
    print(f"largest peak RSS of a TsvFile read: {worst:.0f} MB (limit {LIMIT_MB} MB)")
    sys.exit(0 if worst < LIMIT_MB else 1)


if __name__ == "__main__":
    main()
