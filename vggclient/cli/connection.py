"""The connection flags the client tools share, and the Client they describe."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vggclient.client import Client
from vggcommon.tokens import parse_tokens


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    """--token-file, --insecure-token, --ca, --cert, --key (shared by the tools)."""
    parser.add_argument(
        "--token-file",
        help="file holding the bearer token (the server's format: the first line that is "
        "not blank or a # comment)",
    )
    parser.add_argument(
        "--insecure-token",
        action="store_true",
        help="send the token even without TLS (anyone on the path can read it)",
    )
    parser.add_argument("--ca", help="PEM CA of the server's certificate (turns TLS on)")
    parser.add_argument("--cert", help="PEM client certificate, for mutual TLS")
    parser.add_argument("--key", help="PEM key of --cert")


def client_from_args(args: argparse.Namespace, **kwargs: Any) -> Client:
    """A Client from the connection flags (and --target, --timeout).

    Raises:
        ValueError: the token file holds no token, or a token without TLS.
        OSError: a file named by a flag cannot be read.
    """
    token = None
    if args.token_file:
        tokens = parse_tokens(Path(args.token_file).read_text(encoding="utf-8"))
        if not tokens:
            raise ValueError(f"--token-file {args.token_file} holds no token")
        token = tokens[0]
    return Client(
        args.target,
        timeout=args.timeout,
        token=token,
        ca_file=args.ca,
        cert_file=args.cert,
        key_file=args.key,
        allow_insecure_token=args.insecure_token,
        **kwargs,
    )
