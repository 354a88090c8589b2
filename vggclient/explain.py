"""Client side of Explain: Grad-CAM overlays of image files, from a vggserve server.

    with Client("127.0.0.1:8500") as client:
        answer = explain(client, "cat.jpg")
        Path("cat.overlay.png").write_bytes(answer.overlay_png)

`python -m vggclient.client --explain OUT_DIR IMAGE...` writes OUT_DIR/<stem>.overlay.png
for each image (and prints the class explained); `vggclient.batch --explain-dir`
uses `overlay_name` for the same naming.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc

from protos.vggserve.v1 import classifier_pb2 as pb
from vggclient.client import Classification, Client, ImageLike, client_from_args, image_message


@dataclass(frozen=True)
class ExplainResult:
    classification: Classification
    class_index: int
    label: str
    heatmap_png: bytes
    overlay_png: bytes


def explain(
    client: Client,
    image: ImageLike,
    class_index: int | None = None,
    top_k: int = 5,
    version: int = 0,
) -> ExplainResult:
    """Grad-CAM of one image for `class_index` (None: the most probable class).

    Raises grpc.RpcError with the server's status (FAILED_PRECONDITION for a
    version exported without explanations).
    """
    request = pb.ExplainRequest(image=image_message(image), top_k=top_k, model_version=version)
    if class_index is not None:
        request.class_index = class_index
    response = client.stub.Explain(request, timeout=client.timeout)
    return ExplainResult(
        Classification.from_proto(response.classification),
        response.class_index,
        response.label,
        response.heatmap_png,
        response.overlay_png,
    )


def overlay_name(image: str | Path) -> str:
    """The overlay file's name for an image: `<stem>.overlay.png`."""
    return f"{Path(image).stem}.overlay.png"


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
