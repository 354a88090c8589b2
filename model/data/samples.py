"""`python -m model.data.samples OUT_DIR`: sample images to try a server with.

Writes one image per class of the synthetic set (`red_triangle.png`,
`green_cross.png`, ...), drawn by the same `render` that makes the training
set, at a size other than the model's input (the server resizes in the graph).
Deterministic for a seed; the client examples of the README and the docs use these files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from model.data.synthetic import CLASS_NAMES, render

FORMATS = {"png": "PNG", "jpg": "JPEG", "bmp": "BMP", "gif": "GIF"}


def write_samples(out_dir: Path, size: int = 64, seed: int = 0, fmt: str = "png") -> list[Path]:
    """One `<class>.<fmt>` per synthetic class in `out_dir`; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for label, name in enumerate(CLASS_NAMES):
        # One generator per class: a file does not change when classes are added.
        pixels = render(label, (size, size), np.random.default_rng([seed, label]))
        path = out_dir / f"{name}.{fmt}"
        Image.fromarray(pixels).save(path, format=FORMATS[fmt])
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model.data.samples",
        description="Write one sample image per class of the synthetic set.",
    )
    parser.add_argument("out_dir", help="folder to write the images into (created if missing)")
    parser.add_argument("--size", type=int, default=64, help="width and height (default: 64)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--format", choices=sorted(FORMATS), default="png", help="file format (default: png)"
    )
    args = parser.parse_args(argv)
    if args.size < 8:
        parser.error(f"--size {args.size}: must be at least 8")
    paths = write_samples(Path(args.out_dir), args.size, args.seed, args.format)
    names = ", ".join(p.name for p in paths[:3])
    print(f"wrote {len(paths)} images to {Path(args.out_dir)}/ ({names}, ...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
