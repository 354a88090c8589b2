"""Draws what the network sees: first-layer filters and every block's feature maps.

    python -m model.visualize --model models/vgg-mini --image cat.png --out maps.png
    python -m model.visualize --model models/vgg-mini --image cat.png --gradcam --out cam.png

The image goes through the exported version's own preprocessing settings and
the same decode/resize code as serving. Feature maps are the ReLU outputs (the
source text's definition), one row per convolution, at most `--max-maps` each.
With --gradcam it writes the class activation overlay instead (LayerCAM, a
Grad-CAM variant: `model.gradcam`, the same graph code as the exported
`gradcam` signature, run on the version's Keras model, so versions exported
before that signature work too).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import keras
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf

from model import gradcam, layout
from model.architecture import feature_map_layers
from model.preprocessing import preprocess_encoded


def draw(model: keras.Model, image: np.ndarray, out: Path, max_maps: int = 16) -> None:
    """Saves a PNG of first-layer filters and the feature maps of `image`.

    Args:
        model: the VGG Keras model (input: float32 (1, h, w, 3) in 0-255).
        image: float32 (h, w, 3) in 0-255, at the model's input size.
        out: PNG path.
        max_maps: feature maps drawn per layer.
    """
    names = feature_map_layers(model)
    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    maps = probe([image[None]], training=False)  # a list: the model was built with [inputs]
    maps = [np.asarray(m)[0] for m in (maps if isinstance(maps, list) else [maps])]
    first = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    kernel = np.asarray(first.kernel)  # (3, 3, 3, filters)
    columns = max(max_maps, 1)
    rows = 2 + len(names)
    fig, axes = plt.subplots(rows, columns + 1, figsize=(columns + 1, rows * 1.1), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes[0, 0].imshow(image.astype(np.uint8))
    axes[0, 0].set_title("input", fontsize=7)
    axes[1, 0].text(0, 0.5, f"{first.name}\nfilters", fontsize=6, va="center")
    for i in range(min(columns, kernel.shape[-1])):
        k = kernel[..., i]
        span = k.max() - k.min()
        axes[1, i + 1].imshow(
            (k - k.min()) / span if span else np.zeros_like(k), interpolation="nearest"
        )
    for row, (name, fmap) in enumerate(zip(names, maps, strict=True), start=2):
        axes[row, 0].text(
            0,
            0.5,
            f"{name.removesuffix('_relu')}\n{fmap.shape[0]}x{fmap.shape[1]}x{fmap.shape[2]}",
            fontsize=6,
            va="center",
        )
        for i in range(min(columns, fmap.shape[-1])):
            axes[row, i + 1].imshow(fmap[..., i], cmap="viridis", interpolation="nearest")
    fig.tight_layout(pad=0.2)
    fig.savefig(out, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m model.visualize",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="models/<name> or models/<name>/<version>")
    p.add_argument("--image", required=True, help="a JPEG/PNG/BMP/GIF file")
    p.add_argument("--out", default="feature_maps.png", help="PNG to write")
    p.add_argument("--max-maps", type=int, default=16, help="feature maps per layer")
    p.add_argument(
        "--gradcam", action="store_true", help="write the Grad-CAM overlay instead of the maps"
    )
    p.add_argument(
        "--class-index", type=int, default=-1, help="--gradcam: class to explain (-1: predicted)"
    )
    args = p.parse_args(argv)
    version_dir = layout.latest_version_dir(args.model)
    if version_dir is None:
        print(f"error: no exported version under {args.model}", file=sys.stderr)
        return 2
    try:
        data = Path(args.image).read_bytes()
        config = layout.read_preprocessing(version_dir)
        image = preprocess_encoded(tf.constant(data), config).numpy()
    except (OSError, tf.errors.InvalidArgumentError) as exc:
        print(f"error: cannot read {args.image}: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    model = keras.saving.load_model(version_dir / layout.KERAS_MODEL)
    if args.gradcam:
        labels = layout.read_labels(version_dir)
        if not -1 <= args.class_index < len(labels):
            print(
                f"error: --class-index {args.class_index}: the model has {len(labels)} classes "
                f"(0-{len(labels) - 1}, or -1 for the predicted one)",
                file=sys.stderr,
            )
            return 2
        out = gradcam.endpoint(model, config)(
            tf.constant([data]), tf.constant([args.class_index], tf.int32)
        )
        Path(args.out).write_bytes(out["overlay_png"].numpy()[0])
        chosen = int(out["class_index"].numpy()[0])
        probability = float(out["probabilities"].numpy()[0][chosen])
        print(f"wrote {args.out}: Grad-CAM of {labels[chosen]} ({probability:.1%})")
        return 0
    draw(
        model,
        image,
        Path(args.out),
        args.max_maps,
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
