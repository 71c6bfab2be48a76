"""The optional landing-zone sensor over a landing zone on disk."""

import fcntl
import shutil

import dagster as dg
import pytest

from edxorg_s3_ingest.orchestration.sensor import TABLE_TAG
from edxorg_s3_ingest.running.runner import load_table
from edxorg_s3_ingest.settings import Settings

from conftest import SMALL


@pytest.fixture
def landing(tmp_path, monkeypatch):
    root = tmp_path / "landing"
    for table in ("teams", "auth_user"):
        shutil.copytree(SMALL / "db_table" / table, root / "db_table" / table)
    monkeypatch.setenv("SOURCES__EDXORG_S3__BUCKET_URL", str(root))
    monkeypatch.setenv("EDXORG_S3_INGEST__DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EDXORG_S3_INGEST__PIPELINES_DIR", str(tmp_path / "pipelines"))
    return root


@pytest.fixture(scope="module")
def defs():
    from edxorg_s3_ingest.definitions import defs as code_location

    return code_location()


def requested_tables(defs, instance) -> list[str]:
    sensor = defs.resolve_sensor_def("edxorg_landing_zone_sensor")
    context = dg.build_sensor_context(instance=instance, definitions=defs)
    requests = list(sensor(context) or [])
    return sorted(request.tags[TABLE_TAG] for request in requests)


def add_file(landing, table: str, system: str, course: str, text: str):
    folder = landing / "db_table" / table / system / course
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{abs(hash(text))}.tsv").write_text(text)


def test_sensor_is_off_by_default(defs):
    sensor = defs.resolve_sensor_def("edxorg_landing_zone_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED


def test_requests_follow_new_prod_files_and_failed_loads(landing, defs):
    settings = Settings.resolve()
    with dg.instance_for_test() as instance:
        assert requested_tables(defs, instance) == ["auth_user", "teams"]
        assert load_table("teams", settings).status == "loaded"
        assert load_table("auth_user", settings).status == "loaded"
        assert requested_tables(defs, instance) == []

        add_file(landing, "auth_user", "edge", "edX-DemoX-Demo_Course", "id\n99\n")
        assert requested_tables(defs, instance) == []

        add_file(landing, "teams", "prod", "MITx-new-course", "id\tname\n1\tx\n")
        assert requested_tables(defs, instance) == ["teams"]

        # A failed load (here: another run holds the table) leaves the state: asked again.
        lock = settings.pipelines_dir / "edxorg_s3__teams.lock"
        with open(lock, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            assert load_table("teams", settings).status == "failed"
        assert requested_tables(defs, instance) == ["teams"]

        # Not while a run of the table is queued or running.
        job = defs.resolve_implicit_global_asset_job_def()
        instance.create_run_for_job(
            job_def=job, tags={TABLE_TAG: "teams"}, status=dg.DagsterRunStatus.STARTED
        )
        assert requested_tables(defs, instance) == []

        assert load_table("teams", settings).status == "loaded"
        assert requested_tables(defs, instance) == []

        # The state is the tables' (in their store): a code server whose pipelines dir is empty,
        # never having run a load, asks the same.
        shutil.rmtree(settings.pipelines_dir)
        assert requested_tables(defs, instance) == []
        add_file(landing, "auth_user", "prod", "MITx-new-course", "id\n1\n")
        assert requested_tables(defs, instance) == ["auth_user"]
        assert not settings.pipelines_dir.exists()
