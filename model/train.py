"""Trains a VGG-style classifier and exports it as a versioned SavedModel.

    python -m model.train                          # vgg-mini on the synthetic set
    python -m model.train --data folder --data-dir photos/ --input-size 64
    python -m model.train --data cifar10 --data-dir ~/cifar-10-python.tar.gz

Writes models/<name>/<version>/ with the training report in report/.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from model import device, layout
from model.architecture import PRESETS, VGGConfig, build_vgg, preset
from model.data import Dataset, DatasetError, cifar10, folder, stratified_split, synthetic
from model.export import export_model
from model.preprocessing import PreprocessConfig
from model.report import Evaluation, TrainingReport

log = logging.getLogger("model.train")


@dataclass
class TrainOptions:
    """Every knob of a training run (the command-line flags)."""

    data: str = "synthetic"
    data_dir: str | None = None
    per_class: int = 1000
    preset: str = "vgg-mini"
    input_size: int | None = None
    width: float | None = None
    batch_norm: bool | None = None
    dropout: float | None = None
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3
    seed: int = 0
    validation_split: float = 0.2
    patience: int = 4
    target_accuracy: float | None = None
    augment: bool = True
    output: str = "models"
    name: str = "vgg-mini"
    version: int | None = None
    verbose: int | str = "auto"
    skip_if_exists: bool = False


@dataclass
class TrainResult:
    version_dir: Path
    report: TrainingReport
    model: keras.Model


def load_data(options: TrainOptions, preprocess: PreprocessConfig) -> tuple[Dataset, Dataset]:
    """(train, validation) for the chosen source, at the model's input size."""
    size = (preprocess.height, preprocess.width)
    if options.data == "synthetic":
        full = synthetic.generate(options.per_class, size, options.seed)
        return stratified_split(full, options.validation_split, options.seed)
    if options.data_dir is None:
        raise DatasetError(f"--data {options.data} needs --data-dir")
    if options.data == "folder":
        full = folder.load(options.data_dir, preprocess)
        train, val = stratified_split(full, options.validation_split, options.seed)
        train.skipped = full.skipped
        return train, val
    if options.data == "cifar10":
        return cifar10.load(options.data_dir, preprocess)
    raise DatasetError(f"unknown data source {options.data!r}: synthetic, folder or cifar10")


def _pipeline(data: Dataset, batch_size: int, seed: int, training: bool, augment: bool):
    ds = tf.data.Dataset.from_tensor_slices((data.images, data.labels))
    if training:
        ds = ds.shuffle(len(data), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(lambda x, y: (tf.cast(x, tf.float32), y))
    if training and augment:
        flip = keras.layers.RandomFlip("horizontal", seed=seed)
        shift = keras.layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=seed)
        ds = ds.map(
            lambda x, y: (shift(flip(x, training=True), training=True), y),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return ds.prefetch(tf.data.AUTOTUNE)


class _Throughput(keras.callbacks.Callback):
    """Training images per second, epoch time only (not validation)."""

    def __init__(self, images_per_epoch: int) -> None:
        super().__init__()
        self.images_per_epoch = images_per_epoch
        self.seconds = 0.0
        self.epochs = 0
        self._start = 0.0

    def on_train_batch_begin(self, batch: int, logs: object = None) -> None:
        if batch == 0:
            self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: object = None) -> None:
        self.seconds += time.perf_counter() - self._start
        self.epochs += 1

    @property
    def images_per_s(self) -> float:
        return self.images_per_epoch * self.epochs / self.seconds if self.seconds else 0.0


class _StopAtTarget(keras.callbacks.Callback):
    def __init__(self, target: float) -> None:
        super().__init__()
        self.target = target

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs and logs.get("val_accuracy", 0.0) >= self.target:
            self.model.stop_training = True


