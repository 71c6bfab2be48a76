"""The qa / production store: Iceberg tables on S3, registered in AWS Glue (SPEC §8).

`<lake_url>/<table_name>/` holds each table's data and metadata; the Glue database holds its entry.

- Edx tables are unpartitioned, and their data files follow bytes, not courses. A load's
  staged Parquet files (staged_files.py: a large source file's rows, one course; or a pack of
  small courses' rows, up to SHARED_FILE_BYTES of source files) become its data files as they
  are, their rows never decoded or encoded again: a course's file of ALONE_BYTES or more alone,
  the others with the same columns joined (their row groups one after the other) into files of
  up to JOINED_BYTES; each with the table's field ids stamped into its footer
  (parquet_footer.py). Each file records exact `_course_id` bounds in its metrics. Replacing a
  course deletes the files that hold only replaced courses and rewrites (copy-on-write) the few
  that also hold others: their rows copied as they are (load ids included), with the load's
  other staged files, into files of about TARGET_FILE_BYTES of Arrow data. Tables created
  partitioned by `identity(_course_id)` (one file per course per load) are moved to this layout
  by their next load: their old files hold one course each and are deleted whole when it is
  replaced.
- One load of one table is ONE snapshot: its courses' rows deleted and its new files added
  in a single overwrite, with any new columns added (by name) in the same transaction.
- Each snapshot of a load carries the load id and the table's incremental state in its summary:
  a pointer to a gzipped JSON object under `<lake_url>/_edxorg_s3_ingest_state/<table_name>/`
  (table_state.py), written before the commit. The state advances in the same atomic commit as
  the rows; a commit is made only if the table is still at the snapshot the run planned from.
- Types are Athena-readable: string, long, timestamptz (microseconds); format v2.

AWS access goes through one boto3 session (the standard credential chain, refreshed on long runs)
for Glue and the files (lake_io.py; s3fs, the same chain via aiobotocore, only where pyiceberg's
Arrow reader scans data files). `AWS_ENDPOINT_URL`,
`AWS_ENDPOINT_URL_S3` and `AWS_ENDPOINT_URL_GLUE` are honoured; the region defaults to us-east-1,
where the edX buckets live.
"""

import functools
import gzip
import itertools
import json
import logging
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from functools import cached_property
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.catalog.glue import GlueCatalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    NoSuchIcebergTableError,
    NoSuchNamespaceError,
    NoSuchTableError,
    TableAlreadyExistsError,
)
from pyiceberg.expressions import AlwaysTrue, And, BooleanExpression, EqualTo, In
from pyiceberg.io.pyarrow import ArrowScan, schema_to_pyarrow
from pyiceberg.manifest import DataFile
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import FileScanTask, Table, Transaction
from pyiceberg.table.snapshots import ancestors_of
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import IcebergType, LongType, NestedField, StringType, TimestamptzType

from edxorg_s3_ingest.crashpoints import crashpoint
from edxorg_s3_ingest.landing.aws import (
    ACCESS_DENIED,
    BAD_CREDENTIALS,
    CREDENTIALS_HINT,
    DEFAULT_REGION,
    NO_CREDENTIALS,
    NO_SUCH_BUCKET,
    aws_environment,
    aws_error_code,
    caused_by,
    endpoint_note,
    explain_s3_error,
    glue_client,
    redact,
    s3_client,
    s3_endpoint,
    safe_cause,
)
from edxorg_s3_ingest.reading.lineage import LINEAGE, REJECTS_SCHEMA
from edxorg_s3_ingest.state.table_state import StateMovedError, StoredState, damaged
from edxorg_s3_ingest.stores import LoadCommit
from edxorg_s3_ingest.stores.iceberg_files import (
    DataFileWriter,
    data_file_name,
    data_files,
    data_location,
    fits,
    joinable,
    staged_data_file,
    uploaded_data_file,
)
from edxorg_s3_ingest.stores.lake_io import LakeFileIO
from edxorg_s3_ingest.stores.lake_state import STATE, STATE_FOLDER, state_location
from edxorg_s3_ingest.stores.lake_uploads import EarlyUploads, UploadedFile
from edxorg_s3_ingest.tables import REJECTS_TABLE

log = logging.getLogger(__name__)

