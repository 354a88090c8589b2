"""Explain over a real server: an old export (no gradcam) beside a new one."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import keras
import pytest
from PIL import Image

from model import layout
from model.data import synthetic
from model.export import export_model
from model.train import TrainResult
from tests.conftest import encode, random_pixels
from tests.service.conftest import RunningServer, settings_for
from vggclient import batch
from vggclient import client as client_cli
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
    assert batch.main([str(photos), "--out", str(rows), "--explain-dir", str(beside), *target]) == 0
    assert len([json.loads(line) for line in rows.read_text().splitlines()]) == 3
    overlays = sorted(beside.iterdir())
    assert len(overlays) == 3 and all(p.name.endswith(".overlay.png") for p in overlays)
    Image.open(overlays[0]).verify()
