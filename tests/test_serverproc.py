"""Starting child servers for tools and tests: a readiness contract with a deadline."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from loadtest.serverproc import ChildFailed, child_server, local_server, server_command
from tests.helpers import encode, random_pixels
from vggclient.client import Client


def test_a_server_logging_only_warnings_is_still_found(model_dir: Path) -> None:
    # Readiness comes from --port-file and health, not from an INFO log line.
    with (
        local_server(model_dir, env={"VGGSERVE_LOG_LEVEL": "WARNING"}) as child,
        Client(child.target) as client,
    ):
        assert client.classify(encode(random_pixels(8, 8))).model_version == 2
        # The port file gives the REST port too: its /metrics counts that call.
        assert child.rest_url is not None
        with urllib.request.urlopen(f"{child.rest_url}/metrics", timeout=10) as response:
            assert 'protocol="native-grpc"' in response.read().decode()


def test_a_child_that_fails_at_start_raises_at_once_with_its_stderr(tmp_path: Path) -> None:
    empty = tmp_path / "no-model-here"
    empty.mkdir()
    # A deadline far away: the error must come from the child's exit, not from waiting.
    with (
        pytest.raises(ChildFailed) as info,
        child_server(server_command(empty), ready_timeout=3600) as _,
    ):
        pass
    message = str(info.value)
    assert "exited with code 1 before it was SERVING" in message
    assert "no usable exported version under" in message  # the child's own words


def test_a_child_that_is_never_ready_fails_at_the_deadline(tmp_path: Path) -> None:
    # A child that never writes its port file (it ignores the flag and sleeps).
    command = [
        "python3",
        "-c",
        "import sys, time; print('starting', file=sys.stderr); time.sleep(60)",
    ]
    with (
        pytest.raises(ChildFailed, match="was not listening in time") as info,
        child_server(command, ready_timeout=0.5),
    ):
        pass
    assert "starting" in str(info.value)
