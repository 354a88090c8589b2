"""Where a model version is in its life, as TensorFlow Serving names the states."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class VersionState(enum.Enum):
    """Where a version is in its life, as TensorFlow Serving names the states."""

    START = "START"  # found and selected; waiting for its turn to load
    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"  # loaded and warm: requests go to it
    UNLOADING = "UNLOADING"  # out of routing; answering what was queued for it
    END = "END"  # unloaded, or failed to load (then `error` says why)


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: VersionState
    error: str = ""  # why it failed to load; empty otherwise
