"""Client side of Explain: Grad-CAM overlays of image files, from a vggserve server.

    with Client("127.0.0.1:8500") as client:
        answer = explain(client, "cat.jpg")
        Path("cat.overlay.png").write_bytes(answer.overlay_png)

`python -m vggclient.client --explain OUT_DIR IMAGE...` (vggclient.cli.explain) writes
OUT_DIR/<stem>.overlay.png for each image; `vggclient.batch --explain-dir` uses
`overlay_name` for the same naming.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from protos.vggserve.v1 import classifier_pb2 as pb
from vggclient.client import Classification, Client, ImageLike, image_message


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
