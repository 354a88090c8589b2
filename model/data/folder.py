"""Images from a folder laid out as DIR/<class_name>/<image file>.

The Keras `image_dataset_from_directory` convention. Files are decoded and
resized by `model.preprocessing` (the same code the serving signature runs), so
greyscale, palette and RGBA files arrive as RGB. A file TensorFlow cannot
decode is skipped with a warning naming it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from model.data import IMAGE_SUFFIXES, Dataset, DatasetError
from model.preprocessing import PreprocessConfig, preprocess_encoded

log = logging.getLogger(__name__)

# TensorFlow prefixes op errors with the graph function's name; users need only the reason.
_FUNCTION_NODE = re.compile(r"\{\{function_node [^}]*\}\}")


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


def load(root: str | Path, config: PreprocessConfig) -> Dataset:
    """Loads every readable image under `root`, resized to the model's input size."""
    classes = list_images(Path(root))
    # Kept as float32: exactly what the serving signature feeds the model, so
    # training sees no rounding that serving does not.
    decode = tf.function(
        lambda data: preprocess_encoded(data, config),
        input_signature=[tf.TensorSpec([], tf.string)],
    )
    images: list[np.ndarray] = []
    labels: list[int] = []
    skipped: list[str] = []
    files = [(label, path) for label, name in enumerate(classes) for path in classes[name]]
    for label, path in tqdm(files, desc=f"reading {root}", unit="img", leave=False):
        try:
            images.append(decode(tf.constant(path.read_bytes())).numpy())
        except (OSError, tf.errors.InvalidArgumentError) as exc:
            reason = exc.message if isinstance(exc, tf.errors.OpError) else str(exc)
            reason = _FUNCTION_NODE.sub("", reason).strip().splitlines()[0]
            log.warning("skipping %s: cannot decode it (%s)", path, reason)
            skipped.append(str(path))
            continue
        labels.append(label)
    if skipped:
        log.warning("skipped %d of %d files in %s", len(skipped), len(files), root)
    if len(set(labels)) < 2:
        raise DatasetError(f"{root}: fewer than two classes have a readable image")
    return Dataset(
        np.stack(images), np.asarray(labels, dtype=np.int32), list(classes), skipped=skipped
    )
