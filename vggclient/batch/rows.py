"""One row per image: the output's fields, and how an answer becomes a row."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import grpc

from vggclient.client import Classification, ImageError

FIELDS = ("path", "status", "label", "probability", "top_k", "model", "version", "error")

# Answers that say "not now" rather than "this image is bad": never final.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)


@dataclass
class Row:
    path: str
    status: str  # "ok" or "error"
    label: str = ""
    probability: float | str = ""
    top_k: str = ""  # JSON list of [label, probability]
    model: str = ""
    version: int | str = ""
    error: str = ""

    @classmethod
    def of(cls, path: str, outcome: Classification | ImageError | str) -> Row:
        """The row of one image: its classes, the server's refusal, or (a string)
        why the file could not be read or sent."""
        if isinstance(outcome, Classification):
            best = outcome.classes[0]
            top = [[c.label, round(c.probability, 6)] for c in outcome.classes]
            return cls(
                path,
                "ok",
                best.label,
                round(best.probability, 6),
                json.dumps(top),
                outcome.model_name,
                outcome.model_version,
            )
        message = outcome if isinstance(outcome, str) else f"{outcome.code.name}: {outcome.message}"
        return cls(path, "error", error=message)


def key(path: Path | str) -> str:
    """The name a row is kept under: absolute and normalised, so that `photos/a.png`
    and `/home/me/photos/a.png` are one image. Symlinks are not followed: two
    names for one file are two rows, as the user listed two files."""
    return os.path.abspath(path)


def is_retryable(row: dict[str, object]) -> bool:
    """An error row that a retry may turn into an answer (older tools wrote them)."""
    error = str(row.get("error") or "")
    return row.get("status") == "error" and error.split(":", 1)[0] in {
        code.name for code in RETRYABLE
    }