# Snapshot summary keys that make every write idempotent (see `_applied`).
LOAD_ID = "edxorg-s3-ingest.load-id"
TABLE = "edxorg-s3-ingest.table"
OPERATION = "edxorg-s3-ingest.operation"
# The rejects table's rows are written in chunks of about this many Arrow bytes (bounded memory).
CHUNK_BYTES = 128 << 20
TARGET_FILE_BYTES = 512 << 20
"""Arrow bytes per data file written again (small staged files, kept rows of rewritten files;
pyiceberg's measure of a file's size, as its `write.target-file-size-bytes` default): ~60-130
MB of zstd Parquet for edX rows. Files are written streaming: memory holds one row group."""
ALONE_BYTES = 16 << 20
"""A course whose staged Parquet file (one course) has this many bytes gets a data file of its
own, that file as it is: replacing it rewrites no other course, and replacing a small course
never rewrites it."""
JOINED_BYTES = 128 << 20
"""The other staged files (packs of small courses' rows, smaller courses' own files) with the
same columns are joined into data files of up to this many bytes (row groups copied, not
decoded): a load's rows are a few files of a useful size, whatever its courses."""
EARLY_UPLOADS_ENV = "EDXORG_S3_INGEST_EARLY_UPLOADS"
"""`1`: a load's data files are uploaded while it reads (lake_uploads.py), not by its commit.
Off by default: on a moto server sharing the loader's 2 cores it cost ~0.7 s of CPU and wall
more than the commit's upload (qa-load, quiet machine: 7.65 s against 6.96 s); against S3,
where an upload is network time rather than the pod's CPU, it takes the upload off each
table's tail (not measured yet)."""
COURSE_METRICS = "write.metadata.metrics.column._course_id"
RETRIES = "commit.retry.num-retries"
TABLE_PROPERTIES = {
    "format-version": "2",
    "write.parquet.compression-codec": "zstd",
    # Old metadata.json files are removed as new ones are committed.
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "50",
    # The rejects table is shared by the 44 pipelines, which may commit at the same time:
    # pyiceberg commits its appends again on the new snapshot.
    RETRIES: "10",
}
EDX_TABLE_PROPERTIES = {
    **TABLE_PROPERTIES,
    # Never: a load's commit planned from the table's state, and must fail if the table moved
    # on (StateMovedError: the load plans again), not be re-applied on top of another run's.
    RETRIES: "0",
    # Exact bounds (not the default 16-character prefix, which edX course ids share): a scan
    # for replaced courses skips the files that cannot hold them, and a file whose bounds are
    # equal holds one course.
    COURSE_METRICS: "full",
}
EDX_LAYOUT = {key: EDX_TABLE_PROPERTIES[key] for key in (RETRIES, COURSE_METRICS)}
"""What a table created by an earlier version of this store gets once, with its move to the
unpartitioned layout."""
S3_NEEDS = "s3:ListBucket, s3:GetObject, s3:PutObject and s3:DeleteObject"
GLUE_NEEDS = (
    "glue:GetDatabase, glue:CreateDatabase (first run only), glue:GetTable, glue:CreateTable "
    "and glue:UpdateTable"
)


class LakeError(RuntimeError):
    """The lake (S3 bucket or Glue database) cannot be used; the message says what to fix."""


def iceberg_type(arrow_type: pa.DataType) -> IcebergType:
    """Athena-readable types only: source columns are strings, lineage adds long and timestamptz."""
    if pa.types.is_integer(arrow_type):
        return LongType()
    if pa.types.is_timestamp(arrow_type):
        return TimestamptzType()
    return StringType()


def iceberg_schema(arrow_schema: pa.Schema) -> Schema:
    return Schema(
        *(
            NestedField(number, field.name, iceberg_type(field.type), required=False)
            for number, field in enumerate(arrow_schema, start=1)
        )
    )


def identity_spec(schema: Schema, column: str) -> PartitionSpec:
    source = schema.find_field(column)
    return PartitionSpec(
        PartitionField(source.field_id, 1000, IdentityTransform(), column), spec_id=0
    )


@functools.cache
def _glue_catalog(_environment: tuple) -> GlueCatalog:
    """One catalog per process and AWS environment (boto3 clients are costly to build)."""
    properties = {
        # boto3 (and s3fs for Arrow scans) rather than pyarrow's own S3 client: the same
        # botocore credential chain as Glue.
        "py-io-impl": f"{LakeFileIO.__module__}.{LakeFileIO.__qualname__}",
        "s3.region": boto3.Session().region_name or DEFAULT_REGION,
    }
    if endpoint := s3_endpoint():
        properties["s3.endpoint"] = endpoint
    return GlueCatalog("edxorg_lake", client=glue_client(), **properties)


def glue_catalog() -> GlueCatalog:
    return _glue_catalog(aws_environment())


