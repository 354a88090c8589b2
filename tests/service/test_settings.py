"""Settings: flags win over VGGSERVE_* variables, which win over defaults; bad
values stop the server at parse time with one line and exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_defaults() -> None:
    settings = Settings.parse(["--model-dir", "models/x"], env={})
    assert settings.port == 8500 and settings.max_batch_size == 32
    assert settings.batching is True and settings.batch_timeout_s == pytest.approx(0.002)


def test_environment_then_flags() -> None:
    env = {
        "VGGSERVE_MODEL_DIR": "models/env",
        "VGGSERVE_PORT": "9000",
        "VGGSERVE_BATCHING": "false",
        "VGGSERVE_MAX_BATCH_SIZE": "64",
    }
    settings = Settings.parse(["--max-batch-size", "16"], env=env)
    assert settings.model_dir == "models/env"
    assert settings.port == 9000
    assert settings.batching is False
    assert settings.max_batch_size == 16


def test_good_edge_values_are_accepted(tmp_path: Path) -> None:
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    cert.write_text("x")
    key.write_text("x")
    argv = ["--model-dir", "m", "--port", "0", "--metrics-port", "-1", "--batch-timeout-ms", "0"]
    argv += ["--versions", "latest:3", "--log-level", "debug", "--poll-interval-s", "0"]
    argv += ["--tls-cert", str(cert), "--tls-key", str(key), "--drain-grace-s", "0"]
    settings = Settings.parse(argv, env={})
    assert (settings.port, settings.metrics_port, settings.log_level) == (0, -1, "debug")


# (flag or variable, value, what the one line must say)
BAD_SETTINGS = [
    ("--max-batch-size", "0", "--max-batch-size 0: must be at least 1"),
    ("--max-queue", "-5", "--max-queue -5: must be at least 1"),
    ("--model-workers", "0", "--model-workers 0: must be at least 1"),
    ("--max-message-bytes", "0", "--max-message-bytes 0: must be at least 1"),
    ("--max-message-bytes", str(2**31), "must be at most 2147483647"),
    ("--max-image-pixels", "0", "--max-image-pixels 0: must be at least 1"),
    ("--max-concurrent-rpcs", "0", "--max-concurrent-rpcs 0: must be at least 1"),
    ("--max-concurrent-streams", "0", "--max-concurrent-streams 0: must be at least 1"),
    ("--intra-op-threads", "-1", "--intra-op-threads -1: must be at least 0"),
    ("--inter-op-threads", "-1", "--inter-op-threads -1: must be at least 0"),
    ("--batch-timeout-ms", "-1", "--batch-timeout-ms -1.0: must be at least 0"),
    ("--poll-interval-s", "-2", "--poll-interval-s -2.0: must be at least 0"),
    ("--drain-grace-s", "nan", "--drain-grace-s nan: must be a finite number"),
    ("--drain-timeout-s", "-1", "--drain-timeout-s -1.0: must be at least 0"),
    ("--port", "-1", "--port -1: must be at least 0"),
    ("--port", "65536", "--port 65536: must be at most 65535"),
    ("--metrics-port", "-2", "--metrics-port -2: must be at least -1"),
    ("--log-level", "verbose", "--log-level 'verbose': must be one of DEBUG, INFO, WARNING, ERROR"),
    ("--versions", "latest:0", "--versions 'latest:0': use 'latest', 'latest:N' (N >= 1)"),
    ("--versions", "1,,3", "--versions '1,,3': use 'latest', 'latest:N'"),
    ("--tls-client-ca", "/no/such/ca.pem", "--tls-client-ca '/no/such/ca.pem': no such file"),
    ("--auth-token-file", "/no/such/tokens", "--auth-token-file '/no/such/tokens': no such file"),
    ("--port", "eighty", "argument --port: invalid int value: 'eighty'"),
]


@pytest.mark.parametrize(("flag", "value", "message"), BAD_SETTINGS)
def test_bad_flags_exit_2_with_one_line(
    flag: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        Settings.parse(["--model-dir", "m", flag, value], env={})
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert message in err


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ([], {}, "--model-dir (or VGGSERVE_MODEL_DIR) is required"),
        (["--model-dir", " "], {}, "--model-dir ' ': must name the model's folder"),
        (
            [],
            {"VGGSERVE_MODEL_DIR": "m", "VGGSERVE_PORT": "eighty"},
            "VGGSERVE_PORT='eighty': expected an integer",
        ),
        (
            [],
            {"VGGSERVE_MODEL_DIR": "m", "VGGSERVE_MAX_BATCH_SIZE": "0"},
            "VGGSERVE_MAX_BATCH_SIZE='0': must be at least 1",
        ),
        (
            [],
            {"VGGSERVE_MODEL_DIR": "m", "VGGSERVE_LOG_LEVEL": "verbose"},
            "VGGSERVE_LOG_LEVEL='verbose': must be one of",
        ),
        (["--model-dir", "m", "--tls-client-ca", __file__], {}, "--tls-client-ca needs"),
    ],
)
def test_errors_name_the_setting(argv, env, message, capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as info:
        Settings.parse(argv, env=env)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1, err


def test_tls_needs_both_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cert = tmp_path / "server.pem"
    cert.write_text("x")
    with pytest.raises(SystemExit):
        Settings.parse(["--model-dir", "m", "--tls-cert", str(cert)], env={})
    assert "TLS needs both --tls-cert and --tls-key" in capsys.readouterr().err


def test_settings_made_in_code_are_checked_too() -> None:
    with pytest.raises(ValueError, match="--max-batch-size 0: must be at least 1"):
        Settings(model_dir="m", max_batch_size=0)


# --- the real command: `python -m service` ---------------------------------------------------


def run_server_command(*args: str) -> tuple[int, list[str], list[str]]:
    """Runs `python -X importtime -m service ARGS`: (exit code, stderr lines, modules imported).

    -X importtime lists every module the process imported: parsing must not
    import TensorFlow or gRPC (seconds), so --help and errors answer at once.
    """
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "service", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = result.stderr.splitlines()
    modules = [line.split("|")[-1].strip() for line in lines if line.startswith("import time:")]
    messages = [line for line in lines if not line.startswith("import time:")]
    return result.returncode, messages, modules + result.stdout.splitlines()


def heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if m.split(".")[0] in {"tensorflow", "grpc", "keras"}]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-batch-size", "0"], "--max-batch-size 0: must be at least 1"),
        (["--log-level", "verbose"], "--log-level 'verbose': must be one of"),
        (["--versions", "newest"], "--versions 'newest': use 'latest', 'latest:N'"),
        (["--tls-cert", "/no/cert.pem", "--tls-key", "/no/key.pem"], "no such file"),
        (["--drain-timeout-s", "-1"], "--drain-timeout-s -1.0: must be at least 0"),
    ],
)
def test_server_command_refuses_bad_settings_at_once(args: list[str], message: str) -> None:
    code, messages, modules = run_server_command("--model-dir", "models/none", *args)
    assert code == 2
    assert len(messages) == 1, messages
    assert messages[0].startswith("python -m service: error: ") and message in messages[0]
    assert heavy(modules) == []


def test_server_help_is_fast_and_shows_defaults_and_variables() -> None:
    code, messages, output = run_server_command("--help")
    assert code == 0 and messages == []
    assert heavy(output) == []
    text = " ".join(" ".join(output).split())  # argparse wraps help lines
    assert "most images per model call (default: 32) [VGGSERVE_MAX_BATCH_SIZE]" in text
    assert "(default: on) [VGGSERVE_BATCHING]" in text
    assert "(default: 0.0.0.0) [VGGSERVE_HOST]" in text
    assert "(required) [VGGSERVE_MODEL_DIR]" in text
