"""Training, the exported SavedModel's layout and signatures, and train/serve parity."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from model import layout
from model.data import folder, synthetic
from model.export import export_model
from model.train import TrainResult, main, train
from tests.helpers import encode, tiny_options

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_model_beats_chance_by_a_wide_margin(tiny_model: TrainResult) -> None:
    chance = 1 / len(synthetic.CLASS_NAMES)
    # About 4x chance after 8 short epochs; 3x leaves room for thread timing.
    assert tiny_model.report.evaluation.accuracy > 3 * chance


def test_export_assets_are_readable_without_tensorflow(tiny_model: TrainResult) -> None:
    # This process has TensorFlow loaded already; a fresh one shows what a
    # client or tool that reads an export actually imports.
    code = (
        "import json, sys\n"
        "from model import layout\n"
        "path = sys.argv[1]\n"
        "config = layout.read_preprocessing(path)\n"
        "print(json.dumps({'labels': layout.read_labels(path), 'height': config.height,\n"
        "    'tensorflow': sorted(m for m in sys.modules if m.split('.')[0] == 'tensorflow')}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tiny_model.version_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    read = json.loads(result.stdout)
    assert read["tensorflow"] == []
    assert read["labels"] == synthetic.CLASS_NAMES and read["height"] == 16


def test_export_layout_and_assets(tiny_model: TrainResult) -> None:
    version_dir = tiny_model.version_dir
    assert version_dir.name == "1"
    for part in (
        "saved_model.pb",
        "variables",
        "model.keras",
        "report/metrics.json",
        "report/training_curves.png",
        "report/confusion_matrix.png",
    ):
        assert (version_dir / part).exists(), part
    assert layout.read_labels(version_dir) == synthetic.CLASS_NAMES
    settings = json.loads((version_dir / layout.PREPROCESSING).read_text())
    assert settings["height"] == settings["width"] == 16
    assert settings["resize_method"] == "bilinear" and settings["channel_order"] == "RGB"
    metrics = json.loads((version_dir / "report" / "metrics.json").read_text())
    assert len(metrics["confusion_matrix"]) == len(synthetic.CLASS_NAMES)
    assert set(metrics["per_class_accuracy"]) == set(synthetic.CLASS_NAMES)
    assert metrics["wall_time_s"] > 0 and metrics["device"].startswith(("CPU", "GPU"))


def test_both_signatures_have_the_documented_names_shapes_and_dtypes(
    tiny_model: TrainResult,
) -> None:
    loaded = tf.saved_model.load(str(tiny_model.version_dir))
    images = loaded.signatures[layout.SERVING_SIGNATURE]
    pixels = loaded.signatures[layout.PIXELS_SIGNATURE]
    (_, images_spec) = images.structured_input_signature
    (_, pixels_spec) = pixels.structured_input_signature
    assert images_spec[layout.IMAGES_INPUT].dtype == tf.string
    assert images_spec[layout.IMAGES_INPUT].shape.as_list() == [None]
    assert pixels_spec[layout.PIXELS_INPUT].dtype == tf.uint8
    assert pixels_spec[layout.PIXELS_INPUT].shape.rank == 4
    out = images.structured_outputs[layout.OUTPUT]
    assert out.dtype == tf.float32 and out.shape.as_list() == [None, len(synthetic.CLASS_NAMES)]


def test_versions_are_numbered_automatically_and_a_taken_one_is_refused(
    tiny_model: TrainResult, tmp_path: Path
) -> None:
    labels = synthetic.CLASS_NAMES
    model, config = tiny_model.model, layout.read_preprocessing(tiny_model.version_dir)
    assert export_model(model, config, labels, tmp_path / "m").name == "1"
    assert export_model(model, config, labels, tmp_path / "m").name == "2"
    assert export_model(model, config, labels, tmp_path / "m", version=7).name == "7"
    with pytest.raises(FileExistsError):
        export_model(model, config, labels, tmp_path / "m", version=7)
    assert layout.list_versions(tmp_path / "m") == [1, 2, 7]


def test_interrupted_export_leaves_no_partial_version(
    tiny_model: TrainResult, tmp_path: Path
) -> None:
    def crash(staging: Path) -> None:
        raise KeyboardInterrupt

    config = layout.read_preprocessing(tiny_model.version_dir)
    with pytest.raises(KeyboardInterrupt):
        export_model(tiny_model.model, config, synthetic.CLASS_NAMES, tmp_path, extra=crash)
    assert list(tmp_path.iterdir()) == []


def test_training_and_serving_agree_on_the_same_images(
    tiny_model: TrainResult, tmp_path: Path
) -> None:
    """Keras on the training pipeline's tensors == SavedModel on the encoded bytes."""
    rng = np.random.default_rng(1)
    root = tmp_path / "images"
    files: list[Path] = []
    for cls, (h, w, fmt) in {
        "a": (16, 16, "PNG"),
        "b": (40, 30, "PNG"),
        "c": (24, 33, "JPEG"),
    }.items():
        (root / cls).mkdir(parents=True)
        for i in range(2):
            path = root / cls / f"{i}.{fmt.lower()}"
            path.write_bytes(encode(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), fmt))
            files.append(path)
    config = layout.read_preprocessing(tiny_model.version_dir)
    dataset, _ = folder.load(root, config)
    pipeline = np.concatenate([x for x, _ in dataset.dataset().batch(8).as_numpy_iterator()])
    expected = np.asarray(tiny_model.model(pipeline, training=False))
    serve = tf.saved_model.load(str(tiny_model.version_dir)).signatures[layout.SERVING_SIGNATURE]
    served = serve(images=tf.constant([p.read_bytes() for p in files]))[layout.OUTPUT].numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)


def test_pixel_signature_matches_the_encoded_one(tiny_model: TrainResult) -> None:
    pixels = np.random.default_rng(2).integers(0, 256, (3, 20, 24, 3), dtype=np.uint8)
    loaded = tf.saved_model.load(str(tiny_model.version_dir))
    by_bytes = loaded.signatures[layout.SERVING_SIGNATURE](
        images=tf.constant([encode(p) for p in pixels])
    )[layout.OUTPUT]
    by_pixels = loaded.signatures[layout.PIXELS_SIGNATURE](pixels=tf.constant(pixels))[
        layout.OUTPUT
    ]
    np.testing.assert_allclose(by_pixels.numpy(), by_bytes.numpy(), atol=1e-6)
    grey = pixels[:, :, :, :1]
    by_grey = loaded.signatures[layout.PIXELS_SIGNATURE](pixels=tf.constant(grey))[layout.OUTPUT]
    np.testing.assert_allclose(by_grey.numpy().sum(axis=1), 1.0, rtol=1e-5)


def test_command_line_trains_exports_and_reports_bad_data(tmp_path: Path, capsys) -> None:
    args = [
        "--output",
        str(tmp_path),
        "--name",
        "cli",
        "--input-size",
        "16",
        "--width",
        "0.25",
        "--per-class",
        "6",
        "--epochs",
        "1",
    ]
    assert main(args) == 0
    assert "exported" in capsys.readouterr().out
    assert layout.list_versions(tmp_path / "cli") == [1]
    assert main([*args, "--data", "folder", "--data-dir", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_seed_makes_training_deterministic(tmp_path: Path) -> None:
    runs = [train(tiny_options(tmp_path / str(i), per_class=4, epochs=1)) for i in range(2)]
    weights = [r.model.get_layer("block1_conv1").kernel.numpy() for r in runs]
    np.testing.assert_allclose(weights[0], weights[1], atol=1e-6)
