"""Which model versions to serve: `--versions latest`, `latest:N` or `1,3`.

Free of TensorFlow and of the core, so that the settings can check a policy
when the command line is parsed, before anything slow is imported; the core
(service.core.watcher) applies it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

# ASCII digits only: int() would also take "1_000", "+3" and non-ASCII digits.
_NUMBER = re.compile(r"[0-9]+", re.ASCII)


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions to serve: the newest `latest` ones, or a pinned list."""

    latest: int = 1
    pinned: tuple[int, ...] = ()

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        """'latest', 'latest:N' (N >= 1) or a comma-separated list of versions >= 1.

        Raises:
            ValueError: anything else, with a one-line message saying what is allowed.
        """
        stripped = text.strip()
        if stripped == "latest":
            return cls(latest=1)
        if stripped.startswith("latest:"):
            count = stripped.removeprefix("latest:").strip()
            if _NUMBER.fullmatch(count) and int(count) >= 1:
                return cls(latest=int(count))
        else:
            parts = [part.strip() for part in stripped.split(",")]
            if all(_NUMBER.fullmatch(part) and int(part) >= 1 for part in parts):
                return cls(latest=0, pinned=tuple(sorted({int(part) for part in parts})))
        raise ValueError(
            f"version policy {text!r}: use 'latest', 'latest:N' (N >= 1) "
            "or a list of versions >= 1 such as '1,3'"
        )

    def select(self, available: Sequence[int]) -> list[int]:
        if self.pinned:
            return [v for v in self.pinned if v in available]
        return sorted(available)[-self.latest :]
