"""Explain over a real server: an old export (no gradcam) beside a new one."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import keras
import numpy as np
import pytest
from PIL import Image

from model import layout
from model.data import synthetic
from model.export import export_model
from model.train import TrainResult
from tests.helpers import encode, random_pixels
from tests.service.helpers import RunningServer, settings_for
from tests.service.helpers import post_json as post
from vggclient.batch import cli as batch_cli
from vggclient.cli import classify as client_cli
from vggclient.explain import explain


@pytest.fixture(scope="module")
def explain_server(
    tiny_model: TrainResult, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """Version 1 exported without the gradcam signature (as before it existed), 2 with it."""
    root = tmp_path_factory.mktemp("explain") / "tiny"
    version = Path(tiny_model.version_dir)
    model = keras.saving.load_model(version / layout.KERAS_MODEL)
    config = layout.read_preprocessing(version)
    export_model(model, config, synthetic.CLASS_NAMES, root, version=1, explanations=False)
    shutil.copytree(version, root / "2")
    running = RunningServer(settings_for(root, versions="1,2"))
    running.load()
    yield running
    running.stop()


def test_explain_matches_classify_and_returns_pngs(explain_server: RunningServer) -> None:
    image = encode(random_pixels(30, 20, seed=4))
    with explain_server.client(timeout=30.0) as c:
        c.wait_until_serving()
        answer = explain(c, image, top_k=3)
        classified = c.classify(image, top_k=3)
        chosen = explain(c, image, class_index=5)
    assert [s.index for s in answer.classification.classes] == [s.index for s in classified.classes]
    assert answer.class_index == classified.classes[0].index
    assert answer.label == classified.classes[0].label
    assert answer.classification.model_version == 2
    assert Image.open(io.BytesIO(answer.heatmap_png)).size == (16, 16)
    assert Image.open(io.BytesIO(answer.overlay_png)).size == (20, 30)
    assert (chosen.class_index, chosen.label) == (5, synthetic.CLASS_NAMES[5])


def test_old_version_classifies_but_refuses_to_explain(explain_server: RunningServer) -> None:
    image = encode(random_pixels(16, 16))
    with explain_server.client(timeout=30.0) as c:
        c.wait_until_serving()
        assert c.classify(image, version=1).model_version == 1
        with pytest.raises(grpc.RpcError) as caught:
            explain(c, image, version=1)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no 'gradcam' signature" in caught.value.details()


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"image": b"not an image"}, "not a JPEG, PNG, BMP or GIF file"),
        # Cut short: refused by the decoder alone, before the gradcam call.
        ({"image": encode(random_pixels(16, 16), "JPEG")[:300]}, "Invalid JPEG data"),
        ({"image": random_pixels(16, 16)}, "not raw pixels"),
        ({"class_index": 12}, "class_index 12 is out of range"),
    ],
)
def test_bad_requests_are_invalid_argument(
    explain_server: RunningServer, kwargs: dict, fragment: str
) -> None:
    args = {"image": encode(random_pixels(16, 16)), **kwargs}
    with explain_server.client(timeout=30.0) as c:
        c.wait_until_serving()
        with pytest.raises(grpc.RpcError) as caught:
            explain(c, args.pop("image"), **args)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in caught.value.details()


def test_client_and_batch_write_overlays(explain_server: RunningServer, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        (photos / f"p{i}.png").write_bytes(encode(random_pixels(16, 16, seed=i)))
    target = ["--target", explain_server.target]
    out = tmp_path / "overlays"
    files = [str(p) for p in sorted(photos.iterdir())]
    assert client_cli.main([*files, "--explain", str(out), *target]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "p0.overlay.png",
        "p1.overlay.png",
        "p2.overlay.png",
    ]
    rows = tmp_path / "rows.jsonl"
    beside = tmp_path / "beside"
    argv = [str(photos), "--out", str(rows), "--explain-dir", str(beside), *target]
    assert batch_cli.main(argv) == 0
    assert len([json.loads(line) for line in rows.read_text().splitlines()]) == 3
    overlays = sorted(beside.iterdir())
    assert len(overlays) == 3 and all(p.name.endswith(".overlay.png") for p in overlays)
    Image.open(overlays[0]).verify()


def b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode()}


def unb64(value: dict[str, str]) -> bytes:
    return base64.b64decode(value["b64"])


def test_rest_explain_matches_the_grpc_answer(explain_server: RunningServer) -> None:
    images = [encode(random_pixels(30, 20, seed=4)), encode(random_pixels(16, 16, seed=5))]
    status, body = post(
        explain_server,
        "/v1/models/tiny:explain",
        {"instances": [b64(i) for i in images], "class_index": [-1, 5], "top_k": 3},
    )
    assert status == 200, body
    with explain_server.client(timeout=30.0) as c:
        grpc_answers = [
            explain(c, images[0], top_k=3),
            explain(c, images[1], class_index=5, top_k=3),
        ]
    assert body["model_spec"] == {"name": "tiny", "version": "2"}
    for got, want in zip(body["explanations"], grpc_answers, strict=True):
        assert (got["class_index"], got["label"]) == (want.class_index, want.label)
        assert [label for label, _ in got["top"]] == [s.label for s in want.classification.classes]
        # The same heat: batch-mates differ between the two calls, which moves
        # float results by a rounding step at most.
        for key, png in (("heatmap_png", want.heatmap_png), ("overlay_png", want.overlay_png)):
            rest_pixels = np.asarray(Image.open(io.BytesIO(unb64(got[key]))), dtype=np.int16)
            grpc_pixels = np.asarray(Image.open(io.BytesIO(png)), dtype=np.int16)
            assert rest_pixels.shape == grpc_pixels.shape
            assert np.abs(rest_pixels - grpc_pixels).max() <= 2, key
    assert Image.open(io.BytesIO(unb64(body["explanations"][0]["overlay_png"]))).size == (20, 30)


@pytest.mark.parametrize(
    "path, body, status, fragment",
    [
        ("/v1/models/tiny/versions/1:explain", None, 400, "no 'gradcam' signature"),
        ("/v1/models/tiny:explain", {"class_index": [1, 2]}, 400, "a list of 1 of them"),
        ("/v1/models/tiny:explain", {"top_k": -1}, 400, '"top_k" must be'),
        ("/v1/models/other:explain", None, 404, "not served here"),
    ],
)
def test_rest_explain_errors(
    explain_server: RunningServer, path: str, body: dict | None, status: int, fragment: str
) -> None:
    request = {"instances": [b64(encode(random_pixels(16, 16)))], **(body or {})}
    got_status, got = post(explain_server, path, request)
    assert (got_status, fragment in got["error"]) == (status, True), got


def test_batch_overlays_wait_their_turn_at_a_full_explain_gate(
    tiny_model: TrainResult, tmp_path: Path
) -> None:
    # Three batch jobs explain at once against a server that explains one image
    # at a time: the refused calls (RESOURCE_EXHAUSTED) are resent after a
    # backoff, so every job still gets every overlay and exits 0.
    running = RunningServer(
        settings_for(Path(tiny_model.version_dir).parent, explain_max_concurrent=1)
    )
    running.load()
    try:
        jobs = []
        for job in range(3):
            photos = tmp_path / f"photos{job}"
            photos.mkdir()
            for i in range(4):
                (photos / f"p{i}.png").write_bytes(encode(random_pixels(48, 48, seed=10 * job + i)))
            argv = [str(photos), "--out", str(tmp_path / f"rows{job}.jsonl")]
            argv += ["--explain-dir", str(tmp_path / f"overlays{job}"), "--target", running.target]
            argv += ["--backoff", "0.02", "--max-retries", "50"]
            jobs.append(argv)
        with ThreadPoolExecutor(len(jobs)) as pool:
            codes = list(pool.map(batch_cli.main, jobs))
        assert codes == [0, 0, 0]
        for job in range(3):
            assert len(list((tmp_path / f"overlays{job}").iterdir())) == 4
        refused = re.findall(
            r'^vggserve_requests_total\{code="RESOURCE_EXHAUSTED",method="Explain",[^}]*\} '
            r"([\d.]+)$",
            running.metrics(),
            re.M,
        )
        # Not a timing assertion: it shows the gate was reached, so the backoff was exercised.
        assert refused and float(refused[0]) > 0, (
            "no Explain call was refused; the gate was never full"
        )
    finally:
        running.stop()
