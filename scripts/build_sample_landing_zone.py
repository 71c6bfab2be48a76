"""Builds the sample landing zone shipped in the package: every table, as upstream writes it.

The production landing zone holds what the upstream `edxorg_archive` step writes (SPEC §2): it
reads each edX export without quoting, every field a string (an empty field null), pads or cuts
ragged lines to the header, drops header-only exports, appends six columns and writes the file
again, tab separated, with polars' quoting of its time: `necessary` (a field holding a tab, LF,
CR or `"` is quoted, inner quotes doubled) or `never`. The file is named by the SHA-256 of what
was written, in the course folder named by the course id of the export's file name.

The edX exports themselves are the edX analytics-pipeline fixtures of ../shared/realdata where
they exist, and rows generated from ../shared/realdata/edx_table_columns.tsv elsewhere, printed
as edX prints them: `NULL` for null, the backslash escapes `\\\\ \\t \\n \\r`, datetimes as
`2016-09-14 17:02:31` (a fraction only when there is one), stray raw CRs in free text.
`course`, `course_structure`, `examples` and `validate` have no documented columns: their
files carry a placeholder shape (`id`, `course_id`, `name`, `created`).

Run from the repository root: `uv run python scripts/build_sample_landing_zone.py`. The output
is deterministic (seeded), so a rebuild changes no file unless this script or the fixtures did.
"""

import csv
import hashlib
import json
import random
import re
import shutil
import sys
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edxorg_s3_ingest.tables import TABLES, UPSTREAM_COLUMNS  # noqa: E402

REALDATA = ROOT.parent / "shared" / "realdata"
FIXTURES = REALDATA / "edx_fixtures" / "edx-analytics-pipeline"
TARGET = ROOT / "edxorg_s3_ingest" / "sample_landing_zone"

NECESSARY, NEVER = "necessary", "never"
DEMO = "edX-DemoX-Demo_Course"
# The fixtures' obfuscated twin, filed as a second course (its rows still name the demo course).
OBFUSCATED = "MITx-6.002x-2012_Fall"
PRE2021 = "MITx-14.73x-2013_Spring"
# Generated courses, each with the quoting of the era its export was uploaded in.
GENERATED = (
    ("MITx-6.00.1x-3T2016", NEVER),
    ("MITx-15.071x-1T2020", NECESSARY),
    ("MITx-CTL.SC1x_1-3T2022", NECESSARY),
)
EDGE_COURSE = "MITx-15.071x-1T2020"
PLACEHOLDER_COLUMNS = [
    ("id", "int(11)", ""),
    ("course_id", "varchar(255)", ""),
    ("name", "varchar(255)", ""),
    ("created", "datetime(6)", ""),
]
UPSTREAM = [name for name, _ in UPSTREAM_COLUMNS]
# The course part of an export's file name, as upstream's COURSE_ID_REGEX splits it: the
# organization and run hold no dash, the number takes the fewest characters it can.
COURSE_ID = re.compile(
    r"(?P<organization>[a-zA-Z0-9._]+)-(?P<number>[a-zA-Z0-9._-]+?)-(?P<run>[a-zA-Z0-9._]+)"
)


# -- what upstream writes ------------------------------------------------------------------


def course_parts(course: str) -> tuple[str, str, str]:
    match = COURSE_ID.fullmatch(course)
    if not match:
        raise ValueError(f"{course!r} is not a course id upstream would parse")
    return match["organization"], match["number"], match["run"]


def row_hash(values: list[str | None]) -> str:
    """Upstream's `concat_str(all().fill_null(""))` of the export's own columns, SHA-256 hex."""
    return hashlib.sha256("".join(value or "" for value in values).encode()).hexdigest()


def write_field(value: str | None, quoting: str) -> str:
    if value is None:
        return ""
    if quoting == NECESSARY and any(char in value for char in '\t\n\r"'):
        return '"' + value.replace('"', '""') + '"'
    return value


def rewrite(export: bytes, course: str, system: str, quoting: str) -> bytes | None:
    """The file upstream writes for one edX export, or None when it drops the export."""
    lines = export.decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    header = lines[0].split("\t")
    rows = []
    for line in lines[1:]:
        fields = line.split("\t")[: len(header)]
        fields += [""] * (len(header) - len(fields))
        rows.append([field if field != "" else None for field in fields])
    if not rows:
        return None
    organization, number, run = course_parts(course)
    appended = [course, organization, number, run, f"edxorg_{system}"]
    out = ["\t".join(write_field(name, quoting) for name in header + UPSTREAM)]
    for row in rows:
        values = row + appended + [row_hash(row)]
        out.append("\t".join(write_field(value, quoting) for value in values))
    return ("\n".join(out) + "\n").encode("utf-8")


