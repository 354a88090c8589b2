"""Small real image sets written as class folders, and a classical baseline.

The images ship inside the dev dependencies (nothing is downloaded):

- `digits`: scikit-learn's 1,797 scanned handwritten digits, 8x8 greyscale, 10 classes.
- `faces`: scikit-image's `lfw_subset`, 100 faces and 100 non-face patches, 25x25 greyscale.
- `textures`: scikit-image's brick, grass and gravel photographs cut into 48x48 tiles.
- `photos`: tiles of five colour photographs (which photo does a tile come from?).

Every set is split into a training folder (what the user hands `model.train`)
and a held-out folder, stratified per class, that no training step sees.
`baseline_accuracy` is the classical reference: an RBF support vector machine on
the raw pixels of the same files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SETS = ("digits", "faces", "textures", "photos")
IMAGE_SUFFIX = ".png"


@dataclass(frozen=True)
class RealSet:
    """A real image set on disk: train/<class>/*<suffix> and test/<class>/*<suffix>."""

    name: str
    train_dir: Path
    test_dir: Path
    class_names: list[str]
    suffix: str = IMAGE_SUFFIX

    def files(self, which: str) -> Iterator[tuple[Path, int]]:
        """(file, label index) of the train or test folder, in a stable order."""
        root = self.train_dir if which == "train" else self.test_dir
        for label, name in enumerate(self.class_names):
            for path in sorted((root / name).glob("*" + self.suffix)):
                yield path, label


def _digits() -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 0-16 ink levels; written as 8-bit greyscale scans.
    images = [np.round(img * (255.0 / 16.0)).astype(np.uint8) for img in digits.images]
    return images, digits.target.astype(np.int32), [str(n) for n in digits.target_names]


def _faces() -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    from skimage.data import lfw_subset

    faces = lfw_subset()  # 100 faces, then 100 non-faces; float 0-1
    images = [np.round(img * 255.0).astype(np.uint8) for img in faces]
    labels = np.repeat(np.arange(2, dtype=np.int32), len(faces) // 2)
    return images, labels, ["face", "not_face"]


def _tiles(photos: dict[str, np.ndarray], side: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Non-overlapping side x side tiles of each photo (so no pixel is in two tiles)."""
    images: list[np.ndarray] = []
    labels: list[int] = []
    for label, photo in enumerate(photos.values()):
        rows, cols = photo.shape[0] // side, photo.shape[1] // side
        for r in range(rows):
            for c in range(cols):
                images.append(photo[r * side : (r + 1) * side, c * side : (c + 1) * side])
                labels.append(label)
    return images, np.asarray(labels, dtype=np.int32)


def _textures() -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    from skimage import data

    photos = {"brick": data.brick(), "grass": data.grass(), "gravel": data.gravel()}
    images, labels = _tiles(photos, 48)
    return images, labels, list(photos)


def _photos() -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    from skimage import data
    from sklearn.datasets import load_sample_image

    photos = {
        "astronaut": data.astronaut(),
        "cat": data.chelsea(),
        "coffee": data.coffee(),
        "temple": load_sample_image("china.jpg"),
        "flower": load_sample_image("flower.jpg"),
    }
    images, labels = _tiles(photos, 40)
    return images, labels, list(photos)


_LOADERS: dict[str, Callable[[], tuple[list[np.ndarray], np.ndarray, list[str]]]] = {
    "digits": _digits,
    "faces": _faces,
    "textures": _textures,
    "photos": _photos,
}


def load(name: str) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """(uint8 images as stored, int32 labels, class names) of set `name`."""
    return _LOADERS[name]()


def write(name: str, root: Path, test_share: float = 0.2, seed: int = 0) -> RealSet:
    """Writes set `name` under `root` as PNG files and returns where.

    The held-out share is drawn per class (stratified) with `seed`.
    """
    images, labels, class_names = load(name)
    rng = np.random.default_rng(seed)
    train_dir, test_dir = root / name / "train", root / name / "test"
    for label, class_name in enumerate(class_names):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = max(1, round(len(members) * test_share))
        for rank, index in enumerate(members):
            folder = (test_dir if rank < n_test else train_dir) / class_name
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[index]).save(folder / f"{index:05d}{IMAGE_SUFFIX}")
    return RealSet(name, train_dir, test_dir, class_names)


def _pixels(paths: list[Path]) -> np.ndarray:
    """Raw pixels as float rows, every file at the set's first file's size and mode."""
    with Image.open(paths[0]) as first:
        size, mode = first.size, first.mode
    rows = []
    for path in paths:
        with Image.open(path) as image:
            rows.append(np.asarray(image.convert(mode).resize(size), np.float32))
    return np.stack(rows).reshape(len(paths), -1) / 255.0


def baseline_accuracy(real: RealSet) -> float:
    """Held-out accuracy of an RBF SVM on standardised raw pixels (the classical reference)."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    train_files, train_labels = zip(*real.files("train"), strict=True)
    test_files, test_labels = zip(*real.files("test"), strict=True)
    classifier = make_pipeline(StandardScaler(), SVC(kernel="rbf", C=10.0, gamma="scale"))
    classifier.fit(_pixels(list(train_files)), np.asarray(train_labels))
    predicted = classifier.predict(_pixels(list(test_files)))
    return float(np.mean(predicted == np.asarray(test_labels)))


def held_out_accuracy(version_dir: Path, real: RealSet) -> float:
    """Accuracy of the exported model's serving signature on the held-out files.

    Predictions are compared by class name (the export's labels.txt), not by
    index: the model numbers classes in its own (sorted folder) order.
    """
    import tensorflow as tf

    from model import layout

    serve = tf.saved_model.load(str(version_dir)).signatures[layout.SERVING_SIGNATURE]
    exported_names = layout.read_labels(version_dir)
    files, labels = zip(*real.files("test"), strict=True)
    hits = 0
    for start in range(0, len(files), 128):
        batch = tf.constant([p.read_bytes() for p in files[start : start + 128]])
        predicted = serve(images=batch)[layout.OUTPUT].numpy().argmax(axis=1)
        truth = labels[start : start + 128]
        hits += sum(
            exported_names[p] == real.class_names[t] for p, t in zip(predicted, truth, strict=True)
        )
    return hits / len(files)
