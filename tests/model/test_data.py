"""Datasets: synthetic determinism and balance, folder and CIFAR-10 loading."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from model.data import DatasetError, ImageSet, cifar10, folder, stratified_split, synthetic
from model.preprocessing import PreprocessConfig
from tests.helpers import encode, random_pixels

CONFIG = PreprocessConfig(height=16, width=16)


def _read(data: ImageSet) -> tuple[np.ndarray, np.ndarray]:
    """Every (image, label) the training pipeline would read, in order."""
    pairs = list(data.dataset().batch(1024).as_numpy_iterator())
    return np.concatenate([x for x, _ in pairs]), np.concatenate([y for _, y in pairs])


def test_synthetic_is_deterministic_for_a_seed() -> None:
    a = synthetic.generate_arrays(per_class=3, size=(16, 16), seed=7)
    b = synthetic.generate_arrays(per_class=3, size=(16, 16), seed=7)
    c = synthetic.generate_arrays(per_class=3, size=(16, 16), seed=8)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_synthetic_classes_are_balanced_and_depend_on_shape_and_colour() -> None:
    data = synthetic.generate(per_class=5, config=CONFIG, seed=0)
    assert len(data.class_names) >= 10
    assert data.counts().tolist() == [5] * len(data.class_names)
    images, labels = _read(data)
    assert images.shape == (5 * len(data.class_names), 16, 16, 3)
    assert images.dtype == np.float32 and images.max() <= 255.0
    np.testing.assert_array_equal(images, np.round(images))  # drawn at size: not resampled
    np.testing.assert_array_equal(labels, data.labels)
    shapes = {name.split("_")[1] for name in data.class_names}
    colours = {name.split("_")[0] for name in data.class_names}
    assert len(shapes) > 1 and len(colours) > 1


def test_stratified_split_keeps_every_class_in_both_parts() -> None:
    data = synthetic.generate(per_class=10, config=CONFIG, seed=0)
    train, val = stratified_split(data, 0.2, seed=0)
    assert len(train) + len(val) == len(data)
    assert val.counts().tolist() == [2] * len(data.class_names)
    assert not set(train.elements.tolist()) & set(val.elements.tolist())
    # The labels travel with their images through the split.
    train_images, _ = _read(train)
    all_images, _ = _read(data)
    np.testing.assert_array_equal(train_images[0], all_images[train.elements[0]])


def test_shuffled_pipeline_reshuffles_every_pass_and_keeps_labels_with_images() -> None:
    data = synthetic.generate(per_class=4, config=CONFIG, seed=0)
    by_image = {_read(data)[0][i].tobytes(): int(label) for i, label in enumerate(data.labels)}
    passes = list(data.dataset(shuffle_seed=1).repeat(2).batch(len(data)).as_numpy_iterator())
    orders = []
    for images, labels in passes:
        assert all(by_image[img.tobytes()] == lab for img, lab in zip(images, labels, strict=True))
        orders.append(labels.tolist())
    assert orders[0] != orders[1]


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    cats, dogs = tmp_path / "cats", tmp_path / "dogs"
    cats.mkdir()
    dogs.mkdir()
    pixels = random_pixels(20, 24)
    (cats / "rgb.jpg").write_bytes(encode(pixels, "JPEG"))
    (cats / "grey.png").write_bytes(encode(pixels, "PNG", mode="L"))
    (cats / "rgba.png").write_bytes(encode(pixels, "PNG", mode="RGBA"))
    (dogs / "palette.gif").write_bytes(encode(pixels, "GIF", mode="P"))
    (dogs / "bitmap.bmp").write_bytes(encode(pixels, "BMP"))
    (dogs / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (dogs / "notes.txt").write_text("not an image")
    return tmp_path


def test_folder_loads_every_format_as_rgb_and_skips_corrupt_files(
    image_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data, stats = folder.load(image_folder, CONFIG)
    assert data.class_names == ["cats", "dogs"]
    images, labels = _read(data)
    assert images.shape == (5, 16, 16, 3)
    assert sorted(np.bincount(labels).tolist()) == [2, 3]
    assert data.skipped == [str(image_folder / "dogs" / "corrupt.jpg")]
    assert "corrupt.jpg" in caplog.text
    # TensorFlow's own reason, not its graph wrapper.
    skip_line = next(line for line in caplog.text.splitlines() if "corrupt.jpg" in line)
    assert "Graph execution error" not in skip_line and "{{" not in skip_line
    assert "JPEG" in skip_line or "jpeg" in skip_line, skip_line
    assert (stats.median_height, stats.median_width) == (20, 24)
    # Files load in sorted order, so cats/grey.png is first. Its three
    # channels are equal: replicated, not dropped.
    grey = images[0]
    np.testing.assert_array_equal(grey[..., 0], grey[..., 1])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root / "missing", "does not exist"),
        (lambda root: root, "no images"),
        (lambda root: _one_class(root), "one class"),
    ],
)
def test_folder_errors_are_one_clear_line(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(DatasetError, match=message) as info:
        folder.load(make(tmp_path), CONFIG)
    assert "\n" not in str(info.value)


def _one_class(root: Path) -> Path:
    (root / "only").mkdir()
    (root / "only" / "a.png").write_bytes(encode(random_pixels(8, 8)))
    return root


def _cifar_archive(path: Path) -> None:
    rng = np.random.default_rng(0)

    def batch(n: int) -> bytes:
        return pickle.dumps(
            {
                b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                b"labels": list(rng.integers(0, 10, n)),
            }
        )

    members = {f"data_batch_{i}": batch(4) for i in range(1, 6)}
    members["test_batch"] = batch(3)
    members["batches.meta"] = pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]})
    with tarfile.open(path, "w:gz") as archive:
        for name, blob in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            archive.addfile(info, io.BytesIO(blob))


def test_cifar10_reads_the_python_archive_planes_as_rgb(tmp_path: Path) -> None:
    archive = tmp_path / cifar10.ARCHIVE
    _cifar_archive(archive)
    train, test = cifar10.load(archive, PreprocessConfig(height=32, width=32))
    train_images, _ = _read(train)
    assert train_images.shape == (20, 32, 32, 3)
    assert _read(test)[0].shape == (3, 32, 32, 3)
    assert train.class_names[:2] == ["c0", "c1"]
    # The first 1024 values of a row are the red plane.
    with tarfile.open(archive) as tar:
        handle = tar.extractfile("cifar-10-batches-py/data_batch_1")
        assert handle is not None
        raw = pickle.loads(handle.read())[b"data"][0]
    np.testing.assert_array_equal(train_images[0, :, :, 0].ravel(), raw[:1024])
    # Read at another input size, each image is resized as the pipeline reads it.
    bigger, _ = cifar10.load(archive, PreprocessConfig(height=48, width=48))
    assert _read(bigger)[0].shape == (20, 48, 48, 3)


def test_cifar10_missing_says_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"cifar-10-python\.tar\.gz"):
        cifar10.load(tmp_path / "nowhere", CONFIG)
