"""Images from a folder laid out as DIR/<class_name>/<image file>, streamed.

The Keras `image_dataset_from_directory` convention. Loading lists the files
and checks once, in parallel, that TensorFlow decodes each of them (a file it
cannot decode is skipped with a warning naming it); the images themselves are
decoded and resized by `model.preprocessing` (the code the serving signature
runs) only when the training pipeline reads them, so greyscale, palette and
RGBA files arrive as RGB and memory does not grow with the folder.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from model.data import IMAGE_SUFFIXES, DatasetError, ImageSet
from model.preprocessing import PreprocessConfig, decode_error_reason, preprocess_encoded

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FolderStats:
    """What the scan learnt about the readable files (for the training plan and report)."""

    median_height: int
    median_width: int
    greyscale_share: float


def list_images(root: Path) -> dict[str, list[Path]]:
    """Class name -> sorted image files, for the class folders under `root`."""
    if not root.exists():
        raise DatasetError(f"image folder {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder (expected {root}/<class_name>/<images>)")
    classes: dict[str, list[Path]] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in sub.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            classes[sub.name] = files
    if not classes:
        raise DatasetError(f"no images in {root}: expected {root}/<class_name>/*.jpg|png|bmp|gif")
    if len(classes) < 2:
        only = next(iter(classes))
        raise DatasetError(f"{root} has one class ({only}); a classifier needs at least two")
    return classes


@tf.function(input_signature=[tf.TensorSpec([], tf.string)])
def _decoded_shape(encoded: tf.Tensor) -> tf.Tensor:
    """(height, width, channels) of an image, failing as decoding would.

    A JPEG is decoded at 1/8 scale (libjpeg's DCT scaling reads the whole
    stream, so a truncated or corrupt file still fails) and its size taken
    from its header: about half the time of a full decode for large photos.
    """

    def jpeg() -> tf.Tensor:
        small = tf.image.decode_jpeg(encoded, ratio=8)
        return tf.concat([tf.image.extract_jpeg_shape(encoded)[:2], tf.shape(small)[2:]], 0)

    def other() -> tf.Tensor:
        return tf.shape(tf.io.decode_image(encoded, channels=0, expand_animations=False))

    return tf.cond(tf.io.is_jpeg(encoded), jpeg, other)


def _check(path: Path) -> tuple[np.ndarray | None, str]:
    """(height, width, channels) of a file TensorFlow decodes, or (None, why not)."""
    try:
        return _decoded_shape(tf.constant(path.read_bytes())).numpy(), ""
    except OSError as exc:
        return None, exc.strerror or str(exc)
    except tf.errors.InvalidArgumentError as exc:
        return None, decode_error_reason(exc)


def load(root: str | Path, config: PreprocessConfig) -> tuple[ImageSet, FolderStats]:
    """Every readable image under `root`, read lazily at the model's input size."""
    classes = list_images(Path(root))
    files = [(label, path) for label, name in enumerate(classes) for path in classes[name]]
    # TensorFlow releases the GIL while decoding, so threads decode in parallel.
    workers = min(32, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        checks = list(
            tqdm(
                pool.map(lambda item: _check(item[1]), files),
                total=len(files),
                desc=f"checking {root}",
                unit="img",
                leave=False,
            )
        )
    paths: list[str] = []
    labels: list[int] = []
    shapes: list[np.ndarray] = []
    skipped: list[str] = []
    for (label, path), (shape, reason) in zip(files, checks, strict=True):
        if shape is None:
            log.warning("skipping %s: cannot decode it (%s)", path, reason)
            skipped.append(str(path))
            continue
        paths.append(str(path))
        labels.append(label)
        shapes.append(shape)
    if skipped:
        log.warning("skipped %d of %d files in %s", len(skipped), len(files), root)
    if len(set(labels)) < 2:
        raise DatasetError(f"{root}: fewer than two classes have a readable image")
    sizes = np.stack(shapes)
    stats = FolderStats(
        median_height=int(np.median(sizes[:, 0])),
        median_width=int(np.median(sizes[:, 1])),
        greyscale_share=float(np.mean(sizes[:, 2] <= 2)),
    )

    def read(path: tf.Tensor) -> tf.Tensor:
        return preprocess_encoded(tf.io.read_file(path), config)

    images = ImageSet(
        np.asarray(paths), np.asarray(labels, dtype=np.int32), list(classes), read, skipped=skipped
    )
    return images, stats
