"""`python -m vggclient.healthcheck`, the Docker HEALTHCHECK: exit 0 only when SERVING."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.helpers import RunningServer, settings_for

ROOT = Path(__file__).resolve().parents[2]


def healthcheck(target: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vggclient.healthcheck", "--target", target, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,  # far above any --timeout used here: a hang fails the test
    )


def test_serving_server_exits_zero(server: RunningServer) -> None:
    result = healthcheck(server.target)
    assert (result.returncode, result.stdout.strip()) == (0, f"{server.target}: SERVING")


def test_a_named_service_can_be_checked(server: RunningServer) -> None:
    result = healthcheck(server.target, "--service", "vggserve.v1.ImageClassifier")
    assert (result.returncode, result.stdout.strip()) == (0, f"{server.target}: SERVING")


def test_a_server_still_loading_is_not_healthy(model_dir: Path) -> None:
    loading = RunningServer(settings_for(model_dir, metrics_port=-1))  # started, not loaded
    try:
        result = healthcheck(loading.target)
    finally:
        loading.stop()
    assert (result.returncode, result.stdout.strip()) == (1, f"{loading.target}: NOT_SERVING")


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed again: nothing listens there


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung server)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        yield int(silent.getsockname()[1])


def test_nothing_listening_is_unhealthy(closed_port: int) -> None:
    result = healthcheck(f"127.0.0.1:{closed_port}", "--timeout", "5")
    assert result.returncode == 1
    assert result.stderr.startswith(f"127.0.0.1:{closed_port}: UNAVAILABLE: "), result.stderr


def test_a_hung_server_is_unhealthy_once_the_timeout_passes(silent_port: int) -> None:
    result = healthcheck(f"127.0.0.1:{silent_port}", "--timeout", "1")
    assert result.returncode == 1
    assert result.stderr.startswith(f"127.0.0.1:{silent_port}: DEADLINE_EXCEEDED: "), result.stderr
