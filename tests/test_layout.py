"""The package's folders show its architecture, and each folder's modules import only from
their own folder and the ones below it (README: Layout). Checked on the source, imports inside
functions included."""

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "edxorg_s3_ingest"
LAYERS = [
    {"tables", "settings", "crashpoints", "timeline", "report", "collector"},
    {"landing"},
    {"reading"},
    {"state"},
    {"stores"},
    {"loading"},
    {"running"},
    {"orchestration"},
    {"cli", "loads", "definitions", "defs", "step_server", "step_server_preamble"},
]
"""From the bottom: the shared basics; the landing zone; reading TSV into Arrow; what a run
reads (state); where tables live (stores); one table's load; running many (the CLI); Dagster;
the entry points."""


def layer(part: str) -> int:
    (index,) = [index for index, names in enumerate(LAYERS) if part in names]
    return index


def imported(path: Path) -> set[str]:
    """The package's top-level parts that `path` imports."""
    parts = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            if name.startswith("edxorg_s3_ingest."):
                parts.add(name.split(".")[1])
    return parts


def test_every_module_is_in_a_layer():
    for path in PACKAGE.rglob("*.py"):
        part = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if part != "__init__":
            assert layer(part) >= 0, path


def test_modules_import_only_their_layer_and_below():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if own == "__init__":
            continue
        upward += [
            f"{path.relative_to(PACKAGE)} imports {part}"
            for part in imported(path)
            if layer(part) > layer(own)
        ]
    assert upward == []
