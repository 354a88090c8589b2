"""Exports a trained Keras model as a versioned SavedModel, preprocessing inside.

Two signatures share the model and the preprocessing of `model.preprocessing`:

- `serving_default`: `images` tf.string [batch] of encoded JPEG/PNG/BMP/GIF
  -> decode -> RGB -> resize -> model -> `probabilities` float32 [batch, classes].
- `serving_pixels`: `pixels` uint8 [batch, height, width, channels] (channels
  1, 3 or 4; one size per batch) -> RGB -> resize -> model -> `probabilities`.
- `gradcam`: `images` tf.string [batch] and `class_index` int32 [batch] (-1:
  the predicted class) -> `heatmap` (LayerCAM, a Grad-CAM variant),
  `heatmap_png`, `overlay_png`, `class_index` and `probabilities` (see
  `model.gradcam`).

A version is written to a temporary folder beside its final place and renamed
into place, so a server watching the folder never sees half a model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import keras
import tensorflow as tf

from model import gradcam, layout
from model.preprocessing import PreprocessConfig, preprocess_encoded_batch, preprocess_pixels


def export_model(
    model: keras.Model,
    preprocess: PreprocessConfig,
    class_names: list[str],
    model_dir: str | Path,
    version: int | None = None,
    extra: Callable[[Path], None] | None = None,
    explanations: bool = True,
) -> Path:
    """Writes `model` as `model_dir/<version>` and returns that path.

    Args:
        model: a Keras model taking float32 (batch, height, width, 3) in 0-255.
        preprocess: the input size and resize settings the signatures apply.
        class_names: one label per output, stored in assets/labels.txt.
        model_dir: the model's folder (`models/<name>`); created if missing.
        version: the version number; by default one more than the highest.
        extra: called with the temporary version folder before the rename,
            to add files (the training report) that must appear atomically too.
        explanations: add the `gradcam` signature (False: an export like
            those made before it, which servers must keep serving).

    Raises:
        FileExistsError: `version` was given and already exists.
    """
    if len(class_names) != model.output_shape[-1]:
        raise ValueError(f"{len(class_names)} labels for {model.output_shape[-1]} outputs")
    root = Path(model_dir)
    root.mkdir(parents=True, exist_ok=True)
    # The dot keeps it out of list_versions; same filesystem, so rename is atomic.
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=root))
    # mkdtemp makes the folder 0700; a version must be readable like any folder
    # (the server may run as another user), so give it the umask's usual mode.
    os.chmod(staging, 0o777 & ~_umask())
    try:
        _write_savedmodel(model, preprocess, staging, explanations)
        (staging / layout.LABELS).write_text("\n".join(class_names) + "\n", encoding="utf-8")
        (staging / layout.PREPROCESSING).write_text(preprocess.to_json() + "\n", encoding="utf-8")
        model.save(staging / layout.KERAS_MODEL)
        if extra is not None:
            extra(staging)
        return _rename_into_place(staging, root, version)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _umask() -> int:
    current = os.umask(0)  # the only way to read it is to set it
    os.umask(current)
    return current


def _write_savedmodel(
    model: keras.Model, preprocess: PreprocessConfig, path: Path, explanations: bool
) -> None:

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=layout.IMAGES_INPUT)])
    def serve_images(images: tf.Tensor) -> dict[str, tf.Tensor]:
        batch = preprocess_encoded_batch(images, preprocess)
        return {layout.OUTPUT: model(batch, training=False)}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, None, None], tf.uint8, name=layout.PIXELS_INPUT)
        ]
    )
    def serve_pixels(pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        batch = preprocess_pixels(pixels, preprocess)
        return {layout.OUTPUT: model(batch, training=False)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(layout.SERVING_SIGNATURE, serve_images)
    archive.add_endpoint(layout.PIXELS_SIGNATURE, serve_pixels)
    if explanations:
        archive.add_endpoint(layout.GRADCAM_SIGNATURE, gradcam.endpoint(model, preprocess))
    archive.write_out(str(path), verbose=False)
    (path / "assets").mkdir(exist_ok=True)


def _rename_into_place(staging: Path, root: Path, version: int | None) -> Path:
    if version is not None:
        target = root / str(version)
        if target.exists():
            raise FileExistsError(f"version {version} already exists at {target}")
        os.rename(staging, target)
        return target
    # Another exporter may take the same number between our look and our
    # rename; rename refuses an existing non-empty folder, so try the next.
    for _ in range(100):
        target = root / str(layout.next_version(root))
        try:
            os.rename(staging, target)
            return target
        except OSError:
            if not target.exists():
                raise
    raise RuntimeError(f"could not claim a version number under {root}")
