"""Explain's bounds over a real server: pixels, the answer's size, calls at once.

Version 1 is an export made before overlays were bounded (its preprocessing.json
has no `overlay_max_side`: overlays at the image's own size); version 2 is this
release's (overlays at most 1024 px on the longest side). The server allows
4 MiB messages: a 1600x1200 overlay (5.8 MB of pixels) cannot fit, a 1024x768
one (2.4 MB) can, base64 included.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from model import layout
from model.data import synthetic
from model.export import export_model
from model.gradcam import PNG_COMPRESSION
from model.train import TrainResult
from service.core import explain_limits
from service.core.errors import InvalidRequest, QueueFull
from service.core.explain_limits import ExplainGate
from tests.helpers import encode, random_pixels
from tests.service.helpers import RunningServer, model_calls, settings_for
from tests.service.helpers import post_json as post
from vggclient.explain import explain

MESSAGE_BYTES = 4 * 1024 * 1024
MAX_PIXELS = 2_000_000
MAX_CONCURRENT = 2


def noisy_jpeg(width: int, height: int) -> bytes:
    """Noise: the answer's worst case for its size (a 1600x1200 one is about 1.1 MB)."""
    return encode(random_pixels(height, width, seed=width), fmt="JPEG")


@pytest.fixture(scope="module")
def bounded_server(
    tiny_model: TrainResult, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("explain-limits") / "tiny"
    version = Path(tiny_model.version_dir)
    model = keras.saving.load_model(version / layout.KERAS_MODEL)
    unbounded = replace(layout.read_preprocessing(version), overlay_max_side=None)
    old = export_model(model, unbounded, synthetic.CLASS_NAMES, root, version=1)
    settings = json.loads((old / layout.PREPROCESSING).read_text())
    del settings["overlay_max_side"]  # as written before the field existed
    (old / layout.PREPROCESSING).write_text(json.dumps(settings))
    shutil.copytree(version, root / "2")
    running = RunningServer(
        settings_for(
            root,
            versions="1,2",
            max_message_bytes=MESSAGE_BYTES,
            explain_max_pixels=MAX_PIXELS,
            explain_max_concurrent=MAX_CONCURRENT,
        )
    )
    running.load()
    yield running
    running.stop()


def grpc_refusal(server: RunningServer, image: bytes, version: int) -> grpc.RpcError:
    with server.client(timeout=30.0, max_message_bytes=MESSAGE_BYTES) as c:
        c.wait_until_serving()
        with pytest.raises(grpc.RpcError) as caught:
            explain(c, image, version=version)
    return caught.value


def rest_explain(server: RunningServer, images: list[bytes], version: int) -> tuple[int, dict]:
    instances = [{"b64": base64.b64encode(image).decode()} for image in images]
    return post(server, f"/v1/models/tiny/versions/{version}:explain", {"instances": instances})


def test_unbounded_overlay_that_cannot_fit_is_refused_before_work(
    bounded_server: RunningServer,
) -> None:
    image = noisy_jpeg(1600, 1200)
    before = model_calls(bounded_server)
    refused = grpc_refusal(bounded_server, image, version=1)
    status, body = rest_explain(bounded_server, [image], version=1)
    assert model_calls(bounded_server) == before  # nothing was computed
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    for message in (refused.details(), body["error"]):
        assert "1600x1200 image (overlay 1600x1200)" in message, message
        assert f"limited to {MESSAGE_BYTES} bytes (--max-message-bytes)" in message
        assert "re-export it" in message
    assert status == 400


def test_image_over_explain_max_pixels_is_refused_before_work(
    bounded_server: RunningServer,
) -> None:
    image = noisy_jpeg(1500, 1500)  # 2.25 Mpx: within --max-image-pixels, not Explain's
    before = model_calls(bounded_server)
    refused = grpc_refusal(bounded_server, image, version=2)
    status, body = rest_explain(bounded_server, [image], version=2)
    assert model_calls(bounded_server) == before
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert status == 400
    for message in (refused.details(), body["error"]):
        assert f"1500x1500 = 2250000 pixels; Explain takes at most {MAX_PIXELS}" in message
        assert "(--explain-max-pixels)" in message
    with bounded_server.client(timeout=30.0) as c:
        assert c.classify(image).model_version == 2  # Classify's limit is its own


def test_bounded_overlay_fits_and_is_at_most_its_max_side(bounded_server: RunningServer) -> None:
    image = noisy_jpeg(1600, 1200)
    with bounded_server.client(timeout=60.0, max_message_bytes=MESSAGE_BYTES) as c:
        c.wait_until_serving()
        answer = explain(c, image, version=2)
    assert Image.open(io.BytesIO(answer.overlay_png)).size == (1024, 768)
    assert Image.open(io.BytesIO(answer.heatmap_png)).size == (16, 16)  # the model's input
    status, body = rest_explain(bounded_server, [image], version=2)
    assert status == 200, body
    overlay = base64.b64decode(body["explanations"][0]["overlay_png"]["b64"])
    assert Image.open(io.BytesIO(overlay)).size == (1024, 768)


def test_images_whose_answers_fit_alone_but_not_together_are_refused(
    bounded_server: RunningServer,
) -> None:
    before = model_calls(bounded_server)
    status, body = rest_explain(bounded_server, [noisy_jpeg(1600, 1200)] * 2, version=2)
    assert (status, model_calls(bounded_server)) == (400, before)
    assert "these 2 images may take" in body["error"], body
    assert "send fewer images per request" in body["error"]


def test_old_export_still_explains_small_images(bounded_server: RunningServer) -> None:
    image = encode(random_pixels(30, 20, seed=4))
    with bounded_server.client(timeout=30.0) as c:
        c.wait_until_serving()
        answer = explain(c, image, version=1)
    assert Image.open(io.BytesIO(answer.overlay_png)).size == (20, 30)


def test_explain_beyond_its_concurrency_is_refused_at_once(bounded_server: RunningServer) -> None:
    image = encode(random_pixels(16, 16))
    status, body = rest_explain(bounded_server, [image] * (MAX_CONCURRENT + 1), version=2)
    assert status == 400  # never fits: retrying cannot help
    assert f"at most {MAX_CONCURRENT} are explained at once" in body["error"], body
    gate = bounded_server.server.core.explain_gate
    gate.acquire(MAX_CONCURRENT)  # as if two explanations were running
    try:
        refused = grpc_refusal(bounded_server, image, version=2)
        status, body = rest_explain(bounded_server, [image], version=2)
        with bounded_server.client(timeout=30.0) as c:
            assert c.classify(image).model_version == 2  # Classify is not held back
    finally:
        gate.release(MAX_CONCURRENT)
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status == 429
    for message in (refused.details(), body["error"]):
        assert f"the most at once is {MAX_CONCURRENT} (--explain-max-concurrent)" in message
        assert "retry with backoff" in message
    with bounded_server.client(timeout=30.0) as c:
        assert explain(c, image, version=2).classification.model_version == 2
    assert gate.in_use == 0


@pytest.mark.parametrize("height, width", [(1, 1), (16, 16), (7, 1301), (768, 1024)])
@pytest.mark.parametrize("channels", [1, 3])
def test_png_bound_holds_for_noise(height: int, width: int, channels: int) -> None:
    """Noise does not compress: the PNG the graph writes stays within the estimate."""
    pixels = np.random.default_rng(height).integers(0, 256, (height, width, channels), np.uint8)
    written = tf.io.encode_png(pixels, compression=PNG_COMPRESSION).numpy()
    assert len(written) <= explain_limits.png_bytes(height, width, channels)
    assert explain_limits.png_bytes(height, width, channels) < 1.01 * len(written) + 1100


def test_gate_admits_all_or_none_and_frees_on_failure() -> None:
    gate = ExplainGate(3)
    with gate.admit(2):
        with pytest.raises(QueueFull, match=r"2 images are being explained.*most at once is 3"):
            gate.acquire(2)
        assert gate.in_use == 2  # the refused call took nothing
        with gate.admit(1):
            assert gate.in_use == 3
    assert gate.in_use == 0
    with pytest.raises(RuntimeError), gate.admit(3):
        raise RuntimeError("the explanation failed")
    assert gate.in_use == 0
    with pytest.raises(InvalidRequest, match="holds 4 images"):
        gate.acquire(4)