class IcebergStore:
    def __init__(self, lake_url: str, database: str) -> None:
        self.lake_url = lake_url.rstrip("/")
        self.database = database
        self._committed_rows: dict[str, int] = {}
        """Each table's rows as this store's last commit to it left them (its snapshot's
        summary): the load's report needs no other read of the table's metadata."""

    @cached_property
    def catalog(self) -> GlueCatalog:
        return glue_catalog()

    def uri(self, table_name: str) -> str:
        return f"{self.lake_url}/{table_name}"

    def preflight(self) -> None:
        """Fails fast, before any file is read, when the lake cannot be reached: the Glue
        database (missing is fine: it is created on first write) and the lake bucket."""
        with self._explained("checking the lake"), suppress(NoSuchNamespaceError):
            self.catalog.load_namespace_properties(self.database)
        bucket, _, prefix = self.lake_url.removeprefix("s3://").partition("/")
        failure = None
        try:
            s3_client().list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/", MaxKeys=1)
        except Exception as error:
            message = self._explain_s3(error, "using the lake")
            if message is None:
                code = aws_error_code(error) or type(error).__name__
                message = f"using the lake {self.lake_url}: S3 answered {code} ({error})"
            failure = LakeError(redact(message))
            failure.__cause__ = safe_cause(error)
        if failure is not None:
            raise failure

    # -- the TableStore protocol --------------------------------------------------------------

    def read_state(self, table_name: str) -> StoredState:
        """The state the table's current snapshot points to (empty for a table never loaded,
        or last written before the state lived in the lake: its next load reads every course's
        newest file once)."""
        with self._explained(f"reading the state of {table_name}"):
            table = self._load(table_name)
            snapshot = table.current_snapshot() if table else None
            if snapshot is None:
                return StoredState()
            location = state_location(
                {
                    **ancestor.summary.additional_properties,
                    "operation": ancestor.summary.operation.value,
                }
                for ancestor in ancestors_of(snapshot, table.metadata)
                if ancestor.summary is not None
            )
            if not location:
                return StoredState(version=snapshot.snapshot_id)
            try:
                with table.io.new_input(location).open() as stream:
                    state = json.loads(gzip.decompress(stream.read()))
            except (OSError, ValueError, EOFError) as error:
                raise damaged(table_name, location, error, snapshot.snapshot_id) from error
            return StoredState(state, snapshot.snapshot_id)

    def early_uploads(self, table_name: str) -> EarlyUploads | None:
        """The load's data files uploaded as its staged files are written (lake_uploads.py),
        grouped as `_LoadFiles` groups them, when EARLY_UPLOADS_ENV is 1; else None (all
        uploaded by the commit)."""
        if os.environ.get(EARLY_UPLOADS_ENV, "").strip() != "1":
            return None
        return EarlyUploads(f"{self.uri(table_name)}/data", ALONE_BYTES, JOINED_BYTES)

    def recover(self, table_name: str) -> None:
        """Nothing to do: an Iceberg commit is atomic (a killed one left unreferenced files at
        most, which table maintenance removes)."""

    def commit(self, load: LoadCommit) -> None:
        """ONE snapshot: the load's rows in, its courses' earlier rows out (a full refresh:
        every earlier file, the columns reset to the load's), and the snapshot's summary
        pointing to the load's state, written beside the tables first. Committed only if the
        table's current snapshot is still `load.base`, the one the run planned from: checked
        here and again by pyiceberg's commit (Glue's optimistic lock), otherwise
        StateMovedError and nothing changes."""
        used: list[UploadedFile] = []
        try:
            self._commit_load(load, used)
        finally:
            if load.uploads is not None:
                load.uploads.close(used)

    def _commit_load(self, load: LoadCommit, used: list[UploadedFile]) -> None:
        headers = [column for entry in load.courses.values() for column in entry["columns"]]
        columns = _columns(load.staged, headers, LINEAGE)
        courses = set(load.courses)
        with self._explained(f"committing {load.table_name}"):
            table = self._in_layout(self._table(load.table_name, columns))
            current = table.current_snapshot()
            found = current.snapshot_id if current else None
            if load.already_done(found, _summary(current).get(LOAD_ID) if current else None):
                log.info("%s: load %s is already in the table", load.table_name, load.load_id)
                return
            marker = {
                LOAD_ID: load.load_id,
                OPERATION: "rebuild" if load.full_refresh else "replace-courses",
                STATE: self._save_state(table, load.table_name, load.load_id, load.state),
            }
            crashpoint("iceberg.state_written")
            try:
                with table.transaction() as transaction:
                    if load.full_refresh:
                        _reset_columns(transaction, columns)
                        condition, deleted, rewritten = AlwaysTrue(), self._files(table), []
                    else:
                        _add_columns(transaction, columns)
                        condition = _matching("_course_id", courses) if courses else None
                        deleted, rewritten = self._holding(table, courses)
                    with _snapshot(transaction, marker, condition, deleted) as snapshot:
                        writing = _LoadFiles(transaction, table, snapshot.commit_uuid, used)
                        for file in writing.files(load, rewritten, courses):
                            snapshot.append_data_file(file)
                            crashpoint("iceberg.data_file_written")
                    crashpoint("iceberg.manifests_written")
                    crashpoint("iceberg.before_commit")
            except CommitFailedException as error:
                raise StateMovedError(load.table_name, load.base, "a newer snapshot") from error
            crashpoint("iceberg.committed")
            # pyiceberg's commit leaves the table object at the snapshot it made.
            self._committed_rows[load.table_name] = _total_records(table.current_snapshot())

    def _in_layout(self, table: Table) -> Table:
        """The table as this store writes it: a table created by an earlier version (partitioned
        by course, commits retried, 16-character course bounds) is changed once, alone, with no
        new snapshot; its data files stay as they are."""
        changes = {
            key: value for key, value in EDX_LAYOUT.items() if table.properties.get(key) != value
        }
        if not changes and not table.spec().fields:
            return table
        try:
            with table.transaction() as transaction:
                if changes:
                    transaction.set_properties(changes)
                if table.spec().fields:
                    with transaction.update_spec() as spec:
                        for field in table.spec().fields:
                            spec.remove_field(field.name)
            log.info("%s: moved to the unpartitioned layout", table.name())
        except CommitFailedException:
            log.info("%s: changed by another run meanwhile", table.name())
        return self._load(table.name()[-1])

    @staticmethod
    def _holding(table: Table, courses: set[str]) -> tuple[list[DataFile], list[FileScanTask]]:
        """The data files holding rows of `courses`: all of them, and the scan tasks of those
        that also hold rows of other courses (to be written again without `courses`)."""
        if table.current_snapshot() is None or not courses:
            return [], []
        deleted, rewritten = [], []
        for task in table.scan(_matching("_course_id", courses)).plan_files():
            held = _courses_in(table, task)
            if held & courses:
                deleted.append(task.file)
                if not held <= courses:
                    rewritten.append(task)
        return deleted, rewritten

    def _save_state(self, table: Table, table_name: str, load_id: str, state: dict) -> str:
        """Writes the state object of a commit; a new name each time, never overwritten (a
        commit that fails leaves one unreferenced object). Outside the table's location, where
        table maintenance (orphan-file removal) would delete it as no Iceberg file."""
        location = (
            f"{self.lake_url}/{STATE_FOLDER}/{table_name}/{load_id}.{uuid.uuid4().hex}.json.gz"
        )
        payload = gzip.compress(json.dumps(state, separators=(",", ":")).encode(), 6)
        with table.io.new_output(location).create(overwrite=True) as stream:
            stream.write(payload)
        return location

    def append_rejects(self, table: str, load_id: str, staged: list[Path]) -> None:
        """Adds the load's rejects and, in the same snapshot, removes any earlier rejects of the
        same source files (a file read again after a kill or a state reset), as the dev store
        keeps one rejects file per source file. The rejects table is partitioned by `table`,
        so the data files holding such rows are rewritten without them."""
        marker = {LOAD_ID: load_id, TABLE: table, OPERATION: "append-rejects"}
        columns = _columns(staged, [], REJECTS_SCHEMA)
        urls = _file_paths(staged)
        with self._explained(f"appending the rejected rows of {table}"):
            rejects = self._table(REJECTS_TABLE, columns)
            if self._applied(rejects, marker, {OPERATION: "drop-rejects", TABLE: table}):
                log.info("%s: rejects of load %s are already in the table", table, load_id)
                return
            with rejects.transaction() as transaction:
                _add_columns(transaction, columns)
                condition = And(EqualTo("table", table), _matching("_dlt_file_path", urls or {""}))
                earlier = self._tasks(rejects, "table", condition) if urls else []
                kept = _rows_not_from(transaction, rejects, earlier, urls)
                batches = itertools.chain(kept, self._batches(staged))
                deleted = [task.file for task in earlier]
                self._commit(transaction, rejects, condition, deleted, batches, marker)
                crashpoint("iceberg.rejects_before_commit")
            crashpoint("iceberg.rejects_committed")

    def drop_rejects(self, table: str) -> None:
        with self._explained(f"deleting the rejected rows of {table}"):
            rejects = self._load(REJECTS_TABLE)
            if rejects is None:
                return
            condition = _matching("table", {table})
            deleted = self._files(rejects, "table", {table})
            if deleted:
                marker = {OPERATION: "drop-rejects", TABLE: table}
                with rejects.transaction() as transaction:
                    self._commit(transaction, rejects, condition, deleted, iter(()), marker)

    def row_count(self, table_name: str) -> int:
        """The table's rows: as this store's commit left them, else from its current snapshot."""
        if table_name in self._committed_rows:
            return self._committed_rows.pop(table_name)
        with self._explained(f"counting the rows of {table_name}"):
            table = self._load(table_name)
            return _total_records(table.current_snapshot() if table else None)

    # -- tables -------------------------------------------------------------------------------

    def _load(self, table_name: str) -> Table | None:
        try:
            table = self.catalog.load_table((self.database, table_name))
        except NoSuchIcebergTableError as error:
            raise LakeError(
                f"Glue table {self.database}.{table_name} exists but is not an Iceberg table: "
                "drop or rename it, then run again."
            ) from error
        except NoSuchTableError:
            return None
        location = table.metadata.location.rstrip("/")
        if location != self.uri(table_name):
            raise LakeError(
                f"Glue table {self.database}.{table_name} points to {location}, not "
                f"{self.uri(table_name)}: this loader only writes under {self.lake_url}. Drop the "
                "Glue entry (or fix its location), then run again with --full-refresh."
            )
        return table

    def _table(self, table_name: str, columns: pa.Schema) -> Table:
        """The table, created (with its Glue database if need be) on first use: an edX table
        unpartitioned, the rejects table partitioned by `table`."""
        table = self._load(table_name)
        if table is not None:
            return table
        schema = iceberg_schema(columns)
        create = functools.partial(
            self.catalog.create_table,
            (self.database, table_name),
            schema=schema,
            location=self.uri(table_name),
            **(
                {"partition_spec": identity_spec(schema, "table"), "properties": TABLE_PROPERTIES}
                if table_name == REJECTS_TABLE
                else {"properties": EDX_TABLE_PROPERTIES}
            ),
        )
        try:
            try:
                # The metadata file is written before the Glue entry: a missing or denied lake
                # bucket fails here, before anything (even the database) is created in Glue.
                table = create()
            except NoSuchNamespaceError:
                self._create_database()
                table = create()
        except TableAlreadyExistsError:  # created by a concurrent run
            return self._load(table_name)
        log.info(
            "created Iceberg table %s.%s at %s", self.database, table_name, self.uri(table_name)
        )
        return table

    def _create_database(self) -> None:
        try:
            self.catalog.create_namespace(
                self.database,
                {"description": "Raw data lake tables (edxorg-s3-ingest among others)"},
            )
        except NamespaceAlreadyExistsError:
            return
        log.warning("Glue database %s did not exist: created it", self.database)

    # -- writing ------------------------------------------------------------------------------

    @staticmethod
    def _applied(table: Table, marker: dict, reset: dict) -> bool:
        """Whether a snapshot with `marker` is in the table's current history, and not undone
        by a later one matching `reset` (a full refresh's drop)."""
        for snapshot in ancestors_of(table.current_snapshot(), table.metadata):
            summary = snapshot.summary
            if summary is None:
                continue
            if all(summary[key] == value for key, value in marker.items()):
                return True
            if all(summary[key] == value for key, value in reset.items()):
                return False
        return False

    @staticmethod
    def _tasks(table: Table, column: str, condition: BooleanExpression) -> list:
        """The scan tasks of the data files that may hold rows matching `condition` (one
        value of the identity partition `column`, and more)."""
        if table.current_snapshot() is None:
            return []
        fields = [(field.name, str(field.transform)) for field in table.spec().fields]
        if fields != [(column, "identity")] or len(table.specs()) != 1:
            raise LakeError(
                f"{table.name()} is not partitioned by identity({column}) as this loader creates "
                "its tables. Drop the table and run again with --full-refresh."
            )
        return list(table.scan(condition).plan_files())

    @staticmethod
    def _files(table: Table, column: str | None = None, values: set[str] = frozenset()) -> list:
        """The data files holding exactly the rows where `column` is one of `values` (all files
        when `column` is None).

        The table must be partitioned by identity(column), as this store creates the rejects
        table: then every file holds one value only, and files are dropped whole.
        """
        if table.current_snapshot() is None:
            return []
        if column is None:
            return [task.file for task in table.scan().plan_files()]
        files = [task.file for task in table.scan(_matching(column, values)).plan_files()]
        fields = [(field.name, str(field.transform)) for field in table.spec().fields]
        if fields != [(column, "identity")] or len(table.specs()) != 1:
            raise LakeError(
                f"{table.name()} is not partitioned by identity({column}) as this loader creates "
                "its tables: replacing rows would need rewriting files. Drop the table and run "
                "again with --full-refresh."
            )
        return [file for file in files if file.partition[0] in values]

    @staticmethod
    def _batches(staged: list[Path]) -> Iterator[pa.RecordBatch]:
        for path in staged:
            yield from pq.ParquetFile(path).iter_batches(batch_size=65_536)

    @staticmethod
    def _commit(
        transaction: Transaction,
        table: Table,
        condition: BooleanExpression | None,
        deleted: list[DataFile],
        batches: Iterator[pa.RecordBatch],
        properties: dict,
    ) -> None:
        """One snapshot of the rejects table: `deleted` files (the rows matching `condition`)
        out, `batches` in, written chunk by chunk; none when nothing changes (`_snapshot`: the
        rejects table is shared, and its appends never conflict).
        """
        metadata = transaction.table_metadata
        arrow_schema = schema_to_pyarrow(metadata.schema(), include_field_ids=False)
        chunks = _chunks((_conform(batch, arrow_schema) for batch in batches), arrow_schema)
        first = next(chunks, None)
        if first is None and not deleted:
            return
        with _snapshot(transaction, properties, condition, deleted) as snapshot:
            counter = itertools.count()
            for chunk in itertools.chain([first] if first is not None else [], chunks):
                for file in data_files(
                    transaction.table_metadata, chunk, table.io, snapshot.commit_uuid, counter
                ):
                    snapshot.append_data_file(file)
                    crashpoint("iceberg.data_file_written")
        crashpoint("iceberg.manifests_written")

    # -- errors -------------------------------------------------------------------------------

    @contextmanager
    def _explained(self, doing: str) -> Iterator[None]:
        """Turns AWS failures into a LakeError that names what to fix (credentials masked)."""
        failure = None
        try:
            yield
        except LakeError:
            raise
        except Exception as error:
            message = self._explain(error)
            if message is None:
                code = aws_error_code(error)
                if not code:
                    raise
                # An AWS error this store has no advice for: said as it is, credentials masked.
                message = f"AWS answered {code} ({type(error).__name__}: {error})"
            failure = LakeError(redact(f"{doing}: {message}"))
            failure.__cause__ = safe_cause(error)
        if failure is not None:
            raise failure

    def _explain(self, error: BaseException) -> str | None:
        code = aws_error_code(error)
        if code is None:
            return None
        if code == NO_CREDENTIALS:
            return f"no AWS credentials found for the lake ({self.lake_url}): {CREDENTIALS_HINT}."
        if caused_by(error, OSError):  # s3fs reports the lake's files as OSErrors
            return self._explain_s3(error, "using the lake")
        glue = f"Glue database {self.database}{endpoint_note('GLUE')}"
        if code in BAD_CREDENTIALS:
            return (
                f"AWS rejected the credentials ({code}) for {glue}: check AWS_PROFILE / "
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN (expired?)."
            )
        if code in ACCESS_DENIED:
            return f"access denied ({code}) by {glue}: the AWS identity needs {GLUE_NEEDS}."
        return None

    def _explain_s3(self, error: BaseException, doing: str) -> str | None:
        message = explain_s3_error(error, self.lake_url, doing, S3_NEEDS)
        if message and aws_error_code(error) in NO_SUCH_BUCKET:
            environment = self.database.removeprefix("ol_warehouse_").removesuffix("_raw")
            message += f" It must exist before loading DAGSTER_ENVIRONMENT={environment}."
        return message


