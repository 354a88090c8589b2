"""Transfer learning: a VGG16 base from a local weights file, trained in two phases,
exported and served.

The ImageNet download cannot run here, so the weights file is saved from a
randomly initialised VGG16: what is checked is that the file's weights reach
the exported model untouched where frozen, and moved where fine-tuned.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.legacy.saving import legacy_h5_format

from model import layout, transfer
from model.cli import parse_args
from model.data import synthetic
from model.plan import Plan
from model.train import main
from tests.helpers import encode, random_pixels
from tests.service.helpers import RunningServer, settings_for

SIZE = 64
FINE_TUNED = ("block5_conv1", "block5_conv2", "block5_conv3")
FROZEN = ("block1_conv1", "block2_conv2", "block3_conv3", "block4_conv1", "block4_conv3")


@pytest.fixture(scope="module")
def weights_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A random VGG16 notop saved in both formats --weights reads."""
    keras.utils.set_random_seed(7)
    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))
    folder = tmp_path_factory.mktemp("weights")
    files = {
        "keras3": folder / "vgg16_random.weights.h5",
        # The layout (and the name) of what keras.applications downloads.
        "legacy": folder / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    }
    vgg.save_weights(files["keras3"])
    with h5py.File(files["legacy"], "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, vgg)
    return files


def file_weights(path: Path) -> dict[str, np.ndarray]:
    """Layer name -> kernel of the VGG16 that `path` holds."""
    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))
    vgg.load_weights(path)
    return {layer.name: layer.get_weights()[0] for layer in vgg.layers if layer.get_weights()}


