"""A tiny DNS server on loopback whose answer the test changes, like compose's DNS.

Envoy's STRICT_DNS cluster re-resolves a name; to test that for real without
a container runtime, Envoy asks this server (UDP on 127.0.0.1), which answers
A queries for one name with the addresses the test sets: one loopback address
per replica (127.0.0.2, 127.0.0.3, ... all reach this machine on Linux).
Only what a resolver needs: one question, A records, TTL 0; anything else is
answered with no records (AAAA) or NXDOMAIN (other names).
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Sequence
from types import TracebackType

A, IN = 1, 1
NXDOMAIN = 3


class FakeDns:
    """Answers A queries for `name` with `addresses`; `set` changes them."""

    def __init__(self, name: str, addresses: Sequence[str] = ()) -> None:
        self.name = name.rstrip(".").lower()
        self._addresses = list(addresses)
        self._lock = threading.Lock()
        self._answered = threading.Condition()
        self.answers = 0  # replies sent; wait_answered() waits for the next
        self._stop = threading.Event()
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        # The serving loop checks for stop this often.
        self._socket.settimeout(0.2)
        self.port: int = self._socket.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="fake-dns", daemon=True)

    def set(self, addresses: Sequence[str]) -> None:
        with self._lock:
            self._addresses = list(addresses)

    def __enter__(self) -> FakeDns:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._socket.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                query, peer = self._socket.recvfrom(512)
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            reply = self.answer(query)
            if reply is not None:
                self._socket.sendto(reply, peer)
                with self._answered:
                    self.answers += 1
                    self._answered.notify_all()

    def wait_answered(self, timeout: float) -> bool:
        """Waits (bounded) until one more query has been answered."""
        with self._answered:
            seen = self.answers
            return self._answered.wait_for(lambda: self.answers > seen, timeout=timeout)

    def answer(self, query: bytes) -> bytes | None:
        """The reply to one query, or None for a packet that is not one."""
        if len(query) < 12:
            return None
        ident, _flags, questions = struct.unpack("!HHH", query[:6])
        if questions != 1:
            return None
        labels, offset = [], 12
        # A name is at most 127 labels; the bound also stops a malformed packet.
        for _ in range(128):
            if offset >= len(query):
                return None
            length = query[offset]
            offset += 1
            if length == 0:
                break
            labels.append(query[offset : offset + length].decode("ascii", "replace"))
            offset += length
        if offset + 4 > len(query):
            return None
        qtype, qclass = struct.unpack("!HH", query[offset : offset + 4])
        question = query[12 : offset + 4]
        if ".".join(labels).lower() != self.name:
            return struct.pack("!HHHHHH", ident, 0x8180 | NXDOMAIN, 1, 0, 0, 0) + question
        with self._lock:
            addresses = list(self._addresses) if (qtype, qclass) == (A, IN) else []
        records = b"".join(
            # A pointer to the name in the question (offset 12), A, IN, TTL 0.
            struct.pack("!HHHIH", 0xC00C, A, IN, 0, 4) + socket.inet_aton(address)
            for address in addresses
        )
        header = struct.pack("!HHHHHH", ident, 0x8180, 1, len(addresses), 0, 0)
        return header + question + records