@contextmanager
def _snapshot(
    transaction: Transaction,
    properties: dict,
    condition: BooleanExpression | None,
    deleted: list[DataFile],
) -> Iterator:
    """A snapshot under way with `deleted` (the files of the rows matching `condition`) out;
    the caller adds its files. Pure additions are a fast append, which never conflicts with
    concurrent appends; a replacement is an overwrite whose conflict check, should a
    concurrent commit force a retry, is limited to `condition`."""
    update = transaction.update_snapshot(snapshot_properties=properties)
    with update.overwrite() if deleted else update.fast_append() as snapshot:
        if deleted:
            snapshot.delete_by_predicate(condition)
        for file in deleted:
            snapshot.delete_data_file(file)
        yield snapshot


def _matching(column: str, values: set[str]) -> BooleanExpression:
    return EqualTo(column, next(iter(values))) if len(values) == 1 else In(column, values)


def _file_paths(staged: list[Path]) -> set[str]:
    """The source files (`_dlt_file_path`) whose rows the staged files hold."""
    urls: set[str] = set()
    for path in staged:
        if "_dlt_file_path" not in pq.read_schema(path).names:
            continue
        column = pq.read_table(path, columns=["_dlt_file_path"]).column(0)
        urls.update(value for value in pc.unique(column).to_pylist() if value is not None)
    return urls


