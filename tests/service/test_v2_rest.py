"""The Open Inference Protocol over REST: tritonclient's http client, and plain HTTP."""

from __future__ import annotations

import base64
import json
import struct
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model.data import synthetic
from tests.helpers import assert_answered_by, encode, in_process, random_pixels
from tests.service.helpers import (
    BAD_ENCODED,
    RunningServer,
    assert_answer_described,
    run_probe,
    scrape,
    settings_for,
)

N_CLASSES = len(synthetic.CLASS_NAMES)
IMAGE = encode(random_pixels(10, 12, seed=11), "PNG")


def call(
    server: RunningServer,
    path: str,
    body: bytes | dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request; error statuses too.

    The answer is checked against the OpenAPI description the server serves.
    """
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    url = f"{server.rest_url}{path}"
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, answer, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        with error:
            status, answer, raw = error.code, dict(error.headers), error.read()
    assert_answer_described(
        url, request.get_method(), status, answer["Content-Type"], raw, sent=data
    )
    return status, answer, raw


def json_call(server: RunningServer, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
    status, _, raw = call(server, path, body, **kw)
    return status, json.loads(raw)


def images_body(*elements: Any, **extra: Any) -> dict[str, Any]:
    tensor = {"name": "images", "datatype": "BYTES", "shape": [len(elements)], "data": elements}
    return {"inputs": [tensor], **extra}


def test_tritonclient_http_classifies_like_the_savedmodel(
    server: RunningServer, model_dir: Path, tmp_path: Path
) -> None:
    images = [encode(random_pixels(19, 22, seed=i), fmt) for i, fmt in enumerate(["JPEG", "PNG"])]
    files = []
    for i, image in enumerate(images):
        files.append(tmp_path / f"image{i}")
        files[-1].write_bytes(image)
    pixels = random_pixels(16, 16, seed=8)[None]
    np.save(tmp_path / "pixels.npy", pixels)
    bad = []
    for i, (data, _) in enumerate(BAD_ENCODED):
        bad.append(tmp_path / f"bad{i}")
        bad[-1].write_bytes(data)
    url = server.rest_url.removeprefix("http://")

    seen = run_probe(
        "--protocol", "http", "--url", url, "--model", "tiny",
        "--encoded", *map(str, files), "--pixels", str(tmp_path / "pixels.npy"),
        "--classes", "2", "--bad", *map(str, bad),
    )  # fmt: skip

    assert "error" not in seen, seen["error"]
    assert (seen["live"], seen["ready"], seen["model_ready"]) == (True, True, True)
    assert seen["other_model_ready"] is False
    assert seen["server"]["extensions"] == ["classification", "binary_tensor_data"]
    assert seen["model"]["outputs"] == [["probabilities", "FP32", [-1, N_CLASSES]]]
    expected = in_process(model_dir, images)
    np.testing.assert_allclose(seen["encoded"], expected, atol=1e-5)  # binary data both ways
    np.testing.assert_allclose(seen["encoded_json"], expected, atol=1e-5)  # base64 JSON
    np.testing.assert_allclose(
        seen["pixels"], in_process(model_dir, [encode(pixels[0], "PNG")]), atol=1e-5
    )
    for row, strings in zip(expected, seen["classification"], strict=True):
        assert [int(s.split(":")[1]) for s in strings] == np.argsort(-row)[:2].tolist()
    for (_, reason), answer in zip(BAD_ENCODED, seen["bad"], strict=True):
        assert answer["status"] == "400", answer
        assert reason in answer["message"]


def test_health_metadata_and_readiness_with_plain_http(server: RunningServer) -> None:
    assert json_call(server, "/v2/health/live") == (200, {"live": True})
    assert json_call(server, "/v2/health/ready") == (200, {"ready": True})
    status, meta = json_call(server, "/v2")
    assert status == 200 and meta["name"] == "vggserve"
    status, model = json_call(server, "/v2/models/tiny/versions/1")
    assert status == 200 and model["versions"] == ["1", "2"]
    assert json_call(server, "/v2/models/tiny/ready") == (200, {"name": "tiny", "ready": True})
    assert json_call(server, "/v2/models/tiny/versions/7/ready")[0] == 503
    status, error = json_call(server, "/v2/models/other")
    assert status == 404 and "model 'other' is not served here" in error["error"]


def test_json_bytes_as_base64_strings_or_b64_objects_and_pixels_as_nested_lists(
    server: RunningServer, model_dir: Path
) -> None:
    text = base64.b64encode(IMAGE).decode()
    expected = in_process(model_dir, [IMAGE, IMAGE])
    status, answer = json_call(
        server, "/v2/models/tiny/versions/2/infer", images_body(text, {"b64": text}, id="r7")
    )
    assert status == 200 and answer["id"] == "r7" and answer["model_version"] == "2"
    (output,) = answer["outputs"]
    assert (output["datatype"], output["shape"]) == ("FP32", [2, N_CLASSES])
    assert_answered_by(output["data"], model_dir, [IMAGE, IMAGE], version=2)
    # /versions/N/ chooses the weights, not only the number reported.
    status, older = json_call(server, "/v2/models/tiny/versions/1/infer", images_body(text))
    assert status == 200 and older["model_version"] == "1"
    assert_answered_by(older["outputs"][0]["data"], model_dir, [IMAGE], version=1)

    rgb = random_pixels(10, 12, seed=11)
    pixels = {"name": "pixels", "datatype": "UINT8", "shape": [10, 12, 3], "data": rgb.tolist()}
    status, answer = json_call(server, "/v2/models/tiny/infer", {"inputs": [pixels]})
    assert status == 200
    np.testing.assert_allclose(answer["outputs"][0]["data"], expected[0], atol=1e-5)


def test_binary_data_extension_by_hand(server: RunningServer, model_dir: Path) -> None:
    raw = struct.pack("<I", len(IMAGE)) + IMAGE
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "images",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
    ).encode()
    status, headers, body = call(
        server,
        "/v2/models/tiny/infer",
        header + raw,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert status == 200
    split = int(headers["Inference-Header-Content-Length"])
    answer = json.loads(body[:split])
    assert answer["outputs"][0]["parameters"]["binary_data_size"] == 4 * N_CLASSES
    values = np.frombuffer(body[split:], "<f4")
    np.testing.assert_allclose(values, in_process(model_dir, [IMAGE])[0], atol=1e-5)


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v2/models/tiny/infer", b"{not json", 400, "request body is not JSON"),
        ("/v2/models/tiny/infer", images_body("not base64!"), 400, "images[0] is not base64"),
        ("/v2/models/tiny/infer", images_body(7), 400, "images[0] is int"),
        ("/v2/models/tiny/infer", {"inputs": 3}, 400, '"inputs": a list of tensors'),
        ("/v2/models/tiny/versions/9/infer", images_body(""), 404, "version 9 is not loaded"),
        ("/v2/models/x/infer", images_body(""), 404, "model 'x' is not served here"),
        (
            "/v2/models/tiny/infer",
            images_body(base64.b64encode(IMAGE).decode(), outputs=[{"name": "logits"}]),
            400,
            "unknown output 'logits'",
        ),
    ],
    ids=["json", "base64", "not-a-string", "inputs", "version", "model", "output"],
)
def test_errors_are_json_with_the_native_meaning(
    server: RunningServer, path: str, body: Any, status: int, message: str
) -> None:
    got, answer = json_call(server, path, body)
    assert got == status
    assert message in answer["error"]


def test_metrics_carry_the_v2_rest_protocol(server: RunningServer) -> None:
    ok = 'vggserve_requests_total{code="OK",method="ModelInfer",protocol="v2-rest"}'
    bad = 'vggserve_images_total{code="INVALID_ARGUMENT",outcome="error",protocol="v2-rest"}'
    before = {name: scrape(server, name) for name in (ok, bad)}
    assert (
        json_call(server, "/v2/models/tiny/infer", images_body(base64.b64encode(IMAGE).decode()))[0]
        == 200
    )
    assert json_call(server, "/v2/models/tiny/infer", images_body(""))[0] == 400
    after = {name: scrape(server, name) for name in (ok, bad)}
    assert (after[ok] - before[ok], after[bad] - before[bad]) == (1, 1)


@pytest.fixture(scope="module")
def token_server(
    model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    running = RunningServer(settings_for(model_dir, auth_token="rest-token"))
    running.load()
    yield running
    running.stop()


def test_probes_are_open_and_the_rest_needs_the_token(token_server: RunningServer) -> None:
    assert json_call(token_server, "/v2/health/ready") == (200, {"ready": True})
    body = images_body(base64.b64encode(IMAGE).decode())
    status, answer = json_call(token_server, "/v2/models/tiny/infer", body)
    assert status == 401 and "missing credentials" in answer["error"]
    bearer = {"Authorization": "Bearer rest-token"}
    assert json_call(token_server, "/v2/models/tiny/infer", body, headers=bearer)[0] == 200
