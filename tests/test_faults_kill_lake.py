"""SPEC §7 in the lake: the CLI killed (SIGKILL) at any point of a qa / production load, the
Iceberg commit and the Glue update included, then run again, ends with SPEC §5 exact in Iceberg:
no row lost or doubled, every reject exactly once, the state describing exactly the landing zone.

Kill points: ours (`crashpoint()` in consolidation.py and iceberg_store.py: data file written,
manifests written, before / after the transaction's commit, for the rows and for the rejects),
dlt's steps and per-file hooks (tests/test_crash.py's launcher), and pyiceberg's Glue commit
(`lake_hooks` below: before the commit, after the new metadata file is written but before Glue
points at it, after Glue points at it).

Two chains run side by side on one moto server, `teams` in qa and `auth_user` in production:
each case changes the table's landing zone (a re-export with a ragged line, a new course, now
and then a header-only export), runs the CLI to be killed at its point, runs it again, and
checks the lake against the oracle before the next case. The qa chain deletes the local
working area (the pipelines dir) after each kill, as a new pod starts with none; the
production chain keeps it. The state checked is the lake's (table_state.py).
"""

import gzip
import inspect
import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from edxorg_s3_ingest.tables import REJECTS_TABLE, destination_table

from conftest import REPO
from moto_server import (
    BUCKET_URL,
    LANDING_BUCKET,
    LANDING_PREFIX,
    moto,  # noqa: F401 - the module's moto server fixture
    report_of,
    run_loads,
    upload,
    upload_sample,
)
from oracle import canonical
from reliability import record, scaled
from test_crash import LAUNCHER
from test_iceberg import expected_rows, newest_exports

pytestmark = [pytest.mark.faults, pytest.mark.slow]

CHAINS = {"qa": "teams", "production": "auth_user"}
# (point, n): killed the n-th time the point is reached in the run that loads a change.
LAKE_POINTS = [
    ("plan.done", 1),
    ("test.fetch", 2),
    ("test.commit_packages.after", 1),
    ("stage.done", 1),
    ("complete.start", 1),
    ("iceberg.data_file_written", 1),
    ("iceberg.manifests_written", 1),
    ("iceberg.before_commit", 1),
    ("test.glue.commit.before", 1),
    ("test.glue.update.before", 1),
    ("test.glue.update.after", 1),
    ("iceberg.committed", 1),
    ("iceberg.rejects_before_commit", 1),
    ("test.glue.update.before", 2),
    ("iceberg.rejects_committed", 1),
    ("complete.rejects", 1),
    ("iceberg.state_written", 1),
    ("complete.committed", 1),
    ("test.package_completed", 1),
]
# The CI-sized run: inside the Iceberg transaction, inside the Glue commit, between the
# rejects' and the table's commits, and after the table's commit.
CI_POINTS = [
    ("iceberg.manifests_written", 1),
    ("test.glue.update.before", 2),
    ("complete.rejects", 1),
    ("iceberg.committed", 1),
]


def lake_hooks() -> None:
    """Kill points inside pyiceberg's Glue commit, for the launcher of tests/test_crash.py.

    Runs as source text in the child (`python -c`): it must import everything it uses."""
    import functools

    from pyiceberg.catalog.glue import GlueCatalog

    from edxorg_s3_ingest.crashpoints import crashpoint

    def around(name: str, before: str, after: str | None) -> None:
        original = getattr(GlueCatalog, name)

        @functools.wraps(original)
        def hooked(*args, **kwargs):
            crashpoint(before)
            result = original(*args, **kwargs)
            if after:
                crashpoint(after)
            return result

        setattr(GlueCatalog, name, hooked)

    around("commit_table", "test.glue.commit.before", None)
    # Called once the new metadata.json is written; Glue points at it when it returns.
    around("_update_glue_table", "test.glue.update.before", "test.glue.update.after")


LAKE_LAUNCHER = f"{inspect.getsource(lake_hooks)}\nlake_hooks()\n{LAUNCHER}"


def pytest_generate_tests(metafunc):
    if "point" in metafunc.fixturenames:
        points = LAKE_POINTS if scaled(metafunc.config, 0, 1) else CI_POINTS
        metafunc.parametrize(("point", "n"), points, ids=[f"{p}:{n}" for p, n in points])