def _rows_not_from(
    transaction: Transaction, table: Table, tasks: list, urls: set[str]
) -> Iterator[pa.RecordBatch]:
    """The rows of the files of `tasks` that do not come from the source files `urls`: what
    remains of those files once the earlier rejects of `urls` are removed."""
    schema = transaction.table_metadata.schema()
    scan = ArrowScan(transaction.table_metadata, table.io, schema, AlwaysTrue())
    wanted = pa.array(sorted(urls), pa.string())
    for task in tasks:
        rows = scan.to_table([task])
        keep = pc.invert(pc.is_in(rows.column("_dlt_file_path"), value_set=wanted))
        yield from rows.filter(pc.fill_null(keep, True)).to_batches()


def _columns(staged: list[Path], headers: list[str], required: pa.Schema) -> pa.Schema:
    """Every column of a load, by name, in file order: the staged files' columns, header-only
    files' columns (strings), then any of `required` still missing."""
    fields: dict[str, pa.Field] = {}
    for path in staged:
        for field in pq.read_schema(path):
            fields.setdefault(field.name, field)
    for name in headers:
        fields.setdefault(name, pa.field(name, pa.string()))
    for field in required:
        fields.setdefault(field.name, field)
    return pa.schema(list(fields.values()))


def _total_records(snapshot) -> int:
    return int(snapshot.summary["total-records"] or 0) if snapshot is not None else 0


