"""Transport security and token authentication for the server.

TLS: a certificate and key, and optionally a CA whose client certificates are
required (mutual TLS). Tokens: when any is configured, every RPC except the
health service must carry `authorization: Bearer <token>`; otherwise it is
answered UNAUTHENTICATED. Tokens are compared in constant time and never
logged.
"""

from __future__ import annotations

import hmac
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from service.adapters.grpc_handlers import Behaviour, is_health, rebuild
from service.settings import Settings
from vggcommon.tokens import parse_tokens

log = logging.getLogger(__name__)

ALL_INTERFACES = {"0.0.0.0", "::", "[::]", ""}


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings, or None for plaintext."""
    if not settings.tls_cert and not settings.tls_key:
        if settings.tls_client_ca:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if not (settings.tls_cert and settings.tls_key):
        raise ValueError("TLS needs both --tls-cert and --tls-key")
    key = Path(settings.tls_key).read_bytes()
    cert = Path(settings.tls_cert).read_bytes()
    client_ca = Path(settings.tls_client_ca).read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The same TLS for HTTP (the REST port) as `server_credentials` gives gRPC."""
    if not settings.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    if settings.tls_client_ca:
        context.load_verify_locations(settings.tls_client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def token_valid(tokens: list[bytes], presented: bytes) -> bool:
    """Whether `presented` is one of `tokens`, in time that does not tell which or how close."""
    results = [hmac.compare_digest(presented, token) for token in tokens]
    return any(results)


def bearer_problem(tokens: list[bytes], header: str) -> str | None:
    """Why an `authorization` header value is refused, or None when it carries a valid token.

    The one check behind gRPC metadata and HTTP headers alike.
    """
    if not header.startswith("Bearer "):
        return (
            "missing credentials: send 'authorization: Bearer <token>' "
            "(gRPC metadata or HTTP header)"
        )
    if not token_valid(tokens, header.removeprefix("Bearer ").strip().encode()):
        return "the bearer token is not valid"
    return None


def load_tokens(settings: Settings) -> list[bytes]:
    """The accepted tokens: --auth-token, plus one per line of --auth-token-file.

    A token source that is configured but holds no token is an error, not
    "no authentication": silently serving everyone is the worst way to fail.

    Raises:
        ValueError: --auth-token is blank, or the file holds no token.
        OSError: the file cannot be read.
    """
    tokens = []
    if settings.auth_token:
        if not settings.auth_token.strip():
            raise ValueError("--auth-token is blank: give a token, or leave the flag out")
        tokens.append(settings.auth_token.strip())
    if settings.auth_token_file:
        found = parse_tokens(Path(settings.auth_token_file).read_text(encoding="utf-8"))
        if not found:
            raise ValueError(
                f"--auth-token-file {settings.auth_token_file} holds no token (only blank lines "
                "or # comments): add one token per line, or leave the flag out"
            )
        tokens += found
    return [t.encode() for t in tokens]


def warn_if_exposed(settings: Settings, tls: bool, tokens: list[bytes]) -> None:
    if settings.host in ALL_INTERFACES and not tls and tokens:
        log.warning(
            "listening on all interfaces (%s) with bearer tokens but without TLS: tokens "
            "travel in clear text, so anyone on the network path can read and reuse them; "
            "set --tls-cert/--tls-key, or --host 127.0.0.1 behind a TLS proxy",
            settings.host or "*",
        )
    if settings.host in ALL_INTERFACES and not tls and not tokens:
        log.warning(
            "listening on all interfaces (%s) without TLS or a token: anyone who can reach "
            "port %d can use the model and read its metadata; set --host 127.0.0.1, or "
            "--tls-cert/--tls-key, or --auth-token-file",
            settings.host or "*",
            settings.port,
        )


class TokenAuth(grpc.aio.ServerInterceptor):
    """Refuses RPCs (except health checks) without a valid bearer token."""

    def __init__(self, tokens: list[bytes]) -> None:
        if not tokens:
            raise ValueError("TokenAuth needs at least one token")
        self._tokens = tokens

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or is_health(details.method):
            return handler
        header = ""
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                header = value if isinstance(value, str) else value.decode()
        problem = bearer_problem(self._tokens, header)
        return handler if problem is None else _denied(handler, problem)


def _denied(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    def unary(inner: Behaviour) -> Behaviour:
        async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        return deny

    def streaming(inner: Behaviour) -> Behaviour:
        async def deny(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
            yield  # pragma: no cover  (makes this an async generator, as streaming handlers are)

        return deny

    return rebuild(handler, unary, streaming)
