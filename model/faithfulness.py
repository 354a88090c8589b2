"""How well the `gradcam` signature's heatmaps find the object, on the synthetic set.

The synthetic generator knows where each image's shape is (its mask), so an
explanation can be scored instead of admired:

- top-20% IoU: the intersection over union of the hottest fifth of the pixels
  with the shape's mask, averaged over the images;
- pointing game: how often the single hottest pixel lies on the shape.

Both are compared with two heatmaps that know nothing of the image: a blob
centred in the frame and uniform noise, scored on the same images. The
generator keeps each shape inside the frame, so most shapes cover the centre
and the blob is a strong guess over all images. A second set is therefore
drawn from the same generator with every shape placed off the centre
(`synthetic.generate_with_masks(off_centre=True)`: the same ranges of size,
position and angle, kept only where the shape misses the centre pixels),
where only a heatmap that follows the shape can score. The model's accuracy
on each set is printed beside the scores: an explanation of a wrong answer
need not point at the shape.

    python -m model.faithfulness --model models/vgg-mini --per-class 20
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TOP_FRACTION = 0.2


@dataclass(frozen=True)
class Scores:
    """Mean top-20% IoU and pointing-game hit rate of one kind of heatmap."""

    iou: float
    pointing: float

    def __str__(self) -> str:
        return f"top-20% IoU {self.iou:.3f}, pointing game {self.pointing:.1%}"


def top_iou(heat: np.ndarray, mask: np.ndarray, fraction: float = TOP_FRACTION) -> float:
    """IoU of the `fraction` hottest pixels of `heat` [h, w] with bool `mask` [h, w].

    Ties are broken by position (a stable sort), so a constant heatmap picks
    the first rows, not everything.
    """
    count = max(1, round(fraction * heat.size))
    hottest = np.zeros(heat.size, dtype=bool)
    hottest[np.argsort(-heat.ravel(), kind="stable")[:count]] = True
    flat = mask.ravel()
    union = np.logical_or(hottest, flat).sum()
    return float(np.logical_and(hottest, flat).sum() / union) if union else 0.0


def hits(heat: np.ndarray, mask: np.ndarray) -> bool:
    """Pointing game: is the hottest pixel (first one, on ties) on the mask?"""
    return bool(mask.ravel()[int(np.argmax(heat.ravel()))])


def score(heats: np.ndarray, masks: np.ndarray) -> Scores:
    """Mean scores of heatmaps [n, h, w] against masks [n, h, w]."""
    pairs = list(zip(heats, masks, strict=True))
    return Scores(
        iou=float(np.mean([top_iou(h, m) for h, m in pairs])),
        pointing=float(np.mean([hits(h, m) for h, m in pairs])),
    )


def centred_blob(height: int, width: int) -> np.ndarray:
    """A Gaussian blob in the middle of the frame, sigma a quarter of the side."""
    ys = (np.arange(height) - (height - 1) / 2) / (height / 4)
    xs = (np.arange(width) - (width - 1) / 2) / (width / 4)
    return np.exp(-0.5 * (ys[:, None] ** 2 + xs[None, :] ** 2))


def baselines(masks: np.ndarray, seed: int = 0) -> dict[str, Scores]:
    """The centred-blob and random-heatmap scores on the same masks."""
    _, height, width = masks.shape
    blob = np.broadcast_to(centred_blob(height, width), masks.shape)
    noise = np.random.default_rng(seed).random(masks.shape)
    return {"centred blob": score(blob, masks), "random": score(noise, masks)}


@dataclass(frozen=True)
class Explained:
    """Synthetic images put through an export's `gradcam` signature.

    Attributes:
        heats: float32 [n, height, width], the signature's heatmaps.
        masks: bool [n, height, width], where each image's shape is.
        labels: int32 [n], each image's true class.
        predicted: int [n], the model's most probable class.
    """

    heats: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    predicted: np.ndarray

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.predicted == self.labels))


def explain_synthetic(
    version_dir: Path,
    per_class: int,
    seed: int,
    class_index: np.ndarray | int | None = None,
    off_centre: bool = False,
) -> Explained:
    """Heatmaps from the export's `gradcam` signature on fresh synthetic images.

    The images go through the signature as PNG files, like a client's would.
    `class_index` None explains each image's true class; else one class for
    all, or one per image (in `synthetic.generate_with_masks` order).
    `off_centre` draws every shape off the frame's centre.
    """
    import tensorflow as tf

    from model import layout
    from model.data import synthetic

    config = layout.read_preprocessing(version_dir)
    images, labels, masks = synthetic.generate_with_masks(
        per_class, (config.height, config.width), seed, off_centre=off_centre
    )
    explain = tf.saved_model.load(str(version_dir)).signatures[layout.GRADCAM_SIGNATURE]
    classes = labels if class_index is None else np.broadcast_to(class_index, labels.shape)
    heats, predicted = [], []
    for start in range(0, len(images), 64):
        out = explain(
            images=tf.constant([_png(image) for image in images[start : start + 64]]),
            class_index=tf.constant(classes[start : start + 64], tf.int32),
        )
        heats.append(out["heatmap"].numpy())
        predicted.append(np.argmax(out["probabilities"].numpy(), axis=-1))
    return Explained(np.concatenate(heats), masks, labels, np.concatenate(predicted))


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def report(version_dir: Path, per_class: int, seed: int) -> Iterator[str]:
    """The lines `main` prints: both sets, the explanation and both baselines on each."""
    for title, off in (("all images", False), ("shape off centre", True)):
        explained = explain_synthetic(version_dir, per_class, seed, off_centre=off)
        yield (f" {title} ({len(explained.labels)}; model accuracy {explained.accuracy:.1%}):")
        yield f"  explanation (true class): {score(explained.heats, explained.masks)}"
        for name, scores in baselines(explained.masks, seed).items():
            yield f"  {name}: {scores}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m model.faithfulness",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="models/<name> or models/<name>/<version>")
    p.add_argument("--per-class", type=int, default=20, help="synthetic images per class")
    p.add_argument("--seed", type=int, default=1234, help="seed of the synthetic images")
    args = p.parse_args(argv)
    from model import layout
    from model.data import synthetic

    version_dir = layout.latest_version_dir(args.model)
    if version_dir is None:
        print(f"error: no exported version under {args.model}", file=sys.stderr)
        return 2
    count = len(synthetic.CLASS_NAMES) * args.per_class
    print(f"{count} synthetic images per set, seed {args.seed}, {version_dir}")
    for line in report(version_dir, args.per_class, args.seed):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
