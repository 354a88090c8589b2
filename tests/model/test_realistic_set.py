"""The realistic check set's generator (tests/realistic.py): layout, format, determinism.

The accuracy the default command reaches on this set is a figure for
scripts/realistic_check.py, not a test: today it is far below a textbook CNN.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests import realistic


def _contents(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.jpg"))}


def test_every_class_is_split_into_training_and_held_out_jpegs(tmp_path: Path) -> None:
    real = realistic.write(tmp_path, per_class=5, test_share=0.2, seed=3)

    assert real.class_names == list(realistic.CLASSES)
    assert len(set(real.class_names)) == 10
    train = list(real.files("train"))
    held_out = list(real.files("test"))
    assert [label for _, label in held_out] == list(range(10))
    assert sorted(label for _, label in train) == sorted(list(range(10)) * 4)
    # Held-out files are their own: no training file has the same content.
    assert not {p.read_bytes() for p, _ in held_out} & {p.read_bytes() for p, _ in train}
    for path, _ in train[:3] + held_out[:3]:
        with Image.open(path) as image:
            assert image.format == "JPEG"
            assert image.size == (realistic.SIDE, realistic.SIDE)
            assert image.mode == "RGB"


def test_the_same_seed_writes_the_same_files_and_another_seed_does_not(tmp_path: Path) -> None:
    realistic.write(tmp_path / "a", per_class=3, seed=1)
    realistic.write(tmp_path / "b", per_class=3, seed=1)
    realistic.write(tmp_path / "c", per_class=3, seed=2)

    first = _contents(tmp_path / "a")
    assert first == _contents(tmp_path / "b")
    assert first.keys() == _contents(tmp_path / "c").keys()
    assert first != _contents(tmp_path / "c")


def test_render_draws_each_shape_from_its_random_stream_alone() -> None:
    photos = realistic.load_photos()
    for shape in realistic.CLASSES:
        image = np.asarray(realistic.render(shape, photos, np.random.default_rng(0)))
        again = np.asarray(realistic.render(shape, photos, np.random.default_rng(0)))
        assert image.shape == (realistic.SIDE, realistic.SIDE, 3)
        assert image.dtype == np.uint8
        assert np.array_equal(image, again)


def test_bad_arguments_are_refused_with_what_is_allowed(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="test_share must be between 0 and 1"):
        realistic.write(tmp_path, per_class=5, test_share=1.0)
    with pytest.raises(ValueError, match="per_class must be at least 2"):
        realistic.write(tmp_path, per_class=1)
