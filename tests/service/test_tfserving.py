"""TF Serving's APIs, driven by the unmodified tensorflow-serving-api stubs and plain HTTP."""

from __future__ import annotations

import base64
import json
import re
import shutil
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tests.helpers import (
    assert_answered_by,
    bomb_png,
    encode,
    in_process,
    make_ca,
    make_leaf,
    random_pixels,
)
from tests.service.helpers import RunningServer, assert_answer_described, settings_for

NAME = "tiny"  # the model folder's name (tests/conftest.py: model_dir)
IMAGES = [encode(random_pixels(24, 24, seed=i), fmt) for i, fmt in enumerate(["PNG", "JPEG"])]
PIXELS = random_pixels(16, 12, seed=7)


def truncated_jpeg() -> bytes:
    data = encode(random_pixels(64, 64), "JPEG")
    return data[: len(data) // 2]


# Each is refused on its own: header check, size check or the decoder.
BAD = {
    "empty": b"",
    "not-an-image": b"hello, this is text",
    "truncated-jpeg": truncated_jpeg(),
    "bomb": bomb_png(),
}


def string_tensor(values: list[bytes]) -> tensor_pb2.TensorProto:
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(values))]
    )
    return tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape, string_val=values)


def probabilities(response: predict_pb2.PredictResponse) -> np.ndarray:
    tensor = response.outputs["probabilities"]
    dims = [d.size for d in tensor.tensor_shape.dim]
    return np.frombuffer(tensor.tensor_content, np.float32).reshape(dims)


def predict_request(images: list[bytes], version: int | None = None, name: str = NAME) -> Any:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    request.inputs["images"].CopyFrom(string_tensor(images))
    return request


@pytest.fixture(scope="module")
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    with server.client(timeout=30) as client:
        client.wait_until_serving()
    with grpc.insecure_channel(server.target) as ch:
        yield ch


