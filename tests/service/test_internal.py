"""A bug in the core is answered INTERNAL with no details; the trace goes to the log.

The bug is provoked through public means only: a SavedModel, crafted here,
whose signatures have the documented names, inputs and output width, but
return one row more than they were given images.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator

import grpc
import pytest
import tensorflow as tf

from model import layout
from model.train import TrainResult
from service.adapters.grpc_calls import INTERNAL_MESSAGE
from tests.helpers import encode, random_pixels
from tests.service.helpers import RunningServer, settings_for


class OneRowTooMany(tf.Module):
    def __init__(self, classes: int) -> None:
        super().__init__()
        self.classes = classes

    def _rows(self, count: tf.Tensor) -> dict[str, tf.Tensor]:
        return {layout.OUTPUT: tf.fill([count + 1, self.classes], 1.0 / self.classes)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=layout.IMAGES_INPUT)])
    def encoded(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._rows(tf.shape(images)[0])

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, None, None], tf.uint8, name=layout.PIXELS_INPUT)
        ]
    )
    def pixels(self, pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._rows(tf.shape(pixels)[0])


@pytest.fixture(scope="module")
def broken_server(
    tiny_model: TrainResult, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    model_dir = tmp_path_factory.mktemp("broken") / "broken"
    version = model_dir / "1"
    module = OneRowTooMany(len(layout.read_labels(tiny_model.version_dir)))
    tf.saved_model.save(
        module,
        str(version),
        signatures={
            layout.SERVING_SIGNATURE: module.encoded,
            layout.PIXELS_SIGNATURE: module.pixels,
        },
    )
    shutil.copytree(tiny_model.version_dir / "assets", version / "assets", dirs_exist_ok=True)
    running = RunningServer(settings_for(model_dir, metrics_port=-1))
    running.load()
    yield running
    running.stop()


def test_a_bug_is_internal_without_details_and_logged_with_its_trace(
    broken_server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    with broken_server.client(retries=0) as client:
        with caplog.at_level(logging.ERROR), pytest.raises(grpc.RpcError) as info:
            client.classify(encode(random_pixels(8, 8)))
        assert info.value.code() == grpc.StatusCode.INTERNAL
        assert info.value.details() == INTERNAL_MESSAGE
        # The server keeps serving.
        assert client.health() == "SERVING"
    logged = [r for r in caplog.records if r.name == "service.adapters.grpc_calls"]
    assert len(logged) == 1
    assert logged[0].getMessage().startswith("Classify failed (request ")  # its request id
    assert logged[0].exc_info is not None  # the trace is in the log
    assert "zip()" in str(logged[0].exc_info[1])


def test_a_bug_fails_a_whole_batch_call_as_internal(broken_server: RunningServer) -> None:
    with broken_server.client(retries=0) as client, pytest.raises(grpc.RpcError) as info:
        client.classify_batch([encode(random_pixels(8, 8))] * 3)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert info.value.details() == INTERNAL_MESSAGE
