"""The Open Inference Protocol over gRPC: tritonclient unmodified, and the vendored stubs.

tritonclient runs in a subprocess (tests/service/triton_probe.py): it cannot
share a process with the vendored stubs this module uses.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from model.data import synthetic
from protos.inference import open_inference_grpc_pb2 as pb
from protos.inference import open_inference_grpc_pb2_grpc as pb_grpc
from tests.helpers import (
    assert_answered_by,
    encode,
    half_a_jpeg,
    in_process,
    make_ca,
    make_leaf,
    random_pixels,
)
from tests.service.helpers import BAD_ENCODED, RunningServer, run_probe, scrape, settings_for

N_CLASSES = len(synthetic.CLASS_NAMES)


def stub(server: RunningServer) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.target) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture
def v2(server: RunningServer) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    yield from stub(server)


def prefixed(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def tensor(name: str, datatype: str, shape: list[int]) -> pb.ModelInferRequest.InferInputTensor:
    return pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape)


def images_request(*items: bytes, raw: bool = True, **fields: Any) -> pb.ModelInferRequest:
    tensor = pb.ModelInferRequest.InferInputTensor(
        name="images", datatype="BYTES", shape=[len(items)]
    )
    request = pb.ModelInferRequest(inputs=[tensor], **{"model_name": "tiny", **fields})
    if raw:
        request.raw_input_contents.append(prefixed(*items))
    else:
        request.inputs[0].contents.bytes_contents.extend(items)
    return request


def error_of(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


# --- tritonclient, unmodified -------------------------------------------------------------------


def test_tritonclient_grpc_classifies_like_the_savedmodel(
    server: RunningServer, model_dir: Path, tmp_path: Path
) -> None:
    images = [
        encode(random_pixels(20 + i, 18, seed=i), fmt) for i, fmt in enumerate(["PNG", "JPEG"])
    ]
    files = []
    for i, image in enumerate(images):
        files.append(tmp_path / f"image{i}")
        files[-1].write_bytes(image)
    pixels = np.stack([random_pixels(16, 16, seed=5), random_pixels(16, 16, seed=6)])
    np.save(tmp_path / "pixels.npy", pixels)
    bad = []
    for i, (data, _) in enumerate(BAD_ENCODED):
        bad.append(tmp_path / f"bad{i}")
        bad[-1].write_bytes(data)

    seen = run_probe(
        "--protocol", "grpc", "--url", server.target, "--model", "tiny",
        "--encoded", *map(str, files), "--pixels", str(tmp_path / "pixels.npy"),
        "--classes", "3", "--bad", *map(str, bad),
    )  # fmt: skip

    assert "error" not in seen, seen["error"]
    assert (seen["live"], seen["ready"], seen["model_ready"]) == (True, True, True)
    assert seen["other_model_ready"] is False
    assert seen["server"] == {"name": "vggserve", "extensions": ["classification"]}
    assert seen["model"] == {
        "name": "tiny",
        "versions": ["1", "2"],
        "platform": "tensorflow_savedmodel",
        "inputs": [["images", "BYTES", [-1]], ["pixels", "UINT8", [-1, -1, -1, -1]]],
        "outputs": [["probabilities", "FP32", [-1, N_CLASSES]]],
    }
    expected = in_process(model_dir, images)
    np.testing.assert_allclose(seen["encoded"], expected, atol=1e-5)
    assert seen["model_version"] == "2"
    same_as_png = in_process(model_dir, [encode(p, "PNG") for p in pixels])
    np.testing.assert_allclose(seen["pixels"], same_as_png, atol=1e-5)

    for row, strings in zip(expected, seen["classification"], strict=True):
        top = np.argsort(-row, kind="stable")[:3]
        parsed = [s.split(":") for s in strings]
        assert [int(index) for _, index, _ in parsed] == top.tolist()
        assert [label for _, _, label in parsed] == [synthetic.CLASS_NAMES[i] for i in top]
        np.testing.assert_allclose([float(score) for score, _, _ in parsed], row[top], atol=1e-5)

    for (_, reason), answer in zip(BAD_ENCODED, seen["bad"], strict=True):
        assert answer["status"] == "StatusCode.INVALID_ARGUMENT", answer
        assert reason in answer["message"]


# --- the vendored stubs: both input forms, errors, health, metrics ------------------------------


def test_raw_and_typed_contents_give_the_same_answer_in_their_own_form(
    v2: pb_grpc.GRPCInferenceServiceStub, model_dir: Path
) -> None:
    images = [encode(random_pixels(12, 12, seed=i), "PNG") for i in range(3)]
    raw = v2.ModelInfer(images_request(*images, id="req-1"), timeout=30)
    typed = v2.ModelInfer(images_request(*images, raw=False), timeout=30)
    assert raw.id == "req-1" and (raw.model_name, raw.model_version) == ("tiny", "2")
    (out,) = raw.outputs
    assert (out.name, out.datatype, list(out.shape)) == ("probabilities", "FP32", [3, N_CLASSES])
    from_raw = np.frombuffer(raw.raw_output_contents[0], "<f4").reshape(3, N_CLASSES)
    assert not typed.raw_output_contents
    from_typed = np.array(typed.outputs[0].contents.fp32_contents).reshape(3, N_CLASSES)
    assert_answered_by(from_raw, model_dir, images, version=2)
    np.testing.assert_allclose(from_typed, from_raw, atol=1e-7)


def test_pixels_as_typed_uint8_contents_of_one_image(
    v2: pb_grpc.GRPCInferenceServiceStub, model_dir: Path
) -> None:
    rgb = random_pixels(10, 14, seed=9)
    tensor = pb.ModelInferRequest.InferInputTensor(
        name="pixels", datatype="UINT8", shape=[10, 14, 3]
    )
    tensor.contents.uint_contents.extend(rgb.ravel().tolist())
    answer = v2.ModelInfer(pb.ModelInferRequest(model_name="tiny", inputs=[tensor]), timeout=30)
    assert list(answer.outputs[0].shape) == [1, N_CLASSES]
    np.testing.assert_allclose(
        answer.outputs[0].contents.fp32_contents,
        in_process(model_dir, [encode(rgb, "PNG")])[0],
        atol=1e-5,
    )


def test_a_version_can_be_named_and_classification_comes_as_strings(
    v2: pb_grpc.GRPCInferenceServiceStub, model_dir: Path
) -> None:
    image = encode(random_pixels(8, 8))
    for version in (1, 2):
        probabilities = v2.ModelInfer(
            images_request(image, raw=False, model_version=str(version)), timeout=30
        )
        assert probabilities.model_version == str(version)
        # model_version chose the weights, not only the number reported.
        served = probabilities.outputs[0].contents.fp32_contents
        assert_answered_by(served, model_dir, [image], version)
    request = images_request(image, raw=False, model_version="1")
    output = request.outputs.add(name="probabilities")
    output.parameters["classification"].int64_param = 2
    answer = v2.ModelInfer(request, timeout=30)
    assert answer.model_version == "1"
    assert (answer.outputs[0].datatype, list(answer.outputs[0].shape)) == ("BYTES", [1, 2])
    expected = in_process(model_dir, [image], version=1)[0]
    top = np.argsort(-expected, kind="stable")[:2]
    for item, index in zip(answer.outputs[0].contents.bytes_contents, top, strict=True):
        assert re.fullmatch(rb"\d\.\d{6}:\d+:\w+", item), item
        score, got, label = item.decode().split(":")
        assert (int(got), label) == (index, synthetic.CLASS_NAMES[index])
        assert float(score) == pytest.approx(expected[index], abs=1e-5)


def _pixels_tensor(shape: list[int], data: bytes) -> pb.ModelInferRequest:
    tensor = pb.ModelInferRequest.InferInputTensor(name="pixels", datatype="UINT8", shape=shape)
    return pb.ModelInferRequest(model_name="tiny", inputs=[tensor], raw_input_contents=[data])


IMAGE = encode(random_pixels(8, 8))


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (images_request(IMAGE, model_name="other"), "NOT_FOUND", "model 'other' is not served"),
        (images_request(IMAGE, model_version="9"), "NOT_FOUND", "version 9 is not loaded"),
        (images_request(IMAGE, model_version="v1"), "INVALID_ARGUMENT", "positive integer"),
        (
            pb.ModelInferRequest(
                model_name="tiny",
                inputs=[tensor("x", "FP32", [1])],
            ),
            "INVALID_ARGUMENT",
            "input 'x' of type FP32: this model takes one input",
        ),
        (pb.ModelInferRequest(model_name="tiny"), "INVALID_ARGUMENT", "the request has 0 inputs"),
        (
            pb.ModelInferRequest(
                model_name="tiny",
                inputs=[
                    tensor("images", "BYTES", [2])
                ],
                raw_input_contents=[prefixed(IMAGE)],
            ),
            "INVALID_ARGUMENT",
            "has shape [2] but 1 elements",
        ),
        (
            pb.ModelInferRequest(
                model_name="tiny",
                inputs=[
                    tensor("images", "BYTES", [1])
                ],
                raw_input_contents=[struct.pack("<I", 999) + IMAGE],
            ),
            "INVALID_ARGUMENT",
            "a BYTES element says 999 bytes",
        ),
        (
            images_request(IMAGE, outputs=[{"name": "logits"}]),
            "INVALID_ARGUMENT",
            "unknown output 'logits'",
        ),
        (_pixels_tensor([1, 4, 4, 3], b"\0" * 10), "INVALID_ARGUMENT", "needs 48 bytes; got 10"),
        (_pixels_tensor([4, 4, 2], b"\0" * 32), "INVALID_ARGUMENT", "2 channels; supported"),
        (_pixels_tensor([0, 4, 3], b""), "INVALID_ARGUMENT", "both sides must be at least 1"),
    ],
    ids=[
        "unknown-model", "unknown-version", "bad-version", "wrong-input", "no-input",
        "shape-mismatch", "bad-length-prefix", "unknown-output", "pixel-size", "channels",
        "empty-side",
    ],
)  # fmt: skip
def test_errors_carry_the_native_codes_and_a_message(
    v2: pb_grpc.GRPCInferenceServiceStub, request_: pb.ModelInferRequest, code: str, message: str
) -> None:
    error = error_of(lambda: v2.ModelInfer(request_, timeout=30))
    assert error.code() == grpc.StatusCode[code]
    assert message in error.details()


def test_one_bad_image_fails_the_request_naming_it(v2: pb_grpc.GRPCInferenceServiceStub) -> None:
    error = error_of(lambda: v2.ModelInfer(images_request(IMAGE, half_a_jpeg(), IMAGE), timeout=30))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("image 1 of 3: image does not decode")


def test_health_metadata_and_readiness(
    server: RunningServer, v2: pb_grpc.GRPCInferenceServiceStub
) -> None:
    assert v2.ServerLive(pb.ServerLiveRequest(), timeout=10).live
    assert v2.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
    assert v2.ModelReady(pb.ModelReadyRequest(name="tiny", version="1"), timeout=10).ready
    assert not v2.ModelReady(pb.ModelReadyRequest(name="tiny", version="3"), timeout=10).ready
    meta = v2.ModelMetadata(pb.ModelMetadataRequest(name="tiny", version="1"), timeout=10)
    assert list(meta.versions) == ["1", "2"]
    error = error_of(lambda: v2.ModelMetadata(pb.ModelMetadataRequest(name="x"), timeout=10))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    with grpc.insecure_channel(server.target) as channel:
        request = health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService")
        health = health_pb2_grpc.HealthStub(channel).Check(request, timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        listed = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        names = {s.name for s in next(iter(listed)).list_services_response.service}
    assert "inference.GRPCInferenceService" in names


def test_metrics_carry_the_v2_grpc_protocol(
    server: RunningServer, v2: pb_grpc.GRPCInferenceServiceStub
) -> None:
    ok = 'vggserve_requests_total{code="OK",method="ModelInfer",protocol="v2-grpc"}'
    images_ok = 'vggserve_images_total{code="OK",outcome="ok",protocol="v2-grpc"}'
    bad = 'vggserve_images_total{code="INVALID_ARGUMENT",outcome="error",protocol="v2-grpc"}'
    before = {name: scrape(server, name) for name in (ok, images_ok, bad)}
    v2.ModelInfer(images_request(IMAGE, IMAGE), timeout=30)
    error_of(lambda: v2.ModelInfer(images_request(b"junk"), timeout=30))
    after = {name: scrape(server, name) for name in (ok, images_ok, bad)}
    assert after[ok] - before[ok] == 1
    assert after[images_ok] - before[images_ok] == 2
    assert after[bad] - before[bad] == 1


# --- TLS and tokens cover the service -----------------------------------------------------------


@pytest.fixture(scope="module")
def guarded_server(
    model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, Path]]:
    folder = tmp_path_factory.mktemp("v2-pki")
    make_leaf(folder, "server", make_ca(folder, "ca"), server=True)
    (folder / "tokens.txt").write_text("v2-token\n")
    running = RunningServer(
        settings_for(
            model_dir,
            tls_cert=str(folder / "server.pem"),
            tls_key=str(folder / "server.key"),
            auth_token_file=str(folder / "tokens.txt"),
            metrics_port=-1,
        )
    )
    running.load()
    yield running, folder
    running.stop()


def test_tritonclient_over_tls_needs_the_token(
    guarded_server: tuple[RunningServer, Path], model_dir: Path, tmp_path: Path
) -> None:
    server, pki = guarded_server
    image = encode(random_pixels(9, 9, seed=4), "PNG")
    (tmp_path / "image").write_bytes(image)
    common = ["--protocol", "grpc", "--url", f"localhost:{server.port}", "--model", "tiny"]
    common += ["--ca", str(pki / "ca.pem"), "--encoded", str(tmp_path / "image")]
    refused = run_probe(*common)
    assert refused["error"]["status"] == "StatusCode.UNAUTHENTICATED"
    assert "missing credentials" in refused["error"]["message"]
    served = run_probe(*common, "--token", "v2-token")
    assert "error" not in served, served["error"]
    np.testing.assert_allclose(served["encoded"], in_process(model_dir, [image]), atol=1e-5)
