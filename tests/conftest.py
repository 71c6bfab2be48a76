import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REALDATA = SHARED / "realdata"
SAMPLE = REPO / "edxorg_s3_ingest" / "sample_landing_zone"
"""The sample landing zone the product ships: all 44 tables as upstream writes them."""
SMALL = Path(__file__).resolve().parent / "small_landing_zone"
"""A small landing zone of edX's own exports (11 tables, 2-4 courses each: the project's first
sample), for the tests that count files and rows of a few tables, quickly."""


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path, monkeypatch):
    """Every test starts in dev, with its own Dagster home and nothing inherited."""
    monkeypatch.delenv("DAGSTER_ENVIRONMENT", raising=False)
    monkeypatch.delenv("SOURCES__EDXORG_S3__BUCKET_URL", raising=False)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))


def run_cli(*args: str, cwd: Path = REPO, env: dict | None = None, check: bool = True):
    """Runs the real CLI in a subprocess, as a user would."""
    result = subprocess.run(
        [sys.executable, "-m", "edxorg_s3_ingest.loads", *args],
        cwd=cwd,
        # Bytecode caching makes each CLI start ~3x faster; some shells disable it.
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "", **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"CLI failed ({result.returncode}):\n{result.stderr}\n{result.stdout}")
    return result


def run_json(*args: str, **kwargs) -> dict:
    result = run_cli(*args, "--json", **kwargs)
    return json.loads(result.stdout)


# -- fault tests: RELIABILITY.md (tests/reliability.py) ----------------------------------------


def pytest_runtest_logreport(report):
    import reliability

    reliability.note_result(report)


def pytest_sessionfinish(session, exitstatus):
    import reliability

    session.config._reliability_note = reliability.finish(session)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    note = getattr(config, "_reliability_note", None)
    if note:
        terminalreporter.write_line(note)


NO_OP_PROBE = """
import sys
from edxorg_s3_ingest import cli
code = cli.main(sys.argv[1:])
loading = ("dlt", "pyarrow", "pandas", "pyiceberg", "boto3", "botocore")
loading += ("edxorg_s3_ingest.running.workers",)
print(sorted(name for name in loading if name in sys.modules), file=sys.stderr)
sys.exit(code)
"""


def run_probed(env: dict | None, *args: str) -> tuple[dict, str]:
    """The CLI run in a process that then says which of the loading modules it imported (the
    last line of stderr): its JSON report and that line."""
    command = [sys.executable, "-c", NO_OP_PROBE, *args, "--json"]
    probe = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr
    return json.loads(probe.stdout), probe.stderr.strip().splitlines()[-1]