class Chain:
    """One table's loads in one environment, each killed at a point and run again."""

    def __init__(
        self,
        moto,  # noqa: F811 - the fixture's value
        environment: str,
        table: str,
        pipelines,
        fresh_pod: bool = False,
    ) -> None:
        self.moto = moto
        self.s3 = moto.client("s3")
        self.environment = environment
        self.table = table
        self.database = f"ol_warehouse_{environment}_raw"
        self.env = moto.env(DAGSTER_ENVIRONMENT=environment)
        self.pipelines = pipelines
        self.rejects: list[tuple] = []
        """Expected rejects: (file URL, line), one per ragged line of every file read."""
        self.step = 0
        self.fresh_pod = fresh_pod
        """Whether the run after a kill starts without the killed run's pipelines dir."""

    def args(self) -> list[str]:
        return ["--tables", self.table, "--bucket-url", BUCKET_URL]

    def run(self) -> dict:
        result = run_loads(self.env, *self.args(), "--pipelines-dir", str(self.pipelines))
        assert result.returncode == 0, result.stderr[-4000:] + result.stdout[-2000:]
        return report_of(result)["tables"][self.table]

    def crash(self, point: str, n: int) -> None:
        env = {**self.env, "EDXORG_S3_INGEST_CRASH_AT": f"{point}:{n}"}
        result = subprocess.run(
            [sys.executable, "-c", LAKE_LAUNCHER, *self.args(), "--json"]
            + ["--pipelines-dir", str(self.pipelines)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == -9, (
            f"{point}:{n} was not reached (exit {result.returncode}):\n"
            f"{result.stderr[-3000:]}\n{result.stdout[-2000:]}"
        )
        if self.fresh_pod:
            shutil.rmtree(self.pipelines)

    def header(self) -> list[str]:
        content = next(iter(self._current().values()))
        return content.split(b"\n", 1)[0].decode().split("\t")

    def _current(self) -> dict[str, bytes]:
        return {
            course: self.s3.get_object(Bucket=LANDING_BUCKET, Key=item["Key"])["Body"].read()
            for course, item in newest_exports(self.s3, self.table).items()
        }

    def change(self) -> None:
        """A re-export of the first course (a ragged line 3), a new course (a ragged line 2),
        and every third step a header-only re-export of the second course."""
        self.step += 1
        header = self.header()
        step = self.step

        def rows(tag: str, count: int) -> list[bytes]:
            return [
                "\t".join(f"{tag}.{step}.{i}.{c}" for c in range(len(header))).encode()
                for i in range(count)
            ]

        line = "\t".join(header).encode()
        ragged = b"ragged\tline"
        courses = sorted(newest_exports(self.s3, self.table))
        uploads = {
            courses[0]: b"\n".join([line, *rows("a", 1), ragged, *rows("b", 2)]) + b"\n",
            f"Course-{self.environment}-{step}": b"\n".join([line, ragged, *rows("c", 1)]) + b"\n",
        }
        if step % 3 == 0:
            uploads[courses[1]] = line + b"\n"
        keys = {
            course: upload(self.s3, self.table, course, data) for course, data in uploads.items()
        }
        newest = newest_exports(self.s3, self.table)
        for course, key in keys.items():
            if newest[course]["Key"] != key:
                continue  # lost the (modified, key) tie-break: not read
            url = f"s3://{LANDING_BUCKET}/{key}"
            for number, text in enumerate(uploads[course].split(b"\n"), start=1):
                if text == ragged:
                    self.rejects.append((url, number))

    def capture(self) -> dict:
        """The lake and the state, next to what they must be."""
        catalog = self.moto.catalog()
        name = destination_table(self.table)
        rows = catalog.load_table((self.database, name)).scan().to_arrow().to_pylist()
        expected = expected_rows(self.s3, self.table)
        columns = {column for row in expected for column in row}
        rejects = catalog.load_table((self.database, REJECTS_TABLE)).scan().to_arrow()
        resource = lake_state(catalog, self.database, name)
        return {
            "rows": canonical(rows, keep=columns),
            "expected_rows": canonical(expected, keep=columns),
            "rejects": sorted(
                (row["_dlt_file_path"], row["_source_line"])
                for row in rejects.to_pylist()
                if row["table"] == self.table
            ),
            "expected_rejects": sorted(self.rejects),
            "state": {"files": resource["files"], "courses": resource["courses"]},
            "expected_state": self.expected_state(),
        }

    def expected_state(self) -> dict:
        prefix = f"{LANDING_PREFIX}/db_table/{self.table}/prod/"
        listed = self.s3.list_objects_v2(Bucket=LANDING_BUCKET, Prefix=prefix)["Contents"]

        def version(item: dict) -> list:
            url = f"s3://{LANDING_BUCKET}/{item['Key']}"
            return [url, item["LastModified"].astimezone(UTC).isoformat(), item["Size"]]

        return {
            "files": {version(item)[0]: version(item) for item in listed},
            "courses": {
                course: version(item)
                for course, item in newest_exports(self.s3, self.table).items()
            },
        }


def lake_state(catalog, database: str, name: str) -> dict:
    """The table's state, as its current snapshot points to it (iceberg_store.py)."""
    table = catalog.load_table((database, name))
    location = table.current_snapshot().summary["edxorg-s3-ingest.state"]
    with table.io.new_input(location).open() as stream:
        return json.loads(gzip.decompress(stream.read()))


@pytest.fixture(scope="module")
def outcomes(moto, tmp_path_factory, request):  # noqa: F811
    """Every selected point's case, in two chains at once (qa and production)."""
    s3 = moto.fresh()
    upload_sample(s3, list(CHAINS.values()))
    selected = [
        (item.callspec.params["point"], item.callspec.params["n"])
        for item in request.session.items
        if getattr(item, "originalname", None) == "test_killed_lake_load_is_finished_by_the_next"
    ]
    chains = [
        Chain(
            moto,
            environment,
            table,
            tmp_path_factory.mktemp(f"pipelines-{environment}"),
            fresh_pod=environment == "qa",
        )
        for environment, table in CHAINS.items()
    ]

    def run_chain(index: int) -> dict:
        chain, results = chains[index], {}
        chain.change()
        chain.run()  # the baseline: tables, rejects table and state exist
        for point, n in selected[index :: len(chains)]:
            try:
                chain.change()
                chain.crash(point, n)
                report = chain.run()
                results[(point, n)] = {**chain.capture(), "report": report}
            except BaseException as error:  # noqa: BLE001 - reported by the point's test
                results[(point, n)] = error
        return results

    with ThreadPoolExecutor(max_workers=len(chains)) as pool:
        merged: dict = {}
        for results in pool.map(run_chain, range(len(chains))):
            merged.update(results)
    return merged


def test_killed_lake_load_is_finished_by_the_next(outcomes, point, n, request):
    outcome = outcomes[(point, n)]
    if isinstance(outcome, BaseException):
        raise outcome
    assert outcome["rows"] == outcome["expected_rows"]
    assert outcome["rejects"] == outcome["expected_rejects"], "a reject lost or doubled"
    assert outcome["state"] == outcome["expected_state"]
    record(
        request,
        "Kills (qa/production, Iceberg + Glue on moto)",
        "SIGKILL of the CLI at a kill point (Iceberg data file / manifests / commit, Glue "
        "metadata update, state object, dlt steps), then a plain re-run, with the killed "
        "run's pipelines dir (production) or without it, as in a new pod (qa)",
        1,
        "Iceberg table, rejects (each once) and the lake's state exact",
    )


def test_at_least_ten_lake_kill_points():
    assert len(set(LAKE_POINTS)) >= 10
    assert set(CI_POINTS) <= set(LAKE_POINTS)


# -- rejects of a file read again (IcebergStore.append_rejects) ---------------------------------


@pytest.fixture
def qa_store(moto, monkeypatch):  # noqa: F811
    """An IcebergStore of this process on a clean moto qa lake."""
    moto.fresh()
    for key, value in moto.env(DAGSTER_ENVIRONMENT="qa").items():
        if key.startswith("AWS_") or key == "DAGSTER_ENVIRONMENT":
            monkeypatch.setenv(key, value)
    from edxorg_s3_ingest.stores.iceberg_store import IcebergStore

    return IcebergStore("s3://ol-data-lake-raw-qa/edxorg", "ol_warehouse_qa_raw")


def rejects_file(path, table: str, load_id: str, rejects: list[tuple[str, int]]):
    """A staged rejects file: (source file URL, line) per rejected line."""
    count = len(rejects)
    pq.write_table(
        pa.table(
            {
                "table": [table] * count,
                "_course_id": ["c1"] * count,
                "_dlt_file_path": [url for url, _ in rejects],
                "_source_line": pa.array([line for _, line in rejects], pa.int64()),
                "reason": ["ragged_line"] * count,
                "raw_line": ["x"] * count,
                "_dlt_load_id": [load_id] * count,
            }
        ),
        path,
    )
    return path


def test_rejects_of_a_file_read_again_are_replaced_not_doubled(
    qa_store,
    moto,  # noqa: F811
    tmp_path,
    request,
):
    """Loads L1 (files a, b), then L2 reads a again (a state reset, a kill window) with b's
    rejects in another data file, and another table's rejects of the same URL exist: a's
    rejects are those of L2, once; b's and the other table's stay."""
    a, b = "s3://l/teams/prod/c1/a.tsv", "s3://l/teams/prod/c1/b.tsv"
    qa_store.append_rejects(
        "teams",
        "L1",
        [rejects_file(tmp_path / "1.parquet", "teams", "L1", [(a, 2), (a, 5), (b, 3)])],
    )
    qa_store.append_rejects(
        "auth_user", "L1", [rejects_file(tmp_path / "2.parquet", "auth_user", "L1", [(a, 9)])]
    )
    qa_store.append_rejects(
        "teams", "L2", [rejects_file(tmp_path / "3.parquet", "teams", "L2", [(a, 2), (a, 5)])]
    )
    qa_store.append_rejects(
        "teams", "L2", [rejects_file(tmp_path / "3.parquet", "teams", "L2", [(a, 2), (a, 5)])]
    )
    rows = moto.catalog().load_table(("ol_warehouse_qa_raw", REJECTS_TABLE)).scan().to_arrow()
    got = sorted(
        (r["table"], r["_dlt_file_path"], r["_source_line"], r["_dlt_load_id"])
        for r in rows.to_pylist()
    )
    assert got == [
        ("auth_user", a, 9, "L1"),
        ("teams", a, 2, "L2"),
        ("teams", a, 5, "L2"),
        ("teams", b, 3, "L1"),
    ]
    record(
        request,
        "Rejects deduplication (Iceberg)",
        "a source file's rejects appended again by a later load (and the same load twice)",
        2,
        "replaced in one commit: each reject once; other files' and tables' rejects kept",
    )


def test_full_refresh_reads_files_again_without_doubling_rejects(
    moto,  # noqa: F811
    tmp_path,
    request,
):
    """A new pod (an empty pipelines dir) reads nothing again; `--full-refresh` reads every
    newest file again: the table and the rejects are unchanged."""
    s3 = moto.fresh()
    upload_sample(s3, ["teams"])
    upload(s3, "teams", "MITx-1.00x-2026_Spring", b"id\tname\n1\ta\n2\n3\tc\n")
    chain = Chain(moto, "qa", "teams", tmp_path / "pipelines")
    chain.rejects = [
        (f"s3://{LANDING_BUCKET}/{newest_exports(s3, 'teams')['MITx-1.00x-2026_Spring']['Key']}", 3)
    ]
    chain.run()
    first = chain.capture()
    shutil.rmtree(tmp_path / "pipelines")
    assert chain.run()["files_loaded"] == 0
    result = run_loads(chain.env, *chain.args(), "--full-refresh", "--pipelines-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert report_of(result)["tables"]["teams"]["files_loaded"] == 3
    second = chain.capture()
    assert second["rows"] == second["expected_rows"] == first["rows"]
    assert second["rejects"] == first["rejects"] == second["expected_rejects"]
    assert second["state"] == first["state"] == second["expected_state"]
    record(
        request,
        "Rejects deduplication (Iceberg)",
        "a new pod's run (nothing read), then --full-refresh: every newest file read again",
        1,
        "table, rejects (no reject twice) and state unchanged",
    )