def place(export: bytes, table: str, system: str, course: str, quoting: str) -> None:
    data = rewrite(export, course, system, quoting)
    if data is None:
        return
    folder = TARGET / "db_table" / table / system / course
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{hashlib.sha256(data).hexdigest()}.tsv").write_bytes(data)


# -- edX exports generated from the documented columns --------------------------------------


def documented_columns() -> dict[str, list[tuple[str, str, str]]]:
    columns: dict[str, list[tuple[str, str, str]]] = {}
    with (REALDATA / "edx_table_columns.tsv").open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            columns.setdefault(row["table"], []).append(
                (row["column"], row["type_hint"], row["note"])
            )
    return columns


def edx_text(value: str | None) -> str:
    """A value as the edX export prints it: NULL, and backslash escapes.

    A CR is left raw here, as real exports sometimes carry it (SPEC §2); the fixtures carry the
    `\\r` escape.
    """
    if value is None:
        return "NULL"
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def edx_datetime(moment: datetime) -> str:
    # str() prints microseconds only when there are some, as the exports do.
    return str(moment)


def edx_number(value: float) -> str:
    return f"{value:g}"


# Learners on edX.org: one id each across courses, so the same user appears in several
# courses' auth_user exports (what the dbt staging model deduplicates).
USERS = [
    (4127361 + 7919 * n, name)
    for n, name in enumerate(
        ["ana_lima", "bkoroma", "chen.wei", "dmitri_v", "esra.k", "fatima_z", "gopal99", "hana_s"]
    )
]
FREE_TEXT = (
    "I work in logistics\nand want to learn supply chain analytics.",
    'My manager said "take this course".',
    "Tab\tseparated notes, a backslash \\ and a line\nbreak.",
    "Stray carriage return\rin a form field.",
    "Estudiante de ingeniería en Bogotá.",
)


class ExportGenerator:
    def __init__(self, course: str, course_index: int, columns: dict, system: str = "prod"):
        self.course = course
        self.index = course_index
        organization, number, run = course_parts(course)
        self.course_key = f"course-v1:{organization}+{number}+{run}"
        self.columns = columns
        self.random = random.Random(f"{course}/{system}")
        self.users = USERS[2 * course_index : 2 * course_index + 4]
        self.start = datetime(2016, 9, 1) + timedelta(days=540 * course_index)

    def hex(self, length: int = 32) -> str:
        return "".join(self.random.choice("0123456789abcdef") for _ in range(length))

    def moment(self, row: int, precise: bool) -> datetime:
        moment = self.start + timedelta(days=row * 3, seconds=self.random.randrange(86400))
        if precise and row % 2:
            moment = moment.replace(microsecond=self.random.randrange(1, 999999))
        return moment

    def block(self, kind: str = "problem") -> str:
        return f"block-v1:{self.course_key[10:]}+type@{kind}+block@{self.hex()}"

    def value(self, table: str, column: str, hint: str, note: str, row: int) -> str | None:
        user_id, username = self.users[row % len(self.users)]
        nullable = "(nullable)" in hint
        if "emits ''" in note:
            return ""
        if "emits NULL" in note:
            return None
        if "emits 0" in note:
            return "0"
        if nullable and row % 3 == 2:
            return None
        if column == "id" and table == "auth_user":
            return str(user_id)
        if column == "id":
            return str(10_000 * (TABLES.index(table) + 1) + 100 * self.index + row + 1)
        if column in ("user_id", "owner_id", "author_id", "user_profile_id") or (
            column in ("student_id", "scorer_id") and hint.startswith("int")
        ):
            return str(user_id)
        if column in ("student_id", "scorer_id", "anonymous_user_id", "hash_id"):
            return hashlib.md5(f"{user_id}{self.course}".encode()).hexdigest()
        if column == "course_id":
            return self.course_key
        if column == "org":
            return self.course_key.split(":")[1].split("+")[0]
        if column == "username":
            return username
        if column == "email":
            return f"{username.replace('.', '_')}@example.org"
        if column in ("name", "first_name", "last_name") and table.startswith("auth_user"):
            return username.replace("_", " ").replace(".", " ").title()
        if column == "mode":
            return ("audit", "verified", "honor", "verified")[row % 4]
        if column == "last_login":
            # Each course's export sees the user's login as of its own export date.
            return edx_datetime(datetime(2023, 1, 5, 9, 30) + timedelta(days=40 * self.index))
        if column == "date_joined":
            return edx_datetime(datetime(2016, 8, 20, 10, 0) + timedelta(hours=user_id % 997))
        if column in ("module_id", "usage_key", "item_id", "checkpoint_location"):
            return self.block("problem" if column != "usage_key" else "sequential")
        if column == "done":
            return "na"
        if column == "module_type":
            return ("problem", "sequential", "chapter", "video")[row % 4]
        if column == "state":
            # JSON text: its own escapes (`\\n`, `\\\\`) reach the file backslash-escaped again.
            answer = ("x^2+1", "\\frac{1}{2}", "line one\nline two", "42")[row % 4]
            return json.dumps({"attempts": row + 1, "student_answers": {self.hex(8): answer}})
        if column == "meta":
            return '{"old_names": [["Old Name", "typo", "2019-01-01T00:00:00"]]}' if row else ""
        if column in ("value",) and table == "user_api_usercoursetag":
            return str(row % 2)
        if column == "key" and table == "user_api_usercoursetag":
            return "xblock.partition_service.partition_0"
        if column == "status":
            return {
                "certificates_generatedcertificate": ("downloadable", "notpassing"),
                "submissions_submission": ("A", "D"),
                "workflow_assessmentworkflow": ("done", "peer", "waiting"),
            }.get(table, ("active",))[row % 2]
        if column in ("grade", "percent_grade", "earned_all", "earned_graded", "max_grade"):
            return edx_number((0.0, 0.75, 1.0, 0.5)[row % 4])
        if column in ("possible_all", "possible_graded"):
            return edx_number(1.0)
        if column == "letter_grade":
            return ("", "Pass", "A", "")[row % 4]
        if column in ("code", "language"):
            return ("en", "es", "zh", "fr")[row % 4]
        if column == "country":
            return ("US", "CO", "IN", "NG")[row % 4]
        if column in ("gender", "level_of_education"):
            return (("m", "f", "o", ""), ("b", "m", "hs", "p"))[column == "level_of_education"][
                row % 4
            ]
        if column == "year_of_birth":
            return str(1975 + 4 * row)
        if column == "ip_address":
            return f"18.9.{row}.{20 + self.index}"
        if column in ("download_url",):
            return f"https://courses.edx.org/certificates/{self.hex()}"
        if hint.startswith("datetime") or hint.startswith("date"):
            moment = self.moment(row, "(6)" in hint)
            return moment.strftime("%Y-%m-%d") if hint.startswith("date ") else edx_datetime(moment)
        if hint.startswith("tinyint"):
            return str((row + len(column)) % 2)
        if hint.startswith(("int", "smallint", "bigint")):
            return str(1 + (row * 7 + len(column)) % 40)
        if hint.startswith("double"):
            return edx_number(round(self.random.random(), 4))
        if "hash" in column or "uuid" in column or column in ("key", "team_id", "uuid"):
            return self.hex(40 if "(40)" in hint else 32)
        if hint.startswith("longtext") or column in ("description", "bio", "goals"):
            return FREE_TEXT[(row + self.index + len(column)) % len(FREE_TEXT)]
        return f"{column.replace('_', ' ')} {row + 1}"

    def export(self, table: str, rows: int = 4) -> bytes:
        columns = self.columns.get(table, PLACEHOLDER_COLUMNS)
        lines = ["\t".join(name for name, _, _ in columns)]
        for row in range(rows):
            values = [self.value(table, name, hint, note, row) for name, hint, note in columns]
            lines.append("\t".join(edx_text(value) for value in values))
        return ("\n".join(lines) + "\n").encode("utf-8")


