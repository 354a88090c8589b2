"""Token configuration mistakes stop the server; tokens without TLS are warned about."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from loadtest.serverproc import server_command
from service.security import warn_if_exposed
from service.server import Server
from tests.service.helpers import settings_for

ROOT = Path(__file__).resolve().parents[2]
NO_TOKEN_FILES = {
    "empty": "",
    "blank-lines": "\n   \n\n",
    "comments-only": "# tokens go here, one per line\n  # indented comment\n",
}


@pytest.mark.parametrize("content", NO_TOKEN_FILES.values(), ids=NO_TOKEN_FILES.keys())
def test_a_token_file_without_tokens_stops_the_server_class(
    model_dir: Path, tmp_path: Path, content: str
) -> None:
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(content)

    async def make() -> Server:
        return Server(settings_for(model_dir, auth_token_file=str(tokens)))

    with pytest.raises(ValueError, match=f"--auth-token-file {tokens} holds no token"):
        asyncio.run(make())


def test_a_blank_token_is_refused_before_a_server_is_made(model_dir: Path) -> None:
    # The settings themselves refuse it, so no code path builds a server without auth.
    with pytest.raises(ValueError, match="--auth-token '   ': is given but empty"):
        settings_for(model_dir, auth_token="   ")


def test_an_indented_comment_is_not_a_token(model_dir: Path, tmp_path: Path) -> None:
    from service.security import load_tokens

    tokens = tmp_path / "tokens.txt"
    tokens.write_text("  # a comment\nreal-token\n")
    assert load_tokens(settings_for(model_dir, auth_token_file=str(tokens))) == [b"real-token"]


def run_server(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        args,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})},
    )


def test_python_m_service_with_a_comment_only_token_file_exits_2(
    model_dir: Path, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("# only a comment\n")
    result = run_server(server_command(model_dir, ["--auth-token-file", str(tokens)]))
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "holds no token" in line]
    assert len(errors) == 1 and "cannot start" in errors[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--auth-token", ""], {}),
        ([], {"VGGSERVE_AUTH_TOKEN": ""}),  # an unset variable in a compose file
        (["--auth-token-file", " "], {}),
    ],
    ids=["flag", "environment", "file-flag"],
)
def test_python_m_service_with_an_explicitly_empty_token_exits_2(
    model_dir: Path, args: list[str], env: dict[str, str]
) -> None:
    result = run_server(server_command(model_dir, args), env)
    assert result.returncode == 2, result.stderr
    assert "is given but empty" in result.stderr
    assert "Traceback" not in result.stderr


def test_tokens_without_tls_on_all_interfaces_warn_that_they_travel_in_clear(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    exposed = settings_for(model_dir, host="0.0.0.0")
    warn_if_exposed(exposed, tls=False, tokens=[b"secret-token"])
    assert "tokens travel in clear text" in caplog.text
    assert "secret-token" not in caplog.text
    caplog.clear()
    warn_if_exposed(exposed, tls=True, tokens=[b"secret-token"])
    warn_if_exposed(settings_for(model_dir, host="127.0.0.1"), tls=False, tokens=[b"x"])
    assert caplog.text == ""
