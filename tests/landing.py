"""Builds landing zones on disk for tests (SPEC §2), and computes the SPEC §5 invariant from them.

Independent of the product: the expected table is computed here from the files on disk with
plain Python (os.stat, csv), never with project code.
"""

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path


def read_plain(path: Path) -> tuple[list[str], list[tuple[int, dict]], list[int]]:
    """Header, (line, row) pairs and ragged line numbers of a test export (plain values only:
    no quoting, no escapes; `NULL` is None)."""
    lines = path.read_bytes().decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    header = lines[0].split("\t")
    rows, ragged = [], []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(header):
            ragged.append(number)
            continue
        values = [None if value == "NULL" else value for value in fields]
        rows.append((number, dict(zip(header, values, strict=True))))
    return header, rows, ragged


@dataclass(frozen=True)
class Export:
    path: Path
    course: str

    @property
    def url(self) -> str:
        return f"file://{self.path}"

    @property
    def mtime(self) -> int:
        return self.path.stat().st_mtime_ns


def tsv(columns: list[str], rows: list[list[str]]) -> bytes:
    """Simple export text: no field needs quoting or escaping (tests keep values plain)."""
    lines = ["\t".join(columns)] + ["\t".join(row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


class Landing:
    """`<root>/db_table/<table>/<prod|edge>/<course>/<sha256>.tsv`, with explicit mtimes."""

    def __init__(self, root: Path, table: str) -> None:
        self.root = root
        self.table = table

    @property
    def bucket_url(self) -> str:
        return str(self.root)

    def folder(self, course: str, stage: str = "prod") -> Path:
        return self.root / "db_table" / self.table / stage / course

    def write(
        self, course: str, content: bytes, mtime: int, stage: str = "prod", name: str | None = None
    ) -> Export:
        """Writes one export named by its content hash (or `name`) and sets its mtime (seconds)."""
        folder = self.folder(course, stage)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (name or f"{hashlib.sha256(content).hexdigest()}.tsv")
        path.write_bytes(content)
        os.utime(path, (mtime, mtime))
        return Export(path, course)

    def export(
        self, course: str, columns: list[str], rows: list[list[str]], mtime: int, **kwargs
    ) -> Export:
        return self.write(course, tsv(columns, rows), mtime, **kwargs)

    def columns(self) -> set[str]:
        """The columns the table must have: the union of the newest files' headers."""
        return {name for path in self.newest().values() for name in read_plain(path)[0]}

    @staticmethod
    def touch(export: Export, mtime: int) -> None:
        """A re-upload of unchanged content: same key, same bytes, newer modification time."""
        os.utime(export.path, (mtime, mtime))

    def prod_files(self) -> list[Path]:
        base = self.root / "db_table" / self.table / "prod"
        return sorted(base.glob("*/*.tsv")) if base.exists() else []

    def newest(self) -> dict[str, Path]:
        """Per course: the newest non-empty prod file by (mtime, key) — SPEC §5."""
        best: dict[str, tuple[int, str, Path]] = {}
        for path in self.prod_files():
            stat = path.stat()
            if stat.st_size == 0:
                continue
            candidate = (stat.st_mtime_ns, path.name, path)
            course = path.parent.name
            if course not in best or candidate[:2] > best[course][:2]:
                best[course] = candidate
        return {course: entry[2] for course, entry in sorted(best.items())}

    def expected(self) -> list[dict]:
        """The table SPEC §5 demands: every course's newest file's data rows, with lineage."""
        rows = []
        for course, path in self.newest().items():
            for line, row in read_plain(path)[1]:
                rows.append(
                    {
                        **row,
                        "_course_id": course,
                        "_dlt_file_path": f"file://{path}",
                        "_source_line": line,
                    }
                )
        return rows
