"""What a batch engine is, and the answers the in-process engines give.

An engine gets the parsed flags, the images that have no row yet, the output
and the progress bar; it writes one row per image it answers (through the
output, which never writes two rows for one image) and returns how many
images it left without an answer. The in-process engines (local, ray) hand
their answers over as the gRPC client reports a server's, so every engine's
rows come out of one `Row.of`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from pathlib import Path

import grpc
from tqdm import tqdm

from vggclient.batch.output import Output
from vggclient.client import Classification, ClassScore, ImageError

Engine = Callable[[argparse.Namespace, list[Path], Output, tqdm], int]


class EngineError(Exception):
    """An engine cannot run (Ray missing, no model version); the message says why."""


def answer(top: Iterable[tuple[int, str, float]], model_name: str, version: int) -> Classification:
    """An in-process answer: the top classes as (index, label, probability)."""
    return Classification([ClassScore(i, label, p) for i, label, p in top], model_name, version)


def refusal(code: str, message: str) -> ImageError:
    """An in-process refusal; `code` is the gRPC status name the server would answer."""
    return ImageError(grpc.StatusCode[code], message)