def _summary(snapshot) -> Mapping[str, str]:
    return snapshot.summary if snapshot.summary is not None else {}


def _reset_columns(transaction: Transaction, columns: pa.Schema) -> None:
    """A rebuild's columns: the load's, in the table's order; columns no file has any more go."""
    wanted = set(columns.names)
    gone = [name for name in transaction.table_metadata.schema().column_names if name not in wanted]
    if gone:
        with transaction.update_schema() as update:
            for name in gone:
                update.delete_column(name)
    _add_columns(transaction, columns)


def _add_columns(transaction: Transaction, columns: pa.Schema) -> None:
    """Schema evolution by name: the load's columns the table does not have yet, at the end."""
    known = set(transaction.table_metadata.schema().column_names)
    new = [field for field in columns if field.name not in known]
    if new:
        with transaction.update_schema() as update:
            for field in new:
                update.add_column(field.name, iceberg_type(field.type))


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """The batch in the table's column order and types; columns it lacks are null."""
    columns = []
    for field in schema:
        index = batch.schema.get_field_index(field.name)
        if index < 0:
            columns.append(pa.nulls(batch.num_rows, field.type))
        else:
            columns.append(batch.column(index).cast(field.type))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _chunks(batches: Iterable[pa.RecordBatch], schema: pa.Schema) -> Iterator[pa.Table]:
    """Tables of about CHUNK_BYTES each: pyiceberg writes a partitioned table from a pa.Table."""
    pending: list[pa.RecordBatch] = []
    size = 0
    for batch in batches:
        if not batch.num_rows:
            continue
        pending.append(batch)
        size += batch.nbytes
        if size >= CHUNK_BYTES:
            yield pa.Table.from_batches(pending, schema)
            pending, size = [], 0
    if pending:
        yield pa.Table.from_batches(pending, schema)


