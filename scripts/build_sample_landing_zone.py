"""Builds the sample landing zone shipped in the package from ../shared/realdata fixtures.

Laid out as SPEC §2: db_table/<table>/<prod|edge>/<course_id>/<sha256-of-content>.tsv.
Run from the repository root: `uv run python scripts/build_sample_landing_zone.py`.
"""

import hashlib
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "realdata" / "edx_fixtures" / "edx-analytics-pipeline"
TARGET = ROOT / "edxorg_s3_ingest" / "sample_landing_zone"
DEMO = "edX-DemoX-Demo_Course"
OBFUSCATED = "MITx-6.002x-2012_Fall"
PRE2021 = "MITx-14.73x-2013_Spring"
TABLES = (
    "auth_user",
    "auth_userprofile",
    "certificates_generatedcertificate",
    "courseware_studentmodule",
    "student_courseenrollment",
    "student_languageproficiency",
    "teams",
    "teams_membership",
    "user_api_usercoursetag",
    "wiki_article",
    "wiki_articlerevision",
)


def place(source: Path, table: str, system: str, course: str) -> None:
    data = source.read_bytes()
    folder = TARGET / "db_table" / table / system / course
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{hashlib.sha256(data).hexdigest()}.tsv").write_bytes(data)


def main() -> None:
    shutil.rmtree(TARGET / "db_table", ignore_errors=True)
    for table in TABLES:
        name = f"{DEMO}-{table}-acceptance.sql"
        place(FIXTURES / "research_package_tsv" / name, table, "prod", DEMO)
        place(FIXTURES / "research_package_tsv_obfuscated" / name, table, "prod", OBFUSCATED)
        # Edge is staging data: same course, different content, never ingested.
        place(FIXTURES / "research_package_tsv_obfuscated" / name, table, "edge", DEMO)
    pre2021 = (
        FIXTURES
        / "research_package_tsv_pre2021"
        / "input"
        / f"{DEMO}-auth_userprofile-acceptance.sql"
    )
    place(pre2021, "auth_userprofile", "prod", PRE2021)
    for export in sorted((FIXTURES / "studentmodule_export_header_first").glob("*.sql")):
        course = export.name.split("-courseware_studentmodule-")[0]
        place(export, "courseware_studentmodule", "prod", course)


if __name__ == "__main__":
    main()