def train(options: TrainOptions) -> TrainResult:
    """Trains, evaluates and exports; returns the new version's folder."""
    started = time.perf_counter()
    keras.utils.set_random_seed(options.seed)
    size = (options.input_size, options.input_size) if options.input_size else None
    config: VGGConfig = preset(
        options.preset,
        input_size=size,
        width=options.width,
        batch_norm=options.batch_norm,
        dropout=options.dropout,
    )
    preprocess = PreprocessConfig(height=config.input_size[0], width=config.input_size[1])
    train_set, val_set = load_data(options, preprocess)
    config = preset(
        options.preset,
        input_size=config.input_size,
        width=options.width,
        batch_norm=options.batch_norm,
        dropout=options.dropout,
        num_classes=len(train_set.class_names),
    )
    log.info(
        "training %s on %d images (%d validation), %d classes",
        options.preset,
        len(train_set),
        len(val_set),
        len(train_set.class_names),
    )
    model = build_vgg(config, name=options.name.replace("-", "_"))
    model.compile(
        optimizer=keras.optimizers.Adam(options.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    throughput = _Throughput(len(train_set))
    callbacks: list[keras.callbacks.Callback] = [
        throughput,
        keras.callbacks.EarlyStopping(
            monitor="val_accuracy", patience=options.patience, restore_best_weights=True
        ),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2),
    ]
    if options.target_accuracy is not None:
        callbacks.append(_StopAtTarget(options.target_accuracy))
    history = model.fit(
        _pipeline(train_set, options.batch_size, options.seed, True, options.augment),
        validation_data=_pipeline(val_set, options.batch_size, options.seed, False, False),
        epochs=options.epochs,
        callbacks=callbacks,
        verbose=options.verbose,
    )
    probabilities = model.predict(_pipeline(val_set, 256, options.seed, False, False), verbose=0)
    evaluation = Evaluation.of(val_set.labels, probabilities.argmax(axis=1), val_set.class_names)
    val_acc = history.history.get("val_accuracy", [evaluation.accuracy])
    report = TrainingReport(
        evaluation=evaluation,
        history={k: [float(v) for v in vs] for k, vs in history.history.items()},
        class_names=val_set.class_names,
        settings={**asdict(options), "model": asdict(config)},
        wall_time_s=0.0,
        train_images_per_s=throughput.images_per_s,
        device=device.describe(),
        epochs_run=len(history.history.get("loss", [])),
        best_epoch=int(np.argmax(val_acc)) + 1,
        extra={
            "skipped_files": train_set.skipped,
            "train_images": len(train_set),
            "validation_images": len(val_set),
        },
    )

    def write_report(staging: Path) -> None:
        report.wall_time_s = time.perf_counter() - started
        report.write(staging / layout.REPORT)

    version_dir = export_model(
        model,
        preprocess,
        val_set.class_names,
        Path(options.output) / options.name,
        version=options.version,
        extra=write_report,
    )
    return TrainResult(version_dir, report, model)


def parse_args(argv: list[str] | None = None) -> TrainOptions:
    d = TrainOptions()
    p = argparse.ArgumentParser(
        prog="python -m model.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data",
        choices=["synthetic", "folder", "cifar10"],
        default=d.data,
        help="data source (default: %(default)s)",
    )
    p.add_argument("--data-dir", help="image folder, or CIFAR-10 archive/folder")
    p.add_argument(
        "--per-class",
        type=int,
        default=d.per_class,
        help="synthetic images per class (default: %(default)s)",
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=d.preset,
        help="architecture (default: %(default)s)",
    )
    p.add_argument("--input-size", type=int, help="square input side in pixels (preset's default)")
    p.add_argument("--width", type=float, help="multiplier on filters and dense widths")
    p.add_argument(
        "--batch-norm",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="batch normalisation after each convolution (preset's default)",
    )
    p.add_argument("--dropout", type=float, help="dropout after dense layers (preset's default)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="at most (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--learning-rate", type=float, default=d.learning_rate)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--validation-split", type=float, default=d.validation_split)
    p.add_argument(
        "--patience",
        type=int,
        default=d.patience,
        help="epochs without better validation accuracy before stopping",
    )
    p.add_argument(
        "--target-accuracy",
        type=float,
        help="stop once validation accuracy reaches this (e.g. 0.97)",
    )
    p.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=d.augment,
        help="random flips and shifts while training (default: on)",
    )
    p.add_argument("--output", default=d.output, help="models folder (default: %(default)s)")
    p.add_argument("--name", default=d.name, help="model name (default: %(default)s)")
    p.add_argument("--version", type=int, help="version number (default: next free)")
    p.add_argument(
        "--skip-if-exists",
        action="store_true",
        help="do nothing when the model already has a version (for deploy jobs)",
    )
    args = vars(p.parse_args(argv))
    skip = args.pop("skip_if_exists")
    return TrainOptions(**args, skip_if_exists=skip)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    options = parse_args(argv)
    existing = layout.list_versions(Path(options.output) / options.name)
    if options.skip_if_exists and existing:
        print(
            f"{options.output}/{options.name} has version(s) "
            f"{', '.join(map(str, existing))}: nothing to do"
        )
        return 0
    try:
        result = train(options)
    except (DatasetError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    r = result.report
    print(
        f"exported {result.version_dir}: validation accuracy {r.evaluation.accuracy:.2%} "
        f"after {r.epochs_run} epochs in {r.wall_time_s:.0f} s "
        f"({r.train_images_per_s:.0f} training images/s, {r.device})"
    )
    print(f"report: {result.version_dir / layout.REPORT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
