"""A procedurally generated, labelled RGB image set ("synthetic").

Each class is a (shape, colour) pair, so neither shape nor colour alone names
the class, and colours are drawn with random brightness and saturation so that
their grey levels overlap: a greyscale model cannot solve it. Position, scale,
rotation, background, clutter lines and noise are random, so it is a learning
task, not a lookup. Everything is deterministic for a seed.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
from PIL import Image, ImageDraw

from model.data import ImageSet, array_decoder
from model.preprocessing import PreprocessConfig, preprocess_image

SHAPES = ("circle", "square", "triangle", "cross")
HUES = {"red": 0.0, "green": 1.0 / 3.0, "blue": 2.0 / 3.0}
CLASS_NAMES = [f"{colour}_{shape}" for shape in SHAPES for colour in HUES]
# Drawn at this multiple of the output size, then downsampled: anti-aliased edges.
_SUPERSAMPLE = 2
# An off-centre placement is accepted about one time in five; failing this
# many draws in a row would take a broken generator, not bad luck.
_MAX_PLACEMENTS = 1000


def generate_arrays(
    per_class: int = 1000, size: tuple[int, int] = (32, 32), seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """`per_class` uint8 images of each of the 12 classes, shuffled, and their labels.

    Args:
        per_class: images per class (classes are exactly balanced).
        size: (height, width) of the images.
        seed: the same seed always gives the same images and labels.
    """
    images, labels, _ = generate_with_masks(per_class, size, seed)
    return images, labels


def generate_with_masks(
    per_class: int = 1000,
    size: tuple[int, int] = (32, 32),
    seed: int = 0,
    off_centre: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`generate_arrays` plus each image's shape mask: bool (n, height, width).

    A pixel is in the mask when the shape covers at least half of it. The
    images and labels are those `generate_arrays` gives for the same seed (the
    mask is drawn beside the image and takes nothing from the random stream).
    For measuring explanations: the generator knows where the class is.

    `off_centre` keeps only placements whose shape misses the frame's centre
    pixel (see `render_with_mask`); the images then differ from
    `generate_arrays`'s.
    """
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(CLASS_NAMES), dtype=np.int32), per_class)
    rng.shuffle(labels)
    pairs = [render_with_mask(int(label), size, rng, off_centre) for label in labels]
    images = np.stack([image for image, _ in pairs])
    masks = np.stack([mask for _, mask in pairs])
    return images, labels, masks


def generate(per_class: int, config: PreprocessConfig, seed: int = 0) -> ImageSet:
    """The synthetic set drawn at the model's input size, as an `ImageSet`."""
    images, labels = generate_arrays(per_class, (config.height, config.width), seed)
    decoder = array_decoder(images, lambda image: preprocess_image(image, config))
    return ImageSet(np.arange(len(labels)), labels, list(CLASS_NAMES), decoder)


