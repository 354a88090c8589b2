"""Default training command vs a textbook Keras CNN on drawn objects over real photos.

    .venv/bin/python scripts/realistic_check.py                      # both, 60 baseline epochs
    .venv/bin/python scripts/realistic_check.py --baseline-epochs 20
    .venv/bin/python scripts/realistic_check.py --skip-default       # baseline only
    .venv/bin/python scripts/realistic_check.py --skip-baseline --extra --input-size 64

Builds the realistic set (tests/realistic.py: ten shapes at a random size,
colour, place and rotation over crops of scikit-image's colour photographs,
64x64 JPEGs, 20% of each class held out), then runs
(a) `python -m model.train --data folder --data-dir TRAIN --output ... --name ...`
    with no other flag, and scores the held-out images through the exported
    SavedModel's serving signature (the bytes a client would send);
(b) a textbook CNN written here: three blocks of two 3x3 convolutions with
    batch norm, global average pooling, random shifts and zoom, Adam with
    cosine decay, no pretrained weights, trained on the same training folder.
Both run under `nice -n 10`. Prints one table: held-out and training accuracy,
chance, wall time. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import layout
from tests import realdata, realistic
from tests.realdata import RealSet

NICE = ["nice", "-n", "10"]


def _served_accuracy(version_dir: Path, real: RealSet, which: str) -> float:
    """Accuracy of the export's serving signature on the train or test folder's files."""
    if which == "test":
        return realdata.held_out_accuracy(version_dir, real)
    # held_out_accuracy reads the test folder; point a copy of the set at train.
    as_test = RealSet(real.name, real.train_dir, real.train_dir, real.class_names, real.suffix)
    return realdata.held_out_accuracy(version_dir, as_test)


def run_default(real: RealSet, root: Path, extra: list[str]) -> dict[str, object]:
    """The project's documented command, no tuning flags (unless `extra`), scored as served."""
    command = [
        *NICE,
        sys.executable,
        "-m",
        "model.train",
        "--data",
        "folder",
        "--data-dir",
        str(real.train_dir),
        "--output",
        str(root / "models"),
        "--name",
        "realistic",
        *extra,
    ]
    started = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if run.returncode != 0:
        raise SystemExit(f"default training failed ({run.returncode}):\n{run.stderr[-3000:]}")
    models = root / "models" / "realistic"
    version_dir = models / str(layout.list_versions(models)[-1])
    metrics = json.loads((version_dir / layout.REPORT / "metrics.json").read_text())
    return {
        "run": " ".join(["default command", *extra]),
        "held_out_accuracy": _served_accuracy(version_dir, real, "test"),
        "train_accuracy": _served_accuracy(version_dir, real, "train"),
        "reported_validation_accuracy": metrics["validation_accuracy"],
        "reported_train_accuracy": metrics["train_accuracy"],
        "epochs_run": metrics["epochs_run"],
        "plan": metrics["plan"],
        "seconds": round(seconds),
        "last_lines": run.stdout.strip().splitlines()[-3:] + run.stderr.strip().splitlines()[-3:],
    }


def run_baseline(real: RealSet, epochs: int, filters: int, seed: int) -> dict[str, object]:
    """Trains and scores the textbook CNN in a niced child process (this same script)."""
    command = [
        *NICE,
        sys.executable,
        __file__,
        "--baseline-child",
        str(real.train_dir.parent),
        "--baseline-epochs",
        str(epochs),
        "--baseline-filters",
        str(filters),
        "--seed",
        str(seed),
    ]
    started = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if run.returncode != 0:
        raise SystemExit(f"baseline failed ({run.returncode}):\n{run.stderr[-3000:]}")
    row: dict[str, object] = json.loads(run.stdout.strip().splitlines()[-1])
    row["seconds"] = round(seconds)
    return row


def _load(real: RealSet, which: str) -> tuple[object, object]:
    import numpy as np
    from PIL import Image

    files, labels = zip(*real.files(which), strict=True)
    images = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32) for p in files])
    return images, np.asarray(labels, np.int32)


def baseline_child(set_dir: Path, epochs: int, filters: int, seed: int) -> dict[str, object]:
    """The textbook CNN: what a Keras tutorial would write for 64x64 images, no tuning."""
    import keras
    import numpy as np
    from keras import layers

    keras.utils.set_random_seed(seed)
    real = RealSet(
        "realistic",
        set_dir / "train",
        set_dir / "test",
        list(realistic.CLASSES),
        realistic.IMAGE_SUFFIX,
    )
    x_train, y_train = _load(real, "train")
    x_test, y_test = _load(real, "test")
    inputs = keras.Input(shape=(realistic.SIDE, realistic.SIDE, 3))
    x = layers.Rescaling(1.0 / 255.0)(inputs)
    x = layers.RandomTranslation(0.1, 0.1, fill_mode="reflect")(x)
    x = layers.RandomZoom(0.2, fill_mode="reflect")(x)
    for block in range(3):
        for _ in range(2):
            x = layers.Conv2D(filters * 2**block, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            x = layers.ReLU()(x)
        x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(len(real.class_names), activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    batch_size = 32
    steps = epochs * int(np.ceil(len(y_train) / batch_size))  # type: ignore[arg-type]
    schedule = keras.optimizers.schedules.CosineDecay(1e-3, decay_steps=steps)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0)
    _, held_out = model.evaluate(x_test, y_test, verbose=0)
    _, train = model.evaluate(x_train, y_train, verbose=0)
    return {
        "run": f"textbook CNN ({filters}/{2 * filters}/{4 * filters} filters, {epochs} epochs)",
        "held_out_accuracy": float(held_out),
        "train_accuracy": float(train),
        "epochs_run": epochs,
        "parameters": model.count_params(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-class", type=int, default=175, help="images a class in all")
    parser.add_argument("--seed", type=int, default=0, help="the set's and the baseline's seed")
    parser.add_argument("--baseline-epochs", type=int, default=60)
    parser.add_argument("--baseline-filters", type=int, default=32, help="first block's filters")
    parser.add_argument("--skip-default", action="store_true", help="run the baseline only")
    parser.add_argument("--skip-baseline", action="store_true", help="run the default only")
    parser.add_argument("--keep", type=Path, help="write the set and models here (kept)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument(
        "--extra", nargs=argparse.REMAINDER, default=[], help="flags added to the default command"
    )
    parser.add_argument("--baseline-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_child:
        row = baseline_child(
            args.baseline_child, args.baseline_epochs, args.baseline_filters, args.seed
        )
        print(json.dumps(row))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        real = realistic.write(root, per_class=args.per_class, seed=args.seed)
        n_train = sum(1 for _ in real.files("train"))
        n_test = sum(1 for _ in real.files("test"))
        chance = 1.0 / len(real.class_names)
        print(
            f"realistic set: {len(real.class_names)} classes, {n_train} train / {n_test} held out"
        )
        print("| run | held-out accuracy | train accuracy | chance | epochs | wall time |")
        print("|---|---|---|---|---|---|", flush=True)
        rows = []
        if not args.skip_default:
            rows.append(run_default(real, root, args.extra))
        if not args.skip_baseline:
            rows.append(run_baseline(real, args.baseline_epochs, args.baseline_filters, args.seed))
        for row in rows:
            print(
                f"| {row['run']} | {row['held_out_accuracy']:.1%} | {row['train_accuracy']:.1%} "
                f"| {chance:.1%} | {row['epochs_run']} | {row['seconds']} s |"
            )
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
