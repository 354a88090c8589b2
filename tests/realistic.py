"""A realistic check set: drawn objects over crops of real colour photographs.

Ten classes of glyph-like objects (disk, ring, triangle, square, star, cross,
arrow, crescent, L and T shapes), each drawn with PIL at a random size (a
third to two thirds of the frame), colour, position and rotation over a
random crop of a colour photograph that ships with scikit-image (nothing is
downloaded), saved as 64x64 JPEGs. Unlike the synthetic set, the background
is real clutter with edges and colours of its own, the object's colour says
nothing about its class, and its size varies by a factor of two: the model
must learn shape.

The held-out folder (20% of each class by default) is written apart from the
training folder and no training step sees it. Everything is deterministic
from `seed`. This set is a check, not a tuning target: do not choose the
trainer's defaults by its score.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from tests.realdata import RealSet

SIDE = 64
# Objects are drawn this many times larger, then shrunk, for smooth edges.
SUPERSAMPLE = 4
IMAGE_SUFFIX = ".jpg"
JPEG_QUALITY = 90
# Photos (scikit-image names) whose crops make the backgrounds; all ship
# with scikit-image itself (others need pooch and a download).
PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "stereo_motorcycle",
    "colorwheel",
)

Point = tuple[float, float]


def _regular(n: int, inner: float | None = None) -> list[Point]:
    """A regular n-gon (or a 2n-point star when `inner` is given) in the unit circle."""
    if inner is None:
        return [(math.cos(2 * math.pi * k / n), math.sin(2 * math.pi * k / n)) for k in range(n)]
    points = []
    for k in range(2 * n):
        r = 1.0 if k % 2 == 0 else inner
        angle = math.pi * k / n - math.pi / 2
        points.append((r * math.cos(angle), r * math.sin(angle)))
    return points


# Each shape is drawn into a mask by a function of (draw, centre, radius) in
# canvas pixels; every outline fits the circle of that radius, so the object's
# extent is 2 * radius whatever the shape.
def _polygon(points: list[Point]) -> Callable[[ImageDraw.ImageDraw, Point, float], None]:
    def draw(canvas: ImageDraw.ImageDraw, c: Point, r: float) -> None:
        canvas.polygon([(c[0] + r * x, c[1] + r * y) for x, y in points], fill=255)

    return draw


def _disk(canvas: ImageDraw.ImageDraw, c: Point, r: float) -> None:
    canvas.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=255)


def _ring(canvas: ImageDraw.ImageDraw, c: Point, r: float) -> None:
    canvas.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=255)
    hole = 0.6 * r
    canvas.ellipse([c[0] - hole, c[1] - hole, c[0] + hole, c[1] + hole], fill=0)


def _crescent(canvas: ImageDraw.ImageDraw, c: Point, r: float) -> None:
    canvas.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=255)
    bite = 0.85 * r
    dx = 0.45 * r
    canvas.ellipse([c[0] - bite + dx, c[1] - bite, c[0] + bite + dx, c[1] + bite], fill=0)


_SQ = 1 / math.sqrt(2)
SHAPES: dict[str, Callable[[ImageDraw.ImageDraw, Point, float], None]] = {
    "disk": _disk,
    "ring": _ring,
    "triangle": _polygon(_regular(3)),
    "square": _polygon([(-_SQ, -_SQ), (_SQ, -_SQ), (_SQ, _SQ), (-_SQ, _SQ)]),
    "star": _polygon(_regular(5, inner=0.4)),
    "cross": _polygon(
        [
            (-0.25, -0.95),
            (0.25, -0.95),
            (0.25, -0.25),
            (0.95, -0.25),
            (0.95, 0.25),
            (0.25, 0.25),
            (0.25, 0.95),
            (-0.25, 0.95),
            (-0.25, 0.25),
            (-0.95, 0.25),
            (-0.95, -0.25),
            (-0.25, -0.25),
        ]
    ),
    "arrow": _polygon(
        [(-0.95, -0.2), (0.1, -0.2), (0.1, -0.6), (0.95, 0.0), (0.1, 0.6), (0.1, 0.2), (-0.95, 0.2)]
    ),
    "crescent": _crescent,
    "ell": _polygon(
        [(-0.6, -0.75), (-0.2, -0.75), (-0.2, 0.35), (0.6, 0.35), (0.6, 0.75), (-0.6, 0.75)]
    ),
    "tee": _polygon(
        [
            (-0.7, -0.7),
            (0.7, -0.7),
            (0.7, -0.3),
            (0.2, -0.3),
            (0.2, 0.7),
            (-0.2, 0.7),
            (-0.2, -0.3),
            (-0.7, -0.3),
        ]
    ),
}
CLASSES = tuple(SHAPES)


def load_photos() -> list[np.ndarray]:
    """The background photographs as uint8 RGB arrays."""
    from skimage import data

    photos = []
    for name in PHOTOS:
        photo = getattr(data, name)()
        if isinstance(photo, tuple):  # stereo_motorcycle: (left, right, disparity)
            photo = photo[0]
        photos.append(np.ascontiguousarray(photo[..., :3]))
    return photos


def _background(photos: list[np.ndarray], rng: np.random.Generator) -> Image.Image:
    """A random square crop (a tenth to half of the photo's short side, at least 64 pixels)."""
    photo = photos[int(rng.integers(len(photos)))]
    h, w = photo.shape[:2]
    short = min(h, w)
    side = int(rng.integers(max(SIDE, short // 10), max(SIDE, short // 2) + 1))
    top, left = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
    crop = Image.fromarray(photo[top : top + side, left : left + side])
    return crop.resize((SIDE, SIDE), Image.Resampling.BILINEAR)


def render(shape: str, photos: list[np.ndarray], rng: np.random.Generator) -> Image.Image:
    """One 64x64 RGB image of `shape` over a photo crop, every property drawn from `rng`."""
    big = SIDE * SUPERSAMPLE
    extent = rng.uniform(1 / 3, 2 / 3) * big  # the object's diameter
    radius = extent / 2
    # The centre keeps the whole object inside the frame.
    cx, cy = (float(rng.uniform(radius, big - radius)) for _ in range(2))
    mask = Image.new("L", (big, big), 0)
    SHAPES[shape](ImageDraw.Draw(mask), (cx, cy), radius)
    # Rotate about the object's own centre so it stays where it was placed.
    mask = mask.rotate(
        float(rng.uniform(0, 360)), resample=Image.Resampling.BILINEAR, center=(cx, cy)
    )
    mask = mask.resize((SIDE, SIDE), Image.Resampling.LANCZOS)
    colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
    image = _background(photos, rng)
    image.paste(Image.new("RGB", (SIDE, SIDE), colour), (0, 0), mask)
    return image


def write(root: Path, per_class: int = 175, test_share: float = 0.2, seed: int = 0) -> RealSet:
    """Writes the set under `root/realistic/{train,test}/<class>/*.jpg` and returns where.

    Args:
        root: parent folder (created if missing).
        per_class: images per class in all (train + held out).
        test_share: share of each class written to the held-out folder.
        seed: every image (shape placement, colour, rotation, background) follows from it.
    """
    if not 0 < test_share < 1:
        raise ValueError(f"test_share must be between 0 and 1 (exclusive), not {test_share}")
    if per_class < 2:
        raise ValueError(
            f"per_class must be at least 2 (one to train, one held out), not {per_class}"
        )
    photos = load_photos()
    train_dir, test_dir = root / "realistic" / "train", root / "realistic" / "test"
    n_test = max(1, round(per_class * test_share))
    for label, shape in enumerate(CLASSES):
        # One stream per class: adding classes or images to one leaves the others unchanged.
        rng = np.random.default_rng([seed, label])
        for index in range(per_class):
            folder = (test_dir if index < n_test else train_dir) / shape
            folder.mkdir(parents=True, exist_ok=True)
            render(shape, photos, rng).save(
                folder / f"{index:05d}{IMAGE_SUFFIX}", quality=JPEG_QUALITY
            )
    return RealSet("realistic", train_dir, test_dir, list(CLASSES), IMAGE_SUFFIX)
