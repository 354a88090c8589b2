"""Token files: the one format the server and the clients both read."""

from __future__ import annotations


def parse_tokens(text: str) -> list[str]:
    """The tokens of a token file: one per line; blank lines and `#` comments skipped.

    The one reader of token files, for the server (--auth-token-file) and the
    clients (--token-file), so that a file one accepts the other reads alike.
    """
    stripped = (line.strip() for line in text.splitlines())
    return [line for line in stripped if line and not line.startswith("#")]