def http(
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, Any]:
    """(status, JSON answer) of one request, errors included; the answer is checked
    against the OpenAPI description the server serves."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            status, media, raw = response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            status, media, raw = exc.code, exc.headers["Content-Type"], exc.read()
    assert_answer_described(url, request.get_method(), status, media, raw, context, data)
    return status, json.loads(raw)


def b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode()}


# --- gRPC ----------------------------------------------------------------------------------


SERVICES = ["tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"]


def test_reflection_and_health_cover_the_tfserving_services(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (response,) = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    assert set(SERVICES) <= {s.name for s in response.list_services_response.service}
    health = health_pb2_grpc.HealthStub(channel)
    for service in SERVICES:
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_predict_encoded_images_equals_the_savedmodel(
    channel: grpc.Channel, model_dir: Path
) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = stub.Predict(predict_request(IMAGES), timeout=30)
    assert response.model_spec.name == NAME and response.model_spec.version.value == 2
    assert response.model_spec.signature_name == "serving_default"
    assert_answered_by(probabilities(response), model_dir, IMAGES, version=2)
    older = stub.Predict(predict_request(IMAGES, version=1), timeout=30)
    assert older.model_spec.version.value == 1
    # model_spec.version chose the weights, not only the number reported.
    assert_answered_by(probabilities(older), model_dir, IMAGES, version=1)


def test_predict_pixels_through_serving_pixels(channel: grpc.Channel, model_dir: Path) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = NAME
    request.model_spec.signature_name = "serving_pixels"
    batch = np.stack([PIXELS, PIXELS[::-1]])
    tensor = request.inputs["pixels"]
    tensor.dtype = types_pb2.DT_UINT8
    tensor.tensor_shape.dim.extend(
        tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in batch.shape
    )
    tensor.tensor_content = batch.tobytes()
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
        request, timeout=30
    )
    # PNG is lossless: the same pixels, encoded, give the same answer.
    expected = in_process(model_dir, [encode(image, "PNG") for image in batch])
    np.testing.assert_allclose(probabilities(response), expected, atol=1e-5)


def test_classify_answers_every_label_most_probable_first(
    channel: grpc.Channel, model_dir: Path
) -> None:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = NAME
    for image in IMAGES:
        example = request.input.example_list.examples.add()
        example.features.feature["image/encoded"].bytes_list.value.append(image)
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Classify(
        request, timeout=30
    )
    labels = (model_dir / "2" / "assets" / "labels.txt").read_text().split()
    for row, result in zip(
        in_process(model_dir, IMAGES), response.result.classifications, strict=True
    ):
        scores = [c.score for c in result.classes]
        assert scores == sorted(scores, reverse=True) and len(scores) == len(labels)
        assert result.classes[0].label == labels[int(np.argmax(row))]
        for c in result.classes:
            assert c.score == pytest.approx(row[labels.index(c.label)], abs=1e-5)


def test_model_metadata_is_a_signature_def_map(channel: grpc.Channel) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = NAME
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(
        request, timeout=30
    )
    defs = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(defs)
    assert set(defs.signature_def) == {"serving_default", "serving_pixels"}
    assert defs.signature_def["serving_default"].inputs["images"].dtype == types_pb2.DT_STRING
    assert defs.signature_def["serving_pixels"].inputs["pixels"].dtype == types_pb2.DT_UINT8
    output = defs.signature_def["serving_default"].outputs["probabilities"]
    assert output.dtype == types_pb2.DT_FLOAT and output.tensor_shape.dim[0].size == -1
    assert response.model_spec.version.value == 2


def test_model_status_lists_the_available_versions(channel: grpc.Channel) -> None:
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = NAME
    response = stub.GetModelStatus(request, timeout=30)
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert [(s.version, s.state) for s in response.model_version_status] == [
        (1, available),
        (2, available),
    ]
    request.model_spec.version.value = 9
    with pytest.raises(grpc.RpcError) as info:
        stub.GetModelStatus(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("request_", "code", "words"),
    [
        (predict_request(IMAGES, name="other"), grpc.StatusCode.NOT_FOUND, "not served here"),
        (predict_request(IMAGES, version=9), grpc.StatusCode.NOT_FOUND, "version 9 is not loaded"),
        (predict_request([]), grpc.StatusCode.INVALID_ARGUMENT, "holds no image"),
    ],
    ids=["unknown-model", "unknown-version", "no-image"],
)
def test_predict_errors(
    channel: grpc.Channel, request_: Any, code: grpc.StatusCode, words: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request_, timeout=30)
    assert info.value.code() == code and words in info.value.details()


def test_regress_is_unimplemented_with_a_reason(channel: grpc.Channel) -> None:
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = NAME
    with pytest.raises(grpc.RpcError) as info:
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Regress(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "image classifier" in info.value.details()


@pytest.mark.parametrize("bad", list(BAD))
def test_bad_images_are_invalid_argument_and_400(
    server: RunningServer, channel: grpc.Channel, bad: str
) -> None:
    images = [IMAGES[0], BAD[bad]]
    with pytest.raises(grpc.RpcError) as info:
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            predict_request(images), timeout=30
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("image 1 of 2: ")
    status, body = http(
        f"{server.rest_url}/v1/models/{NAME}:predict", {"instances": [b64(i) for i in images]}
    )
    assert status == 400 and body["error"] == info.value.details()


# --- REST ----------------------------------------------------------------------------------


def test_rest_predict_rows_and_columns_equal_the_savedmodel(
    server: RunningServer, model_dir: Path
) -> None:
    expected = in_process(model_dir, IMAGES)
    url = f"{server.rest_url}/v1/models/{NAME}:predict"
    status, rows = http(url, {"instances": [b64(i) for i in IMAGES]})
    assert status == 200
    np.testing.assert_allclose(rows["predictions"], expected, atol=1e-5)
    status, named = http(url, {"instances": [{"images": b64(i)} for i in IMAGES]})
    np.testing.assert_allclose(named["predictions"], expected, atol=1e-5)
    status, columns = http(url, {"inputs": {"images": [b64(i) for i in IMAGES]}})
    assert status == 200
    np.testing.assert_allclose(columns["outputs"], expected, atol=1e-5)
    status, pixels = http(
        f"{server.rest_url}/v1/models/{NAME}/versions/1:predict",
        {"signature_name": "serving_pixels", "instances": [PIXELS.tolist()]},
    )
    assert status == 200
    assert_answered_by(pixels["predictions"], model_dir, [encode(PIXELS, "PNG")], version=1)


def test_rest_classify_status_and_metadata(server: RunningServer, model_dir: Path) -> None:
    base = f"{server.rest_url}/v1/models/{NAME}"
    status, body = http(f"{base}:classify", {"examples": [{"image/encoded": b64(IMAGES[0])}]})
    assert status == 200
    ((top_label, top_score), *_) = body["result"][0]
    labels = (model_dir / "2" / "assets" / "labels.txt").read_text().split()
    row = in_process(model_dir, IMAGES[:1])[0]
    assert top_label == labels[int(np.argmax(row))] and top_score == pytest.approx(
        row.max(), abs=1e-5
    )
    status, body = http(base)
    assert status == 200
    assert [(s["version"], s["state"]) for s in body["model_version_status"]] == [
        ("1", "AVAILABLE"),
        ("2", "AVAILABLE"),
    ]
    status, body = http(f"{base}/versions/1/metadata")
    assert status == 200 and body["model_spec"]["version"] == "1"
    assert set(body["metadata"]["signature_def"]["signature_def"]) == {
        "serving_default",
        "serving_pixels",
    }


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/v1/models/other:predict", {"instances": []}, 404, "not served here"),
        ("/v1/models/tiny/versions/9:predict", {"instances": [b64(IMAGES[0])]}, 404, "version 9"),
        ("/v1/models/tiny/versions/9", None, 404, "version 9"),
        ("/v1/models/tiny:predict", b"{not json", 400, "not JSON"),
        ("/v1/models/tiny:predict", {"instances": [{"b64": "@@"}]}, 400, "not valid base64"),
        ("/v1/models/tiny:predict", {"instances": [[1, 2]]}, 400, "b64"),
        ("/v1/models/tiny:predict", {"signature_name": "x", "inputs": []}, 400, "signature 'x'"),
        ("/v1/models/tiny:predict?timeout=soon", {"instances": []}, 400, "positive number"),
        ("/v1/nothing", None, 404, "no such endpoint"),
    ],
)
def test_rest_errors_are_json_with_the_right_status(
    server: RunningServer, path: str, body: Any, status: int, words: str
) -> None:
    got, answer = http(server.rest_url + path, body)
    assert got == status and words in answer["error"]


def test_rest_timeout_becomes_the_deadline(server: RunningServer) -> None:
    status, body = http(
        f"{server.rest_url}/v1/models/{NAME}:predict",
        {"instances": [b64(IMAGES[0])]},
        headers={"Request-Timeout": "0.000001"},
    )
    assert status == 504 and "deadline" in body["error"]


def test_metrics_count_each_protocol(server: RunningServer, channel: grpc.Channel) -> None:
    prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
        predict_request(IMAGES), timeout=30
    )
    http(f"{server.rest_url}/v1/models/{NAME}:predict", {"instances": [b64(IMAGES[0])]})
    text = server.metrics()
    for protocol, method in [("tfserving-grpc", "Predict"), ("tfserving-rest", "Predict")]:
        assert re.search(
            rf'^vggserve_requests_total{{code="OK",method="{method}",protocol="{protocol}"}} [1-9]',
            text,
            re.M,
        ), protocol
        assert re.search(
            rf'^vggserve_images_total{{code="OK",outcome="ok",protocol="{protocol}"}} [1-9]',
            text,
            re.M,
        ), protocol


# --- a server with tokens, TLS, a small body limit and a version that fails to load ------------


@pytest.fixture(scope="module")
def guarded(
    model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, Path]]:
    folder = tmp_path_factory.mktemp("guarded")
    ca = make_ca(folder, "ca")
    make_leaf(folder, "server", ca, server=True)
    (folder / "tokens").write_text("good-token\n")
    models = folder / NAME
    shutil.copytree(model_dir / "2", models / "2")
    (models / "3").mkdir()
    (models / "3" / "saved_model.pb").write_bytes(b"not a SavedModel")
    running = RunningServer(
        settings_for(
            models,
            versions="latest:2",
            tls_cert=str(folder / "server.pem"),
            tls_key=str(folder / "server.key"),
            auth_token_file=str(folder / "tokens"),
            max_message_bytes=64 * 1024,
        )
    )
    running.load()
    yield running, folder
    running.stop()


def test_tokens_and_tls_cover_tfserving_grpc_and_rest(guarded: tuple[RunningServer, Path]) -> None:
    server, folder = guarded
    credentials = grpc.ssl_channel_credentials((folder / "ca.pem").read_bytes())
    with grpc.secure_channel(server.target, credentials) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(predict_request(IMAGES), timeout=30)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        token = [("authorization", "Bearer good-token")]
        assert stub.Predict(predict_request(IMAGES), timeout=30, metadata=token).outputs
    context = ssl.create_default_context(cafile=str(folder / "ca.pem"))
    url = f"https://127.0.0.1:{server.server.rest_port}"
    predict = f"{url}/v1/models/{NAME}:predict"
    body = {"instances": [b64(IMAGES[0])]}
    status, answer = http(predict, body, context=context)
    assert status == 401 and "missing credentials" in answer["error"]
    status, answer = http(predict, body, {"Authorization": "Bearer bad"}, context)
    assert status == 401 and "not valid" in answer["error"]
    status, answer = http(predict, body, {"Authorization": "Bearer good-token"}, context)
    assert status == 200 and len(answer["predictions"]) == 1
    # Scrapers carry no token: /metrics is open.
    with urllib.request.urlopen(f"{url}/metrics", timeout=10, context=context) as response:
        assert b"vggserve_requests_total" in response.read()
    # The body limit is the gRPC message limit: 413, as JSON.
    big = {"instances": [b64(bytes(70 * 1024))]}
    status, answer = http(predict, big, {"Authorization": "Bearer good-token"}, context)
    assert status == 413 and "--max-message-bytes" in answer["error"]


def test_a_version_that_fails_to_load_is_end_with_its_reason(
    guarded: tuple[RunningServer, Path],
) -> None:
    server, folder = guarded
    credentials = grpc.ssl_channel_credentials((folder / "ca.pem").read_bytes())
    with grpc.secure_channel(server.target, credentials) as channel:
        request = get_model_status_pb2.GetModelStatusRequest(
            model_spec=model_pb2.ModelSpec(name=NAME)
        )
        response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            request, timeout=30, metadata=[("authorization", "Bearer good-token")]
        )
    states = {s.version: s for s in response.model_version_status}
    assert states[2].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert states[3].state == get_model_status_pb2.ModelVersionStatus.END
    assert "failed to load" in states[3].status.error_message and states[3].status.error_code != 0
