"""The command lines as a user runs them: server process, client CLI, proto generation."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.serverproc import local_server, server_command
from tests.helpers import encode, random_pixels
from tests.service.helpers import RunningServer
from vggclient.cli.classify import main as client_main
from vggclient.client import Client

ROOT = Path(__file__).resolve().parents[2]


def test_generated_protos_are_fresh() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/gen_protos.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_generated_code_imports_from_any_directory(tmp_path: Path) -> None:
    code = "from protos.vggserve.v1 import classifier_pb2_grpc; print('ok')"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "ok", result.stderr


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    paths = {
        "good": tmp_path / "good.png",
        "bad": tmp_path / "bad.jpg",
        "missing": tmp_path / "missing.png",
    }
    paths["good"].write_bytes(encode(random_pixels(20, 20)))
    paths["bad"].write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return paths


def test_client_cli_prints_a_table_and_fails_only_the_bad_files(
    server: RunningServer, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [str(files[k]) for k in ("good", "missing", "bad")]
    assert client_main([*argv, "--target", server.target, "--top-k", "2"]) == 1
    out, err = capsys.readouterr()
    assert f"{files['good']}  (model tiny v2)" in out
    assert len(re.findall(r"^\s+\d+\.\d\d%\s+\w+$", out, re.M)) == 2
    assert f"{files['missing']}: error: cannot read file" in err
    assert f"{files['bad']}: error: INVALID_ARGUMENT" in err


def test_client_cli_json(server: RunningServer, files: dict[str, Path], capsys) -> None:  # type: ignore[no-untyped-def]
    assert client_main([str(files["good"]), "--target", server.target, "--json"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["model_version"] == 2 and len(line["classes"]) == 5


def test_server_process_serves_then_exits_zero_on_sigterm(model_dir: Path) -> None:
    with local_server(model_dir, ["--drain-grace-s", "0"]) as child:
        with Client(child.target) as client:
            assert client.classify(encode(random_pixels(8, 8))).model_version == 2
        child.process.send_signal(signal.SIGTERM)
        assert child.process.wait(timeout=60) == 0


def test_server_without_a_model_exits_with_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        server_command(tmp_path),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "no usable exported version under" in result.stderr and "make train" in result.stderr


def test_port_in_use_is_a_clear_error(server: RunningServer, model_dir: Path) -> None:
    command = server_command(model_dir)
    command[command.index("--port") + 1] = str(server.port)  # taken by the running server
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{server.port}: is the port in use?" in result.stderr


@pytest.mark.parametrize(("flag", "what"), [("--rest-port", "REST"), ("--metrics-port", "metrics")])
def test_http_port_in_use_is_a_clear_error_naming_the_port(
    model_dir: Path, flag: str, what: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [*server_command(model_dir), flag, str(port)]  # the last flag wins
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert f"cannot serve {what} on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--top-k", "-1"], "argument --top-k: must be at least 1, got -1"),
        (["--top-k", "many"], "argument --top-k: 'many' is not an integer"),
        (["--timeout", "0"], "argument --timeout: must be at least 0.001, got 0"),
    ],
)
def test_client_command_refuses_bad_flags_with_one_line(
    files: dict[str, Path], args: list[str], message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vggclient.client", str(files["good"]), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"python -m vggclient.client: error: {message} (see --help)"
    ]