@pytest.fixture(scope="module")
def version_dir(weights_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One head epoch and one fine-tuning epoch on a few synthetic images, exported."""
    output = tmp_path_factory.mktemp("models")
    args = ["--preset", "vgg16", "--weights", str(weights_files["keras3"])]
    args += ["--input-size", str(SIZE), "--per-class", "3", "--batch-size", "2"]
    args += ["--head-epochs", "1", "--fine-tune-epochs", "1", "--verbose", "0"]
    assert main([*args, "--output", str(output), "--name", "transfer"]) == 0
    return output / "transfer" / "1"


def test_frozen_convolutions_keep_the_files_weights_and_fine_tuned_ones_move(
    version_dir: Path, weights_files: dict[str, Path]
) -> None:
    expected = file_weights(weights_files["keras3"])
    # The SavedModel's own variables: what a server loads.
    served = {
        v.name.split("/")[0]: v.numpy()
        for v in tf.saved_model.load(str(version_dir)).variables
        if v.name.endswith("kernel:0") and v.name.startswith("block")
    }
    assert set(served) == set(expected)
    for name in FROZEN:
        np.testing.assert_array_equal(served[name], expected[name], err_msg=name)
    for name in FINE_TUNED:
        assert not np.array_equal(served[name], expected[name]), name
    # model.keras reloads (the preprocessing layer is registered) with the same weights.
    reloaded = transfer.base_of(keras.saving.load_model(version_dir / layout.KERAS_MODEL))
    for name in (*FROZEN, *FINE_TUNED):
        np.testing.assert_array_equal(reloaded.get_layer(name).get_weights()[0], served[name])


def test_legacy_notop_h5_file_gives_the_same_weights(weights_files: dict[str, Path]) -> None:
    model = transfer.build_transfer("vgg16", (SIZE, SIZE), 3, weights_files["legacy"])
    expected = file_weights(weights_files["keras3"])
    base = transfer.base_of(model)
    for name, kernel in expected.items():
        np.testing.assert_array_equal(base.get_layer(name).get_weights()[0], kernel)


def test_preprocessing_json_records_bgr_and_the_imagenet_mean(version_dir: Path) -> None:
    settings = json.loads((version_dir / layout.PREPROCESSING).read_text())
    assert settings["model_channel_order"] == "BGR"
    assert settings["mean"] == [103.939, 116.779, 123.68]
    assert settings["model_range"] == [0.0, 255.0]
    # Clients still send RGB 0-255.
    assert settings["channel_order"] == "RGB" and settings["input_range"] == [0.0, 255.0]
    assert settings["height"] == settings["width"] == SIZE


def test_old_preprocessing_json_reads_as_rgb_without_mean(tmp_path: Path) -> None:
    old = {"height": 32, "width": 32, "resize_method": "bilinear", "channel_order": "RGB"}
    (tmp_path / "assets").mkdir()
    (tmp_path / layout.PREPROCESSING).write_text(json.dumps(old))
    config = layout.read_preprocessing(tmp_path)
    assert config.model_channel_order == "RGB" and config.mean == (0.0, 0.0, 0.0)


def test_preprocess_layer_equals_keras_applications_preprocess_input() -> None:
    pixels = random_pixels(8, 8, seed=5)[None].astype(np.float32)
    ours = np.asarray(transfer.ImageNetPreprocess()(pixels))
    theirs = keras.applications.vgg16.preprocess_input(pixels.copy())
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_report_records_both_phases_and_continuous_curves(version_dir: Path) -> None:
    metrics = json.loads((version_dir / "report" / "metrics.json").read_text())
    phases = metrics["plan"]["phases"]
    assert [p["name"] for p in phases] == ["head", "fine-tune"]
    assert [p["first_epoch"] for p in phases] == [1, 2]
    assert phases[0]["learning_rate"] == 1e-3 and phases[1]["learning_rate"] == 1e-5
    assert "frozen" in phases[0]["trains"] and "block5_conv1" in phases[1]["trains"]
    assert len(metrics["history"]["val_accuracy"]) == metrics["epochs_run"] == 2
    assert "not used" in metrics["plan"]["reasons"]["batch_norm_momentum"]
    assert metrics["settings"]["model"]["base"] == "vgg16"


def test_savedmodel_signatures_equal_the_keras_model(version_dir: Path) -> None:
    model = keras.saving.load_model(version_dir / layout.KERAS_MODEL)
    pixels = np.stack([random_pixels(SIZE, SIZE, seed=i) for i in range(3)])
    expected = np.asarray(model(pixels.astype(np.float32), training=False))
    loaded = tf.saved_model.load(str(version_dir))
    by_bytes = loaded.signatures[layout.SERVING_SIGNATURE](
        images=tf.constant([encode(p) for p in pixels])
    )[layout.OUTPUT]
    by_pixels = loaded.signatures[layout.PIXELS_SIGNATURE](pixels=tf.constant(pixels))[
        layout.OUTPUT
    ]
    np.testing.assert_allclose(by_bytes.numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(by_pixels.numpy(), expected, atol=1e-5)
    explained = loaded.signatures[layout.GRADCAM_SIGNATURE](
        images=tf.constant([encode(p) for p in pixels]), class_index=tf.constant([-1, 0, 11])
    )
    np.testing.assert_allclose(explained[layout.OUTPUT].numpy(), expected, atol=1e-5)
    # The heat comes from the base's last convolution (4x4 at 64x64), resized.
    heat = explained["heatmap"].numpy()
    assert heat.shape == (3, SIZE, SIZE) and heat.min() >= 0.0 and heat.max() <= 1.0
    assert explained["class_index"].numpy().tolist()[1:] == [0, 11]


@pytest.fixture(scope="module")
def server(version_dir: Path) -> Iterator[RunningServer]:
    running = RunningServer(settings_for(version_dir.parent))
    running.load()
    yield running
    running.stop()


def test_served_probabilities_equal_the_in_process_savedmodel(
    server: RunningServer, version_dir: Path
) -> None:
    images = [encode(random_pixels(SIZE + 9 * i, SIZE, seed=i), "JPEG") for i in range(3)]
    signature = tf.saved_model.load(str(version_dir)).signatures[layout.SERVING_SIGNATURE]
    expected = signature(images=tf.constant(images))[layout.OUTPUT].numpy()
    with server.client(timeout=60.0) as client:
        client.wait_until_serving()
        for image, row in zip(images, expected, strict=True):
            result = client.classify(image, probabilities=True)
            assert result.model_name == "transfer" and result.model_version == 1
            np.testing.assert_allclose(result.probabilities, row, atol=1e-5)
            assert result.classes[0].label in synthetic.CLASS_NAMES


def test_freeze_trains_the_head_then_the_top_block() -> None:
    model = transfer.build_transfer("vgg16", (32, 32), 2, weights=None)
    transfer.freeze(model, None)
    head = {"fc1", "probabilities"}
    assert {w.path.split("/")[0] for w in model.trainable_weights} == head
    transfer.freeze(model, "block5_conv2")
    assert {w.path.split("/")[0] for w in model.trainable_weights} == head | {
        "block5_conv2",
        "block5_conv3",
    }


def test_phases_follow_the_flags_and_zero_fine_tune_epochs_trains_the_head_only() -> None:
    plan = Plan(
        batch_size=32,
        epochs=30,
        steps_per_epoch=50,
        learning_rate=1e-3,
        warmup_steps=75,
        patience_epochs=12,
        batch_norm_momentum=0.98,
        flip=True,
        shift=0.1,
        class_weights={0: 0.5, 1: 1.5},
    )
    transfer_args = ["--preset", "vgg16", "--weights", "w.h5"]
    overall, phases = transfer.plan_phases(parse_args([*transfer_args, "--head-epochs", "4"]), plan)
    assert [(p.name, p.epochs, p.fine_tune_from) for p, _ in phases] == [
        ("head", 4, None),
        ("fine-tune", 10, "block5_conv1"),
    ]
    # The data's choices hold in every phase; epochs and learning rate are the phase's.
    for _, phase_plan in phases:
        assert (phase_plan.batch_size, phase_plan.steps_per_epoch) == (32, 50)
        assert phase_plan.class_weights == {0: 0.5, 1: 1.5} and phase_plan.flip
    assert [p.learning_rate for _, p in phases] == [1e-3, 1e-5]
    assert [p.warmup_steps for _, p in phases] == [10, 25]  # 5% of each phase's steps
    assert overall.epochs == 14
    _, phases = transfer.plan_phases(parse_args([*transfer_args, "--fine-tune-epochs", "0"]), plan)
    assert [p.name for p, _ in phases] == ["head"]


def test_imagenet_without_network_fails_fast_naming_the_offline_route(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "no network in this test")

    # An empty Keras home (nothing cached) and no name resolution: the real
    # download path runs and fails at once, without touching the network.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    code = main(["--preset", "vgg16", "--weights", "imagenet", "--output", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert "no network in this test" in err  # the failure came from the network layer
    assert "--weights PATH" in err and str(tmp_path / "keras" / "models") in err
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in err
    assert not (tmp_path / "vgg-mini").exists()


def test_weights_of_another_base_are_refused(
    weights_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--preset", "vgg19", "--weights", str(weights_files["legacy"]), "--input-size", "32"]
    assert main([*args, "--per-class", "1", "--output", str(tmp_path)]) == 2
    assert "does not hold vgg19 weights" in capsys.readouterr().err


def test_weights_need_a_pretrained_preset(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--weights", "imagenet"])
    assert "--weights needs --preset vgg16 or vgg19" in capsys.readouterr().err
