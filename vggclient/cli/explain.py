"""`python -m vggclient.client --explain OUT_DIR IMAGE...`: a Grad-CAM overlay per file.

Writes OUT_DIR/<stem>.overlay.png for each image and prints the class it
explains. A file that cannot be read, or an image the server refuses, is
reported and the others go on; anything else the server answers stops the run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc

from vggclient.cli.connection import client_from_args
from vggclient.explain import explain, overlay_name


def write_overlays(args: argparse.Namespace) -> int:
    """`--explain OUT_DIR`: one overlay per image; 0 if all worked, 1 if some failed."""
    out = Path(args.explain)
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    try:
        with client_from_args(args) as client:
            for name in args.images:
                try:
                    answer = explain(client, Path(name).read_bytes(), top_k=args.top_k)
                except OSError as exc:
                    failed += 1
                    print(
                        f"{name}: error: cannot read file: {exc.strerror or exc}", file=sys.stderr
                    )
                    continue
                except grpc.RpcError as exc:
                    if exc.code() in (grpc.StatusCode.INVALID_ARGUMENT,):
                        failed += 1  # this image's fault: go on with the others
                        print(f"{name}: error: {exc.code().name}: {exc.details()}", file=sys.stderr)
                        continue
                    raise
                target = out / overlay_name(name)
                target.write_bytes(answer.overlay_png)
                top = answer.classification.classes[0]
                print(
                    f"{name}  {top.probability:7.2%} {top.label}  "
                    f"(explained: {answer.label}) -> {target}"
                )
    except grpc.RpcError as exc:
        print(f"error: {args.target}: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:  # token or TLS files, a token without TLS
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1 if failed else 0
