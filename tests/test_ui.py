"""End to end through the Dagster UI (SPEC §8: "materializing from the UI works").

Starts the real `dg dev` from the repository root, drives the UI in headless Chromium with
Playwright, materializes `edxorg/tables/auth_user` with the Materialize button, waits for the run
to succeed and reads the materialization metadata where a user reads it: the asset's Events tab.
Then two tables at once from the catalog: one run, a step per table, each with its checks.
Screenshots land in `test-output/`.
"""

import json
import os
import re
import sys
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import REPO
from servers import free_port, running_server

CHROMIUM = Path("/usr/bin/chromium")
# Flags for this machine's closed network (and running as root): see the machine notes.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ASSET_PATH = "edxorg/tables/auth_user"
OUTPUT = REPO / "test-output"
# auth_user in the sample landing zone: 5 courses, one prod file of 4 rows each.
EXPECTED_METADATA = {"rows_loaded": "20", "files_loaded": "5", "courses_replaced": "5"}

pytestmark = pytest.mark.slow


def require_chromium() -> None:
    if CHROMIUM.exists():
        return
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing in CI: .ci/run must install Debian's chromium")
    pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium); CI installs it")


def graphql(base: str, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{base}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body = json.load(response)
    if body.get("errors"):
        raise AssertionError(f"GraphQL errors: {body['errors']}")
    return body["data"]


WORKSPACE_QUERY = """
{ workspaceOrError { __typename ... on Workspace { locationEntries {
    name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } }
} } } }
"""


def code_location_loaded(base: str) -> bool:
    """True once the webserver answers and every code location has finished loading; a code
    location that failed to load fails the test at once with its error."""
    try:
        data = graphql(base, WORKSPACE_QUERY)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False
    workspace = data["workspaceOrError"]
    if workspace["__typename"] != "Workspace" or not workspace["locationEntries"]:
        return False
    entries = workspace["locationEntries"]
    for entry in entries:
        error = entry["locationOrLoadError"]
        if error and error["__typename"] == "PythonError":
            raise AssertionError(f"code location {entry['name']} failed: {error['message']}")
    return all(entry["loadStatus"] == "LOADED" for entry in entries)


RUNS_QUERY = "{ runsOrError(limit: 10) { ... on Runs { results { runId } } } }"

RUN_QUERY = """
query Run($runId: ID!) { runOrError(runId: $runId) { __typename
  ... on Run { status eventConnection { events { __typename
    ... on MessageEvent { message stepKey }
    ... on ExecutionStepFailureEvent { error { message } }
    ... on MaterializationEvent { assetKey { path } }
    ... on AssetCheckEvaluationEvent { evaluation { checkName success assetKey { path } } }
  } } }
} }
"""


@pytest.fixture
def dagster_ui(tmp_path):
    """`dg dev` on a free port, with its instance, data and dlt state under tmp_path."""
    require_chromium()  # before paying for the server
    home = tmp_path / "ui_dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "EDXORG_S3_INGEST__DATA_DIR": str(tmp_path / "data"),
        "EDXORG_S3_INGEST__PIPELINES_DIR": str(tmp_path / "pipelines"),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DAGSTER_ENVIRONMENT", None)
    env.pop("SOURCES__EDXORG_S3__BUCKET_URL", None)
    port = free_port()
    dg = Path(sys.executable).with_name("dg")  # the project venv's dg, no `uv run` in between
    command = [str(dg), "dev", "-h", "127.0.0.1", "-p", str(port)]
    with running_server(
        "dg dev", command, port=port, log_path=tmp_path / "dg-dev.log", cwd=REPO, env=env
    ) as server:
        base = server.base_url
        server.wait_until(lambda: code_location_loaded(base), "loaded code location", 240)
        # The first visit to a local UI opens a "join the community" dialog over the page.
        graphql(base, "mutation { setNuxSeen }")
        yield server


def launched_run_id(page, base: str) -> str:
    """The run the launch toast names (by the first 8 characters of its id)."""
    from playwright.sync_api import expect

    toast = page.get_by_text(re.compile(r"Launched run [0-9a-f]{8}")).last
    expect(toast).to_be_visible()
    short_id = re.search(r"Launched run ([0-9a-f]{8})", toast.inner_text()).group(1)
    runs = graphql(base, RUNS_QUERY)["runsOrError"]["results"]
    (run_id,) = [run["runId"] for run in runs if run["runId"].startswith(short_id)]
    return run_id


def wait_for_success(page, base: str, run_id: str, server, screenshot: str) -> dict:
    """Opens the run's page until it ends; the run's events, or a failure with them."""
    from playwright.sync_api import expect

    page.goto(f"{base}/runs/{run_id}")
    terminal = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$"))
    expect(terminal.first).to_be_visible(timeout=300_000)
    page.screenshot(path=OUTPUT / screenshot)
    run = graphql(base, RUN_QUERY, {"runId": run_id})["runOrError"]
    if terminal.first.inner_text() != "Success" or run["status"] != "SUCCESS":
        raise AssertionError(
            f"run {run_id} ended {run['status']}:\n{json.dumps(run, indent=1)[-6000:]}\n"
            f"{server.log_tail()}"
        )
    return run


@contextmanager
def browser_page():
    """A page of a headless Debian Chromium, closed afterwards; screenshots go to OUTPUT."""
    from playwright.sync_api import sync_playwright

    OUTPUT.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def test_materialize_auth_user_from_the_ui(dagster_ui, tmp_path):
    from playwright.sync_api import expect

    base = dagster_ui.base_url
    with browser_page() as page:
        page.goto(f"{base}/assets/{ASSET_PATH}")
        expect(page.get_by_text("Never materialized")).to_be_visible()
        page.locator("button").filter(has_text=re.compile(r"^Materialize$")).click()

        run_id = launched_run_id(page, base)
        wait_for_success(page, base, run_id, dagster_ui, "ui-auth_user-run.png")

        # The metadata as the user sees it: the asset's Events tab, latest materialization.
        page.goto(f"{base}/assets/{ASSET_PATH}?view=events")
        expect(page.get_by_text(f"Materialized in run {run_id[:8]}")).to_be_visible()

        def value_cell(key: str):
            row = page.locator("tr").filter(
                has=page.locator("td", has_text=re.compile(rf"^{re.escape(key)}$"))
            )
            return row.locator("td").nth(1)

        for key, value in EXPECTED_METADATA.items():
            expect(value_cell(key)).to_have_text(value)
        expect(value_cell("destination")).to_contain_text(
            str(tmp_path / "data" / "raw__edxorg__s3__tables__auth_user")
        )
        page.screenshot(path=OUTPUT / "ui-auth_user-events.png")

    # The table really was written where the instance was told to write it.
    assert list((tmp_path / "data" / "raw__edxorg__s3__tables__auth_user").rglob("*.parquet"))


def test_materialize_two_tables_from_the_catalog(dagster_ui, tmp_path):
    """Filter the catalog to two tables, select both, "Materialize selected": one run whose
    two steps each materialize their table and pass its two checks."""
    from playwright.sync_api import expect

    base = dagster_ui.base_url
    tables = ("auth_user", "teams")
    with browser_page() as page:
        page.goto(f"{base}/assets/edxorg/tables")
        page.locator(".CodeMirror").first.click()  # the catalog's filter (a CodeMirror)
        page.keyboard.type(" or ".join(f'key:"edxorg/tables/{t}"' for t in tables))
        page.keyboard.press("Enter")
        # A checkbox per table shown, and the header's, which selects them all.
        checkboxes = page.locator("input[type=checkbox]")
        expect(checkboxes).to_have_count(len(tables) + 1)
        checkboxes.first.evaluate("box => box.click()")  # the input under its styling
        materialize = page.locator("button").filter(has_text="Materialize selected")
        expect(materialize).to_be_enabled()
        materialize.click()
        run_id = launched_run_id(page, base)
        run = wait_for_success(page, base, run_id, dagster_ui, "ui-two-tables-run.png")

    events = run["eventConnection"]["events"]
    steps = {e["stepKey"] for e in events if e["__typename"] == "ExecutionStepSuccessEvent"}
    assert steps == {f"edxorg_s3__{table}" for table in tables}
    materialized = {
        e["assetKey"]["path"][-1] for e in events if e["__typename"] == "MaterializationEvent"
    }
    assert materialized == set(tables)
    checks = {
        (e["evaluation"]["assetKey"]["path"][-1], e["evaluation"]["checkName"])
        for e in events
        if e["__typename"] == "AssetCheckEvaluationEvent" and e["evaluation"]["success"]
    }
    assert checks == {(t, c) for t in tables for c in ("rejected_rows", "reconciliation")}
