"""The images to classify: files as given, folders searched; a file's bytes or why not."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from model.image_files import IMAGE_SUFFIXES  # not model.data: that imports TensorFlow


def find_images(inputs: Iterable[str]) -> Iterator[Path]:
    """Files as given, and image files under folders (recursively, sorted)."""
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        else:
            yield path  # a missing file becomes an error row


def read_image_file(path: Path) -> bytes | str:
    """The file's bytes, or why it cannot be read (an error row's text)."""
    try:
        return path.read_bytes()
    except OSError as exc:
        return f"cannot read file: {exc.strerror or exc}"
