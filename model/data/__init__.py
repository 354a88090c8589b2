"""Labelled RGB image sets, streamed, behind one interface (`ImageSet`).

Three sources, none downloaded at run time: the procedurally generated
`synthetic` set, a folder of images (one sub-folder per class) and a local copy
of CIFAR-10. An `ImageSet` holds only what is cheap to hold (file paths, or
small uint8 arrays at their stored size, and the labels); images are decoded
and resized by `model.preprocessing` inside a tf.data pipeline as training
reads them, so memory does not grow with the number of images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

# Re-exported for the loaders (model.data.folder).
from model.image_files import IMAGE_SUFFIXES as IMAGE_SUFFIXES

# An element of a source (a file path, or an index into an array) -> float32
# [height, width, 3] in 0-255 at the model's input size.
Decoder = Callable[[tf.Tensor], tf.Tensor]


class DatasetError(Exception):
    """A dataset cannot be loaded; the message says why in one line."""


@dataclass
class ImageSet:
    """Labelled images, read lazily.

    Attributes:
        elements: one cheap handle per image (file paths as str, or int row
            indices into an array the decoder holds).
        labels: int32 `(n,)`, indices into `class_names`, in `elements` order.
        class_names: one name per class.
        decoder: turns one element into float32 `[height, width, 3]` in 0-255
            (the model's input), through `model.preprocessing`.
        skipped: files that could not be read (image folders only).
    """

    elements: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    decoder: Decoder
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> ImageSet:
        return ImageSet(self.elements[index], self.labels[index], self.class_names, self.decoder)

    def counts(self) -> np.ndarray:
        """Images per class, in class order."""
        return np.bincount(self.labels, minlength=len(self.class_names))

    def dataset(self, shuffle_seed: int | None = None) -> tf.data.Dataset:
        """(image, label) pairs, unbatched; reshuffled every epoch when a seed is given.

        Shuffling happens on the cheap handles before decoding, so the whole
        set is shuffled without holding a single decoded image more than the
        pipeline's prefetch needs.
        """
        ds = tf.data.Dataset.from_tensor_slices((self.elements, self.labels))
        if shuffle_seed is not None:
            ds = ds.shuffle(len(self), seed=shuffle_seed, reshuffle_each_iteration=True)
        decoder = self.decoder
        return ds.map(
            lambda element, label: (decoder(element), label),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )


def array_decoder(images: np.ndarray, resize: Callable[[tf.Tensor], tf.Tensor]) -> Decoder:
    """A decoder for uint8 arrays kept at their stored size (synthetic, CIFAR-10).

    The array stays uint8 and small (32x32 for CIFAR-10); each image is
    resized to the model's input only when the pipeline reads it.
    """
    table = tf.constant(images)
    return lambda index: resize(tf.gather(table, index))


def stratified_split(
    dataset: ImageSet, validation_split: float, seed: int
) -> tuple[ImageSet, ImageSet]:
    """Splits so that every class keeps the same share in both parts.

    Decided on the labels alone (no image is read). A class with one image
    keeps it for training.
    """
    if not 0.0 < validation_split < 1.0:
        raise DatasetError(f"validation split must be between 0 and 1, got {validation_split}")
    rng = np.random.default_rng(seed)
    train_idx: list[np.ndarray] = []
    val_idx: list[np.ndarray] = []
    for label in range(len(dataset.class_names)):
        members = rng.permutation(np.flatnonzero(dataset.labels == label))
        n_val = max(1, round(len(members) * validation_split)) if len(members) > 1 else 0
        val_idx.append(members[:n_val])
        train_idx.append(members[n_val:])
    train = rng.permutation(np.concatenate(train_idx))
    val = rng.permutation(np.concatenate(val_idx))
    return dataset.subset(train), dataset.subset(val)
