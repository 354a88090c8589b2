"""TLS, mutual TLS and bearer tokens, with certificates made at test time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.helpers import encode, make_ca, make_leaf, random_pixels
from tests.service.helpers import RunningServer, settings_for
from vggclient.client import Client

IMAGE = encode(random_pixels(8, 8))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    ca = make_ca(folder, "ca")
    make_leaf(folder, "server", ca, server=True)
    make_leaf(folder, "client", ca, server=False)
    make_ca(folder, "other-ca")
    return folder


@pytest.fixture(scope="module")
def mtls_server(model_dir: Path, pki: Path) -> Iterator[RunningServer]:
    running = RunningServer(
        settings_for(
            model_dir,
            tls_cert=str(pki / "server.pem"),
            tls_key=str(pki / "server.key"),
            tls_client_ca=str(pki / "ca.pem"),
            metrics_port=-1,
        )
    )
    running.load()
    yield running
    running.stop()


def test_mutual_tls_accepts_a_client_with_a_certificate_from_the_ca(
    mtls_server: RunningServer, pki: Path
) -> None:
    with Client(
        mtls_server.target,
        ca_file=pki / "ca.pem",
        cert_file=pki / "client.pem",
        key_file=pki / "client.key",
        retries=0,
    ) as client:
        assert client.classify(IMAGE).classes


@pytest.mark.parametrize(
    "kwargs",
    [
        {},  # plaintext
        {"ca_file": "other-ca.pem", "cert_file": "client.pem", "key_file": "client.key"},
        {"ca_file": "ca.pem"},  # right CA, no client certificate
    ],
    ids=["plaintext", "wrong-ca", "no-client-certificate"],
)
def test_mutual_tls_refuses(mtls_server: RunningServer, pki: Path, kwargs: dict) -> None:
    files = {k: pki / v for k, v in kwargs.items()}
    with (
        Client(mtls_server.target, retries=0, timeout=5, **files) as client,
        pytest.raises(grpc.RpcError) as info,
    ):
        client.classify(IMAGE)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.fixture(scope="module")
def tls_server(model_dir: Path, pki: Path) -> Iterator[RunningServer]:
    """TLS for the server only: no client certificate asked for."""
    running = RunningServer(
        settings_for(
            model_dir,
            tls_cert=str(pki / "server.pem"),
            tls_key=str(pki / "server.key"),
            metrics_port=-1,
        )
    )
    running.load()
    yield running
    running.stop()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ca_file": "ca.pem"},
        # A certificate the server did not ask for does no harm.
        {"ca_file": "ca.pem", "cert_file": "client.pem", "key_file": "client.key"},
    ],
    ids=["no-client-certificate", "with-client-certificate"],
)
def test_server_only_tls_accepts_clients_that_trust_its_ca(
    tls_server: RunningServer, pki: Path, kwargs: dict
) -> None:
    files = {k: pki / v for k, v in kwargs.items()}
    with Client(tls_server.target, retries=0, timeout=10, **files) as client:
        assert client.classify(IMAGE).classes
        assert client.health() == "SERVING"


@pytest.mark.parametrize(
    "kwargs", [{}, {"ca_file": "other-ca.pem"}], ids=["plaintext", "untrusted-server"]
)
def test_server_only_tls_refuses_plaintext_and_clients_of_another_ca(
    tls_server: RunningServer, pki: Path, kwargs: dict
) -> None:
    files = {k: pki / v for k, v in kwargs.items()}
    with (
        Client(tls_server.target, retries=0, timeout=5, **files) as client,
        pytest.raises(grpc.RpcError) as info,
    ):
        client.classify(IMAGE)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.fixture(scope="module")
def token_server(
    model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    tokens = tmp_path_factory.mktemp("tokens") / "tokens.txt"
    tokens.write_text("# one token per line\nalpha-token\nbeta-token\n")
    running = RunningServer(settings_for(model_dir, auth_token_file=str(tokens)))
    running.load()
    yield running
    running.stop()


def test_tokens_from_the_file_are_accepted(token_server: RunningServer) -> None:
    for token in ("alpha-token", "beta-token"):
        with token_server.client(token=token, allow_insecure_token=True) as client:
            assert client.classify(IMAGE).classes
            assert next(iter(client.classify_many([IMAGE])))[1].classes  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("token", "message"), [(None, "missing credentials"), ("gamma-token", "not valid")]
)
def test_missing_or_wrong_token_is_unauthenticated(
    token_server: RunningServer, token: str | None, message: str
) -> None:
    with token_server.client(token=token, retries=0, allow_insecure_token=True) as client:
        with pytest.raises(grpc.RpcError) as info:
            client.classify(IMAGE)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert message in info.value.details()
        with pytest.raises(grpc.RpcError) as stream_info:
            list(client.classify_many([IMAGE]))
        assert stream_info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # Health probes need no token.
        assert client.health() == "SERVING"


def test_the_token_is_not_in_the_settings_repr() -> None:
    settings = settings_for(Path("m"), auth_token="s3cret")
    assert "s3cret" not in repr(settings)


def test_exposed_plaintext_server_warns(model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    from service.security import warn_if_exposed

    warn_if_exposed(settings_for(model_dir, host="0.0.0.0"), tls=False, tokens=[])
    assert "without TLS or a token" in caplog.text
    caplog.clear()
    # Tokens without TLS get their own warning (test_auth_config); with TLS, none.
    warn_if_exposed(settings_for(model_dir, host="0.0.0.0"), tls=True, tokens=[b"x"])
    assert caplog.text == ""
