"""The dlt source of the edX tables: one resource per table (SPEC §3), named after it, whose body
(source.read_table) reads its table's new prod exports.

Apart from source.py so that building the source imports neither pyarrow nor the reader: the
Dagster definitions build it for its resources' names (`loads.source`, defs.yaml), in every
process that loads the code location; a resource imports the reader when it runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import dlt

from edxorg_s3_ingest.report import TableReport
from edxorg_s3_ingest.tables import TABLES, destination_table

if TYPE_CHECKING:
    from dlt.extract.resource import DltResource

    from edxorg_s3_ingest.state.work import Work
    from edxorg_s3_ingest.stores.lake_uploads import EarlyUploads


def read_table(
    table: str, work: Work, report: TableReport, uploads: EarlyUploads | None = None
) -> Iterator:
    """A table's resource body: source.read_table, imported when a load runs it."""
    from edxorg_s3_ingest.loading.source import read_table as read

    yield from read(table, work, report, uploads)


def table_resource(
    table: str, work: Work, report: TableReport, uploads: EarlyUploads | None = None
) -> DltResource:
    return dlt.resource(
        read_table,
        name=table,
        table_name=destination_table(table),
        write_disposition="append",
    )(table, work, report, uploads)


@dlt.source(name="edxorg_s3", max_table_nesting=0)
def edxorg_s3_source(
    tables: list[str] | None = None,
    works: dict[str, Work] | None = None,
    reports: dict[str, TableReport] | None = None,
    uploads: dict[str, EarlyUploads] | None = None,
) -> list[DltResource]:
    """One resource per edX table, named after the table (SPEC §3), each reading what its
    table's `Work` plans (table_load.TableLoad plans it); `uploads`: where a table's staged
    files go as they are written (lake_uploads.py)."""
    works, reports, uploads = works or {}, reports or {}, uploads or {}
    return [
        table_resource(
            table, works.get(table), reports.get(table) or TableReport(table), uploads.get(table)
        )
        for table in (tables or TABLES)
    ]
