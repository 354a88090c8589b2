"""Peak memory and training speed: the streamed folder loader vs an in-memory one.

    .venv/bin/python scripts/loader_bench.py                       # 1k, 4k, 16k images
    .venv/bin/python scripts/loader_bench.py --sizes 1000 4000 --steps 20

Writes --count JPEG files of 96x96 (synthetic-set drawings, 12 classes) once,
then for each folder size and each loader runs a child process that loads the
folder and trains vgg-mini at 96x96 for a fixed number of steps, and prints
its peak resident memory (ru_maxrss) and training images/s (after a warm-up).

- `stream`: what `model.train` does: file paths shuffled, decoded and resized
  by tf.data as training reads them.
- `memory`: what the loader did before: every image decoded into one float32
  array, then `from_tensor_slices` with a full shuffle buffer.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIDE = 96
BATCH = 64


def write_images(root: Path, count: int) -> None:
    import numpy as np
    from PIL import Image

    from model.data import synthetic

    done = root / f".complete-{count}"
    if done.exists():
        return
    rng = np.random.default_rng(0)
    n_classes = len(synthetic.CLASS_NAMES)
    for i in range(count):
        label = i % n_classes
        folder = root / synthetic.CLASS_NAMES[label]
        folder.mkdir(parents=True, exist_ok=True)
        pixels = synthetic.render(label, (SIDE, SIDE), rng)
        Image.fromarray(pixels).save(folder / f"{i:06d}.jpg", quality=90)
    done.touch()


def subset_folder(source: Path, target: Path, count: int) -> Path:
    """The first `count` files of `source` (round-robin over classes), as hard links."""
    if target.exists():
        return target
    files = sorted(source.rglob("*.jpg"), key=lambda p: p.name)[:count]
    for path in files:
        link = target / path.parent.name / path.name
        link.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, link)
    return target


def child(mode: str, folder_dir: Path, steps: int) -> dict[str, float]:
    import keras
    import numpy as np
    import tensorflow as tf

    from model.architecture import build_vgg, preset
    from model.data import folder
    from model.preprocessing import PreprocessConfig

    keras.utils.set_random_seed(0)
    config = PreprocessConfig(height=SIDE, width=SIDE)
    started = time.perf_counter()
    images, _ = folder.load(folder_dir, config)
    if mode == "stream":
        ds = images.dataset(shuffle_seed=0).repeat().batch(BATCH)
    else:
        batches = list(images.dataset().batch(256).as_numpy_iterator())
        pixels = np.concatenate([x for x, _ in batches])
        labels = np.concatenate([y for _, y in batches])
        ds = (
            tf.data.Dataset.from_tensor_slices((pixels, labels))
            .shuffle(len(labels), seed=0, reshuffle_each_iteration=True)
            .repeat()
            .batch(BATCH)
        )
    ds = ds.prefetch(tf.data.AUTOTUNE)
    load_s = time.perf_counter() - started
    model = build_vgg(
        preset("vgg-mini", input_size=(SIDE, SIDE), num_classes=len(images.class_names))
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    warmup = 5
    model.fit(ds, steps_per_epoch=warmup, epochs=1, verbose=0)
    timed = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    seconds = time.perf_counter() - timed
    return {
        "load_s": round(load_s, 1),
        "images_per_s": round(steps * BATCH / seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000])
    parser.add_argument("--steps", type=int, default=30, help="timed training steps a run")
    parser.add_argument(
        "--loaders", nargs="+", default=["stream", "memory"], choices=["stream", "memory"]
    )
    parser.add_argument("--dir", type=Path, default=Path("results/loader-bench"))
    parser.add_argument("--child", nargs=2, metavar=("MODE", "FOLDER"), help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]), args.steps)))
        return 0
    source = args.dir / "all"
    write_images(source, max(args.sizes))
    rows = []
    print(f"| images ({SIDE}x{SIDE} JPEG) | loader | peak RSS | load time | training images/s |")
    print("|---|---|---|---|---|")
    for count in args.sizes:
        folder_dir = subset_folder(source, args.dir / f"n{count}", count)
        for mode in args.loaders:
            run = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--steps",
                    str(args.steps),
                    "--child",
                    mode,
                    str(folder_dir),
                ],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
            )
            row = {"images": count, "loader": mode, **json.loads(run.stdout.splitlines()[-1])}
            rows.append(row)
            print(
                f"| {count} | {mode} | {row['peak_rss_mb']} MB | {row['load_s']} s "
                f"| {row['images_per_s']} |",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