def fixture(folder: str, table: str) -> Path:
    return FIXTURES / folder / f"{DEMO}-{table}-acceptance.sql"


def main() -> None:
    shutil.rmtree(TARGET / "db_table", ignore_errors=True)
    columns = documented_columns()
    for table in TABLES:
        for index, (course, quoting) in enumerate(GENERATED):
            place(
                ExportGenerator(course, index, columns).export(table),
                table,
                "prod",
                course,
                quoting,
            )
        real = fixture("research_package_tsv", table)
        if real.exists():
            place(real.read_bytes(), table, "prod", DEMO, NECESSARY)
            obfuscated = fixture("research_package_tsv_obfuscated", table).read_bytes()
            place(obfuscated, table, "prod", OBFUSCATED, NEVER)
            # Edge is staging data: same course, different content, never ingested.
            place(obfuscated, table, "edge", DEMO, NECESSARY)
        else:
            edge = ExportGenerator(EDGE_COURSE, 1, columns, "edge").export(table, rows=2)
            place(edge, table, "edge", EDGE_COURSE, NECESSARY)
    pre2021 = (
        FIXTURES
        / "research_package_tsv_pre2021"
        / "input"
        / f"{DEMO}-auth_userprofile-acceptance.sql"
    )
    place(pre2021.read_bytes(), "auth_userprofile", "prod", PRE2021, NECESSARY)
    for index, export in enumerate(
        sorted((FIXTURES / "studentmodule_export_header_first").glob("*.sql"))
    ):
        course = export.name.split("-courseware_studentmodule-")[0]
        place(
            export.read_bytes(),
            "courseware_studentmodule",
            "prod",
            course,
            (NEVER, NECESSARY)[index % 2],
        )


if __name__ == "__main__":
    main()
