"""The request context: made once per call by its adapter, read by the core.

Every protocol's adapter builds one `RequestContext` when a call arrives
(request id, protocol, method, deadline, principal, the model and version
asked) and hands it to the core with the request. The core's metrics and
logs read it, so each is written once for every protocol; tracing, access
logs, payload capture and version labels hang off the same object.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field

from service.core.errors import InvalidRequest

# An incoming id is kept when it is short printable ASCII (it is echoed in
# headers and logs); anything else is replaced by a fresh one.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}", re.ASCII)
_VERSION = re.compile(r"[0-9]{1,18}", re.ASCII)
REQUEST_ID_HEADER = "x-request-id"


def new_request_id() -> str:
    """16 random hex digits: unique enough per server, cheap (about 1 us)."""
    return os.urandom(8).hex()


def request_id(incoming: str | None) -> str:
    """The caller's id when it is a sensible one, else a new one."""
    if incoming and _REQUEST_ID.fullmatch(incoming):
        return incoming
    return new_request_id()


def version_number(text: str, what: str = "model version") -> int:
    """A version given as text (a path segment, a V2 field): ASCII digits, >= 1.

    Empty text is 0, the latest. Unicode digits (superscripts, Arabic-Indic digits)
    and signs are refused: `int()` would take some of them.
    """
    if not text:
        return 0
    if not _VERSION.fullmatch(text) or int(text) == 0:
        raise InvalidRequest(f"{what} must be a positive integer in ASCII digits, got {text!r}")
    return int(text)


@dataclass(slots=True)
class RequestContext:
    """One call as the core sees it, whatever its protocol.

    Attributes:
        protocol: one of service.core.protocols (the metrics label).
        method: the protocol's name for the call (e.g. "Predict").
        request_id: the caller's `x-request-id`, or a new one; sent back.
        deadline: a time.monotonic() instant, or None.
        principal: who called (a token's fingerprint, never the token), or "".
        model: the model name asked ("" when the protocol names none).
        version: the version asked (0: the policy's latest).
        label: the version label asked, if any.
        started: time.perf_counter() when the call arrived.
    """

    protocol: str
    method: str
    request_id: str = field(default_factory=new_request_id)
    deadline: float | None = None
    principal: str = ""
    model: str = ""
    version: int = 0
    label: str = ""
    started: float = field(default_factory=time.perf_counter)

    def remaining(self) -> float | None:
        """Seconds left before the deadline (None: no deadline)."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def asking(self, model: str = "", version: int = 0, label: str = "") -> RequestContext:
        """This context with the model and version the request names filled in."""
        self.model, self.version, self.label = model, version, label
        return self
