"""How well Grad-CAM heatmaps find the object, measured on the synthetic set.

The synthetic generator knows where each image's shape is (its mask), so an
explanation can be scored instead of admired:

- top-20% IoU: the intersection over union of the hottest fifth of the pixels
  with the shape's mask, averaged over the images;
- pointing game: how often the single hottest pixel lies on the shape.

Both are compared with two heatmaps that know nothing of the image: a blob
centred in the frame and uniform noise, scored on the same images. The
generator keeps each shape inside the frame, so most shapes cover the centre
and the blob is a strong guess; the scores are also given for the images
whose shape misses the centre pixel, where only a heatmap that follows the
shape can score.

    python -m model.faithfulness --model models/vgg-mini --per-class 20
"""

from __future__ import annotations

import argparse
import io
import sys
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


def off_centre(masks: np.ndarray) -> np.ndarray:
    """bool [n]: the images whose shape does not cover the frame's centre pixel."""
    _, height, width = masks.shape
    return ~masks[:, height // 2, width // 2]


def synthetic_heatmaps(
    version_dir: Path, per_class: int, seed: int, class_index: np.ndarray | int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps from the export's `gradcam` signature on fresh synthetic images, and masks.

    The images go through the signature as PNG files, like a client's would.
    `class_index` None explains each image's true class; else one class for
    all, or one per image (in `synthetic.generate_with_masks` order).
    """
    import tensorflow as tf
    from PIL import Image

    from model import layout
    from model.data import synthetic

    config = layout.read_preprocessing(version_dir)
    images, labels, masks = synthetic.generate_with_masks(
        per_class, (config.height, config.width), seed
    )
    encoded = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    explain = tf.saved_model.load(str(version_dir)).signatures[layout.GRADCAM_SIGNATURE]
    classes = labels if class_index is None else np.broadcast_to(class_index, labels.shape)
    heats = []
    for start in range(0, len(encoded), 64):
        out = explain(
            images=tf.constant(encoded[start : start + 64]),
            class_index=tf.constant(classes[start : start + 64], tf.int32),
        )
        heats.append(out["heatmap"].numpy())
    return np.concatenate(heats), masks


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

    version_dir = Path(args.model)
    if not (version_dir / "saved_model.pb").exists():
        versions = layout.list_versions(version_dir)
        if not versions:
            print(f"error: no exported version under {version_dir}", file=sys.stderr)
            return 2
        version_dir = version_dir / str(versions[-1])
    heats, masks = synthetic_heatmaps(version_dir, args.per_class, args.seed)
    print(f"{len(masks)} synthetic images, {version_dir}")
    off = off_centre(masks)
    for title, chosen in (("all images", np.ones(len(masks), bool)), ("shape off centre", off)):
        print(f" {title} ({int(chosen.sum())}):")
        if not chosen.any():
            continue
        print(f"  Grad-CAM (true class): {score(heats[chosen], masks[chosen])}")
        for name, scores in baselines(masks[chosen], args.seed).items():
            print(f"  {name}: {scores}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
