"""`python -m vggclient.batch ... --explain-dir DIR`: a Grad-CAM overlay per image.

After the rows are written, each image with an ok row gets DIR/<stem>-<hash>.overlay.png
(the hash is of the row's path, so two `cat.jpg` in different folders do
not collide). An overlay already there is kept, so a rerun only fills the gaps,
as the rows do. Explain is one call per image: it has its own queue on the
server, so a batch of explanations does not slow other clients' Classify.
That queue is small (a few explanations at once), so "not now" answers
(RESOURCE_EXHAUSTED while other clients explain, UNAVAILABLE while a replica
drains) are resent after the same doubling backoff as the rows, until
--max-retries consecutive refusals.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import grpc

from vggclient.batch.rows import RETRYABLE
from vggclient.cli.connection import client_from_args
from vggclient.client import Client
from vggclient.explain import ExplainResult, explain, overlay_name


def overlay_path(out_dir: Path, row_path: str) -> Path:
    digest = hashlib.sha1(row_path.encode("utf-8")).hexdigest()[:8]
    name = overlay_name(row_path).replace(".overlay.png", f"-{digest}.overlay.png")
    return out_dir / name


def write_overlays(args: argparse.Namespace, row_paths: Iterable[str]) -> tuple[int, int]:
    """Overlays for `row_paths` (images with ok rows) into args.explain_dir.

    Returns (written, failed); raises grpc.RpcError when the server cannot
    answer at all (the caller reports it like any other connection failure).
    """
    out = Path(args.explain_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = failed = 0
    with client_from_args(args) as client:
        for row_path in row_paths:
            target = overlay_path(out, row_path)
            if target.exists():
                continue
            try:
                answer = _explain_with_backoff(client, args, Path(row_path).read_bytes())
            except OSError as exc:
                failed += 1
                print(f"{row_path}: no overlay: {exc.strerror or exc}", file=sys.stderr)
                continue
            except grpc.RpcError as exc:
                if exc.code() in RETRYABLE or exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                    raise  # the server's state, not the image's: stop and say so
                failed += 1
                print(
                    f"{row_path}: no overlay: {exc.code().name}: {exc.details()}", file=sys.stderr
                )
                continue
            partial = target.with_suffix(".part")
            partial.write_bytes(answer.overlay_png)
            partial.rename(target)  # a kill never leaves half a PNG under the final name
            written += 1
    return written, failed


def _explain_with_backoff(client: Client, args: argparse.Namespace, data: bytes) -> ExplainResult:
    """One explanation, resent after a doubling backoff while the server says "not now"."""
    refusals = 0
    while True:
        try:
            return explain(client, data, top_k=args.top_k)
        except grpc.RpcError as exc:
            refusals += 1
            if exc.code() not in RETRYABLE or refusals > args.max_retries:
                raise
            time.sleep(min(args.backoff * 2 ** (refusals - 1), 30.0))
