"""The edX tables this code location ingests, and what we know about their columns."""

import csv
from functools import cache
from importlib.resources import files

# The 44 tables of the edX research data package (SPEC §3). Adding a table is one line here.
TABLES: tuple[str, ...] = (
    "assessment_assessment",
    "assessment_assessmentfeedback",
    "assessment_assessmentfeedback_assessments",
    "assessment_assessmentfeedback_options",
    "assessment_assessmentfeedbackoption",
    "assessment_assessmentpart",
    "assessment_criterion",
    "assessment_criterionoption",
    "assessment_peerworkflow",
    "assessment_peerworkflowitem",
    "assessment_rubric",
    "assessment_studenttrainingworkflow",
    "assessment_studenttrainingworkflowitem",
    "assessment_trainingexample",
    "assessment_trainingexample_options_selected",
    "auth_user",
    "auth_userprofile",
    "certificates_generatedcertificate",
    "course",
    "course_groups_cohortmembership",
    "course_structure",
    "courseware_studentmodule",
    "credit_crediteligibility",
    "django_comment_client_role_users",
    "examples",
    "grades_persistentcoursegrade",
    "grades_persistentsubsectiongrade",
    "student_anonymoususerid",
    "student_courseaccessrole",
    "student_courseenrollment",
    "student_languageproficiency",
    "submissions_score",
    "submissions_scoresummary",
    "submissions_studentitem",
    "submissions_submission",
    "teams",
    "teams_membership",
    "user_api_usercoursetag",
    "user_id_map",
    "validate",
    "wiki_article",
    "wiki_articlerevision",
    "workflow_assessmentworkflow",
    "workflow_assessmentworkflowstep",
)

# The columns the upstream `edxorg_archive` step appends to every export it writes to the landing
# zone (SPEC §2), with what they hold. Loaded like any other column; listed here for the docs
# (asset column schema, dbt sources).
UPSTREAM_COLUMNS: tuple[tuple[str, str], ...] = (
    (
        "extracted_course_key",
        "The course id of the export's file name, e.g. MITx-6.002x-2012_Fall: the name of the "
        "course folder, so always equal to _course_id.",
    ),
    ("extracted_course_organization", "The organization part of the course id, e.g. MITx."),
    ("extracted_course_number", "The course number part of the course id, e.g. 6.002x."),
    ("extracted_course_run", "The run part of the course id, e.g. 2012_Fall."),
    (
        "extracted_source_platform",
        "edxorg_ plus the export's system: edxorg_prod here (edge files are never loaded).",
    ),
    (
        "row_hash",
        "SHA-256 (hex) of the export's own column values as edX printed them (NULL as the text "
        "NULL, escapes undecoded), concatenated in file order, an empty field as ''; upstream's "
        "deduplication key.",
    ),
)

TABLE_PREFIX = "raw__edxorg__s3__tables__"
REJECTS_TABLE = "raw__edxorg__s3__rejected_rows"


class UnknownTableError(ValueError):
    pass


def destination_table(table: str) -> str:
    """The name of the consolidated table for an edX table (SPEC §3)."""
    return TABLE_PREFIX + table


def parse_table_list(text: str | None) -> list[str]:
    """Turns `--tables a,b` into a checked list; None or empty means every table."""
    if not text:
        return list(TABLES)
    wanted = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in TABLES]
    if unknown:
        raise UnknownTableError(
            f"unknown table(s): {', '.join(unknown)}. "
            "Run `edxorg-s3-ingest --list-tables` for the 44 known tables."
        )
    return list(dict.fromkeys(wanted))


@cache
def known_columns() -> dict[str, list[tuple[str, str, str]]]:
    """Column name, type hint and note per table, from the edX export documentation.

    Informational only: the loader takes columns from each file's header, never from here.
    """
    columns: dict[str, list[tuple[str, str, str]]] = {}
    text = files(__package__).joinpath("edx_table_columns.tsv").read_text(encoding="utf-8")
    for row in csv.DictReader(text.splitlines(), delimiter="\t"):
        columns.setdefault(row["table"], []).append((row["column"], row["type_hint"], row["note"]))
    return columns
