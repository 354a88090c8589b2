"""CIFAR-10 from a local copy of the standard python archive.

Nothing is downloaded: the user points at `cifar-10-python.tar.gz` or at the
folder it extracts to (`cifar-10-batches-py`). The official test batch is the
validation set.
"""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path
from typing import IO, Any

import numpy as np

from model.data import DatasetError, ImageSet, array_decoder
from model.preprocessing import PreprocessConfig, preprocess_image

ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"


def _where_to_put_it(path: Path) -> str:
    return (
        f"CIFAR-10 not found at {path}: download {ARCHIVE} from the CIFAR-10 page "
        f"(python version) and pass its path, or the {FOLDER} folder it extracts to"
    )


def load(path: str | Path, config: PreprocessConfig) -> tuple[ImageSet, ImageSet]:
    """Returns (train, test), read at the model's input size.

    The pixels stay uint8 at 32x32 (150 MB for all 60,000 images); each image
    is resized to the model's input only when the pipeline reads it.
    """
    path = Path(path)
    if path.is_dir() and (path / FOLDER).is_dir():
        path = path / FOLDER
    if path.is_dir() and (path / ARCHIVE).is_file():
        path = path / ARCHIVE
    if path.is_dir():
        missing = [
            b for b in (*TRAIN_BATCHES, TEST_BATCH, "batches.meta") if not (path / b).exists()
        ]
        if missing:
            raise DatasetError(_where_to_put_it(path) + f" (missing {', '.join(missing)})")
        members = {
            name: (path / name).read_bytes()
            for name in (*TRAIN_BATCHES, TEST_BATCH, "batches.meta")
        }
    elif path.is_file():
        members = _read_archive(path)
    else:
        raise DatasetError(_where_to_put_it(path))
    names = [n.decode() for n in _unpickle(members["batches.meta"])[b"label_names"]]
    train = _batches([members[b] for b in TRAIN_BATCHES], names, config)
    test = _batches([members[TEST_BATCH]], names, config)
    return train, test


def _read_archive(path: Path) -> dict[str, bytes]:
    wanted = {*TRAIN_BATCHES, TEST_BATCH, "batches.meta"}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:gz") as archive:
            for member in archive.getmembers():
                name = Path(member.name).name
                if name in wanted and member.isfile():
                    handle: IO[bytes] | None = archive.extractfile(member)
                    if handle is not None:
                        found[name] = handle.read()
    except (tarfile.TarError, OSError) as exc:
        raise DatasetError(f"{path} is not a readable {ARCHIVE}: {exc}") from exc
    if missing := wanted - found.keys():
        raise DatasetError(f"{path} lacks {', '.join(sorted(missing))}: is it {ARCHIVE}?")
    return found


def _unpickle(data: bytes) -> dict[bytes, Any]:
    # The archive's own format; only open archives you trust (pickle runs code).
    return pickle.loads(data, encoding="bytes")


def _batches(blobs: list[bytes], names: list[str], config: PreprocessConfig) -> ImageSet:
    images, labels = [], []
    for blob in blobs:
        batch = _unpickle(blob)
        rows = np.asarray(batch[b"data"], dtype=np.uint8)
        # Stored as 3072 values per row: the red plane, then green, then blue.
        images.append(rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch[b"labels"], dtype=np.int32))
    pixels = np.ascontiguousarray(np.concatenate(images))
    decoder = array_decoder(pixels, lambda image: preprocess_image(image, config))
    return ImageSet(np.arange(len(pixels)), np.concatenate(labels), names, decoder)
