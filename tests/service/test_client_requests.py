"""The client command line: tokens read like the server reads them, never sent in
plaintext without consent, and many files split into requests under the limit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import encode, random_pixels
from tests.service.helpers import RunningServer, settings_for
from vggclient.cli.classify import main as client_main
from vggclient.client import Client, request_groups

# --- item 5: tokens -----------------------------------------------------------------


@pytest.fixture(scope="module")
def token_server(
    model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    tokens = tmp_path_factory.mktemp("server-tokens") / "tokens.txt"
    tokens.write_text("# accepted tokens\n\nalpha-token\n")
    running = RunningServer(settings_for(model_dir, metrics_port=-1, auth_token_file=str(tokens)))
    running.load()
    yield running
    running.stop()


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    path = tmp_path / "image.png"
    path.write_bytes(encode(random_pixels(20, 20)))
    return path


def test_client_refuses_to_send_a_token_in_plaintext() -> None:
    with pytest.raises(ValueError, match="refusing to send a bearer token in plaintext"):
        Client("127.0.0.1:8500", token="alpha-token")


def test_client_cli_reads_the_token_file_as_the_server_does(
    token_server: RunningServer, image_file: Path, tmp_path: Path
) -> None:
    token_file = tmp_path / "token.txt"
    token_file.write_text("# the token for the staging server\n\n  alpha-token\n")
    argv = [str(image_file), "--target", token_server.target, "--token-file", str(token_file)]
    assert client_main([*argv, "--insecure-token"]) == 0


def test_client_cli_without_tls_needs_insecure_token_to_send_one(
    token_server: RunningServer,
    image_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    token_file = tmp_path / "token.txt"
    token_file.write_text("alpha-token\n")
    argv = [str(image_file), "--target", token_server.target, "--token-file", str(token_file)]
    assert client_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: refusing to send a bearer token in plaintext")
    assert "--insecure-token" in err and "\n" not in err


def test_client_cli_token_file_without_a_token_is_a_clear_error(
    token_server: RunningServer,
    image_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    token_file = tmp_path / "token.txt"
    token_file.write_text("# nothing here yet\n")
    argv = [str(image_file), "--target", token_server.target, "--token-file", str(token_file)]
    assert client_main([*argv, "--insecure-token"]) == 2
    assert capsys.readouterr().err.strip() == f"error: --token-file {token_file} holds no token"


# --- item 9: requests under the message limit ------------------------------------------

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def small_limit_server(model_dir: Path) -> Iterator[RunningServer]:
    running = RunningServer(settings_for(model_dir, metrics_port=-1, max_message_bytes=LIMIT))
    running.load()
    yield running
    running.stop()


def test_client_cli_splits_files_into_requests_under_the_message_limit(
    small_limit_server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = []
    for i in range(8):  # random pixels do not compress: about 19 KB each
        path = tmp_path / f"{i}.png"
        path.write_bytes(encode(random_pixels(80, 80, seed=i)))
        files.append(str(path))
    too_big = tmp_path / "too-big.png"
    too_big.write_bytes(encode(random_pixels(160, 160)))  # about 77 KB: over the limit alone
    sizes = [Path(f).stat().st_size for f in files]
    assert sum(sizes) > LIMIT and max(sizes) < LIMIT / 2 < too_big.stat().st_size / 2
    argv = [*files, str(too_big), "--target", small_limit_server.target]
    assert client_main([*argv, "--max-message-bytes", str(LIMIT)]) == 1
    out, err = capsys.readouterr()
    assert [line.split("  ")[0] for line in out.splitlines() if "(model" in line] == files
    assert err.strip() == (
        f"{too_big}: error: file is {too_big.stat().st_size} bytes: too large for one "
        f"request under --max-message-bytes {LIMIT}"
    )


def test_request_groups_keep_order_and_both_limits() -> None:
    sizes = [400, 400, 400, 4000, 100, 100, 100]  # 4000 fits no request: left out
    assert request_groups(sizes, max_bytes=2300, max_images=2) == [[0, 1], [2, 4], [5, 6]]