class _LoadFiles:
    """The data files of one load of an edX table, written while its snapshot is under way."""

    def __init__(
        self,
        transaction: Transaction,
        table: Table,
        commit_uuid: uuid.UUID,
        used: list[UploadedFile] | None = None,
    ) -> None:
        self.used = used if used is not None else []
        self.metadata = transaction.table_metadata
        self.io = table.io
        self.commit_uuid = commit_uuid
        self.counter = itertools.count()
        self.schema = schema_to_pyarrow(self.metadata.schema(), include_field_ids=False)

    def writer(self) -> DataFileWriter:
        return DataFileWriter(
            self.metadata, self.io, self.commit_uuid, self.counter, TARGET_FILE_BYTES
        )

    def files(
        self, load: LoadCommit, rewritten: list[FileScanTask], courses: set[str]
    ) -> Iterator[DataFile]:
        """The staged files as they are: a large course's (ALONE_BYTES) alone, the others
        joined into files of up to JOINED_BYTES; those uploaded while the load read
        (lake_uploads.py) as they were uploaded, when they are exactly the staged files. When
        the load rewrites files (copy-on-write), its other staged files are written again with
        the rows those files keep (those of other courses): one file rather than two. So are
        staged files whose types are not the table's."""
        schema = self.metadata.schema()
        staged = [path for path in load.staged if pq.read_metadata(path).num_rows]
        if load.uploads is not None and not rewritten and self._takes(load.uploads):
            ready, staged = load.uploads.ready(staged, lambda path: fits(path, schema))
            for file, paths in ready:
                if strays := file.courses - courses:
                    raise RuntimeError(
                        f"{load.table_name}: staged rows of {sorted(strays)} not in manifest"
                    )
                data_file = uploaded_data_file(self.metadata, file, paths)
                self.used.append(file)  # completed: not to be aborted
                yield data_file
        again = [path for path in staged if not fits(path, schema)]
        alone = [path for path in staged if path not in again and _alone(path)]
        others = [path for path in staged if path not in again and path not in alone]
        if rewritten:
            again, others = [*again, *others], []
        for group in [[path] for path in alone] + joinable(others, JOINED_BYTES):
            for path in group:
                _check_courses(path, courses, load)
            name = data_file_name(self.counter, self.commit_uuid)
            yield staged_data_file(self.metadata, self.io, group, name)
        # Written again: a large course's rows in files of their own, the others packed.
        large = [path for path in again if _alone(path)]
        for path in large:
            yield from self.writer().files(self._rows(_staged_rows(path, courses, load)))
        packed = (
            batch
            for path in again
            if path not in large
            for batch in _staged_rows(path, courses, load)
        )
        yield from self.writer().files(
            self._rows(itertools.chain(packed, self._kept(rewritten, courses)))
        )

    def _takes(self, uploads: EarlyUploads) -> bool:
        """Whether the uploads are where this table's data files go (an unpartitioned table,
        data under its location's `data/`, as this store creates its tables)."""
        probe = "probe.parquet"
        return (
            not self.metadata.spec().fields
            and data_location(self.metadata, probe) == f"{uploads.data_url}/{probe}"
        )

    def _kept(self, rewritten: list[FileScanTask], courses: set[str]) -> Iterator[pa.RecordBatch]:
        scan = ArrowScan(self.metadata, self.io, self.metadata.schema(), AlwaysTrue())
        replaced = pa.array(sorted(courses), pa.string())
        for task in rewritten:
            for batch in scan.to_record_batches([task]):
                yield batch.filter(pc.invert(pc.is_in(batch.column("_course_id"), replaced)))

    def _rows(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """The batches in the table's columns (those a file lacks are null)."""
        return (_conform(batch, self.schema) for batch in batches)


def _staged_rows(path: Path, courses: set[str], load: LoadCommit) -> Iterator[pa.RecordBatch]:
    """A staged file's rows, refusing any of a course the manifest does not replace (they
    would be added to the course's old rows)."""
    for batch in pq.ParquetFile(path).iter_batches(batch_size=65_536):
        strays = set(pc.unique(batch.column("_course_id")).to_pylist()) - courses
        if strays:
            raise RuntimeError(
                f"{load.table_name}: staged rows of {sorted(strays)} not in manifest"
            )
        yield batch


def _check_courses(path: Path, courses: set[str], load: LoadCommit) -> None:
    """Refuses a staged file holding rows of a course the manifest does not replace (they
    would be added to the course's old rows); reads its `_course_id` column alone."""
    column = pq.read_table(path, columns=["_course_id"]).column(0)
    strays = set(pc.unique(column).to_pylist()) - courses
    if strays:
        raise RuntimeError(f"{load.table_name}: staged rows of {sorted(strays)} not in manifest")


def _alone(path: Path) -> bool:
    """Whether a staged file is one course's, with ALONE_BYTES or more (Parquet statistics)."""
    if path.stat().st_size < ALONE_BYTES:
        return False
    metadata = pq.ParquetFile(path).metadata
    index = metadata.schema.names.index("_course_id")
    values = set()
    for group in range(metadata.num_row_groups):
        statistics = metadata.row_group(group).column(index).statistics
        if statistics is None or not statistics.has_min_max:
            return False
        values.update((statistics.min, statistics.max))
    return len(values) == 1


def _courses_in(table: Table, task: FileScanTask) -> set[str]:
    """The courses a data file holds: from its partition (a table created partitioned by
    course), from its `_course_id` bounds when they are equal (even truncated bounds are equal
    only for one value), or else read."""
    file = task.file
    fields = table.specs()[file.spec_id].fields
    if [(field.name, str(field.transform)) for field in fields] == [("_course_id", "identity")]:
        return {file.partition[0]}
    field_id = table.schema().find_field("_course_id").field_id
    lower, upper = file.lower_bounds.get(field_id), file.upper_bounds.get(field_id)
    if lower is not None and lower == upper:
        return {lower.decode()}
    scan = ArrowScan(table.metadata, table.io, table.schema().select("_course_id"), AlwaysTrue())
    return set(pc.unique(scan.to_table([task]).column("_course_id")).to_pylist())
