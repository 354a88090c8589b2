"""Labelled RGB image sets behind one interface (`Dataset`).

Three sources, none downloaded at run time: the procedurally generated
`synthetic` set, a folder of images (one sub-folder per class) and a local copy
of CIFAR-10. Every source yields uint8 arrays at the model's input size; image
files pass through `model.preprocessing` on the way in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Image files the loaders and the batch tool pick up (what decode_image reads).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif"})


class DatasetError(Exception):
    """A dataset cannot be loaded; the message says why in one line."""


@dataclass
class Dataset:
    """Images with integer labels.

    Attributes:
        images: `(n, height, width, 3)`, values 0-255: uint8 for generated
            and CIFAR-10 images, float32 for decoded files (resizing makes
            fractions, kept so training sees exactly what serving computes).
        labels: int32 `(n,)`, indices into `class_names`.
        class_names: one name per class.
        skipped: files that could not be read (image folders only).
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> Dataset:
        return Dataset(self.images[index], self.labels[index], self.class_names)


def stratified_split(
    dataset: Dataset, validation_split: float, seed: int
) -> tuple[Dataset, Dataset]:
    """Splits so that every class keeps the same share in both parts."""
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