def render(label: int, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """One uint8 (height, width, 3) image of class `label`."""
    return render_with_mask(label, size, rng)[0]


def covers_centre(mask: np.ndarray) -> np.ndarray:
    """Whether masks [..., height, width] cover a pixel nearest the frame's centre.

    Those pixels are the middle one of an odd side and the middle two of an
    even one: a heatmap peaked at the centre picks one of them (which one
    depends on tie-breaking), so a shape that misses them all is one such a
    heatmap cannot point at.
    """
    height, width = mask.shape[-2:]
    rows = slice((height - 1) // 2, height // 2 + 1)
    cols = slice((width - 1) // 2, width // 2 + 1)
    return np.asarray(mask[..., rows, cols].any(axis=(-2, -1)))


def render_with_mask(
    label: int, size: tuple[int, int], rng: np.random.Generator, off_centre: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """`render`'s image and the shape's mask, bool (height, width).

    `off_centre` draws the shape's size, position and angle again, from the
    same ranges, until the shape misses the pixels nearest the frame's centre
    (`covers_centre`): the training distribution conditioned on that (about
    one training image in six meets it), where a heatmap centred in the frame
    cannot find the shape.
    """
    height, width = size
    big_w, big_h = width * _SUPERSAMPLE, height * _SUPERSAMPLE
    background = _greyish(rng)
    image = Image.new("RGB", (big_w, big_h), background)
    draw = ImageDraw.Draw(image)
    # Clutter: achromatic lines, so they never carry a class colour.
    for _ in range(int(rng.integers(2, 6))):
        grey = int(rng.integers(0, 256))
        points = [tuple(rng.uniform(0, (big_w, big_h))) for _ in range(2)]
        draw.line(points, fill=(grey, grey, grey), width=int(rng.integers(1, 3)))
    shape = SHAPES[label // len(HUES)]
    hue = list(HUES.values())[label % len(HUES)]
    side = min(big_w, big_h)
    for _ in range(_MAX_PLACEMENTS):
        radius = rng.uniform(0.22, 0.4) * side
        cx = rng.uniform(radius, big_w - radius)
        cy = rng.uniform(radius, big_h - radius)
        angle = rng.uniform(0, 2 * math.pi)  # drawn before the colour, as always
        cover = Image.new("L", (big_w, big_h), 0)
        _draw_shape(ImageDraw.Draw(cover), shape, (cx, cy), radius, angle, 255)
        mask = np.asarray(cover.resize((width, height), Image.Resampling.BOX)) >= 128
        if not (off_centre and covers_centre(mask)):
            break
    else:
        raise RuntimeError(f"no off-centre placement of a {shape} in {_MAX_PLACEMENTS} draws")
    colour = _colour(hue, rng)
    _draw_shape(draw, shape, (cx, cy), radius, angle, colour)
    small = image.resize((width, height), Image.Resampling.BOX)
    pixels = np.asarray(small, dtype=np.float32)
    pixels += rng.normal(0.0, rng.uniform(2.0, 10.0), pixels.shape)
    return np.clip(pixels, 0, 255).round().astype(np.uint8), mask


def _greyish(rng: np.random.Generator) -> tuple[int, int, int]:
    """A background of any brightness with at most a faint tint."""
    level = rng.uniform(20, 235)
    tint = rng.uniform(-12, 12, 3)
    r, g, b = np.clip(level + tint, 0, 255).astype(int)
    return int(r), int(g), int(b)


def _colour(hue: float, rng: np.random.Generator) -> tuple[int, int, int]:
    """The class hue with jitter, random saturation and random brightness."""
    h = (hue + rng.uniform(-0.04, 0.04)) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, rng.uniform(0.6, 1.0), rng.uniform(0.5, 1.0))
    return round(r * 255), round(g * 255), round(b * 255)


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    centre: tuple[float, float],
    radius: float,
    angle: float,
    colour: tuple[int, int, int] | int,
) -> None:
    cx, cy = centre
    if shape == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
        return
    if shape == "square":
        corners = [(radius * 0.8, a) for a in (0.25, 0.75, 1.25, 1.75)]
        outline = [
            (r * math.cos(angle + a * math.pi), r * math.sin(angle + a * math.pi))
            for r, a in corners
        ]
    elif shape == "triangle":
        outline = [
            (
                radius * math.cos(angle + k * 2 * math.pi / 3),
                radius * math.sin(angle + k * 2 * math.pi / 3),
            )
            for k in range(3)
        ]
    else:  # cross: a plus sign of two bars, arm half-width a third of the radius
        arm = radius / 3
        base = [
            (-arm, -radius),
            (arm, -radius),
            (arm, -arm),
            (radius, -arm),
            (radius, arm),
            (arm, arm),
            (arm, radius),
            (-arm, radius),
            (-arm, arm),
            (-radius, arm),
            (-radius, -arm),
            (-arm, -arm),
        ]
        cos, sin = math.cos(angle), math.sin(angle)
        outline = [(x * cos - y * sin, x * sin + y * cos) for x, y in base]
    draw.polygon([(cx + x, cy + y) for x, y in outline], fill=colour)
