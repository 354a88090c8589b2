"""Trains a VGG-style classifier and exports it as a versioned SavedModel.

    python -m model.train                          # vgg-mini on the synthetic set
    python -m model.train --data folder --data-dir photos/
    python -m model.train --data cifar10 --data-dir ~/cifar-10-python.tar.gz

Writes models/<name>/<version>/ with the training report in report/. Settings
that are not given (batch size, epochs, patience, batch-norm momentum, flips,
class weights) are chosen from the data by `model.plan`; the report records
each with its reason.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from model import device, layout
from model.architecture import VGGConfig, build_vgg, preset
from model.cli import TrainOptions, parse_args
from model.data import DatasetError, ImageSet, cifar10, folder, stratified_split, synthetic
from model.export import export_model
from model.plan import (
    WARMUP_SHARE,
    Plan,
    batch_size_for,
    class_weights_for,
    epochs_for,
    mirror_probe,
    momentum_for,
    patience_for,
    steps_per_epoch_for,
)
from model.preprocessing import PreprocessConfig
from model.report import Evaluation, TrainingReport, diagnose

log = logging.getLogger("model.train")

# Training accuracy for the report is measured on at most this many images.
TRAIN_EVAL_IMAGES = 5000
# The shuffle buffer of cached (decoded) images holds at most this many bytes.
SHUFFLE_BUFFER_BYTES = 256 * 1024 * 1024
# The mirror probe looks at this many training images, downscaled to this side.
PROBE_IMAGES, PROBE_SIDE = 2000, 16


class BelowMinAccuracy(Exception):
    """The run's validation accuracy is under --min-accuracy; nothing was exported."""


@dataclass
class TrainResult:
    version_dir: Path
    report: TrainingReport
    model: keras.Model


def load_data(options: TrainOptions, preprocess: PreprocessConfig) -> tuple[ImageSet, ImageSet]:
    """(train, validation) for the chosen source, read at the model's input size."""
    if options.data == "synthetic":
        full = synthetic.generate(options.per_class, preprocess, options.seed)
        return stratified_split(full, options.validation_split, options.seed)
    if options.data_dir is None:
        raise DatasetError(f"--data {options.data} needs --data-dir")
    if options.data == "folder":
        full, _ = folder.load(options.data_dir, preprocess)
        train, val = stratified_split(full, options.validation_split, options.seed)
        train.skipped = full.skipped
        return train, val
    if options.data == "cifar10":
        return cifar10.load(options.data_dir, preprocess)
    raise DatasetError(f"unknown data source {options.data!r}: synthetic, folder or cifar10")


def _batches(
    data: ImageSet, batch_size: int, cache_dir: str | None = None, part: str = ""
) -> tf.data.Dataset:
    """Unshuffled, unaugmented batches (validation, evaluation)."""
    ds = _cached(data, cache_dir, part) or data.dataset()
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _cached(data: ImageSet, cache_dir: str | None, part: str) -> tf.data.Dataset | None:
    """`data` decoded once into an on-disk cache under `cache_dir`, or None without one.

    The cache is keyed by the files and the decoder's output shape, so a
    different folder or input size never reads stale images.
    """
    if not cache_dir:
        return None
    spec = data.dataset().element_spec[0]
    key = hashlib.sha256(
        "\n".join([str(spec.shape), *map(str, data.elements), *map(str, data.labels)]).encode()
    ).hexdigest()[:16]
    folder = Path(cache_dir) / f"{part}-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    return data.dataset().cache(str(folder / "images"))


def _training_batches(
    data: ImageSet, plan: Plan, seed: int, cache_dir: str | None = None
) -> tf.data.Dataset:
    augment = keras.Sequential(name="augment")
    if plan.flip:
        augment.add(keras.layers.RandomFlip("horizontal", seed=seed))
    if plan.shift:
        augment.add(
            keras.layers.RandomTranslation(plan.shift, plan.shift, fill_mode="reflect", seed=seed)
        )
    # Endless and reshuffled every pass; fit() cuts it into epochs of
    # plan.steps_per_epoch steps, so no batch is a short remainder.
    cached = _cached(data, cache_dir, "train")
    if cached is None:
        ds = data.dataset(shuffle_seed=seed).repeat()
    else:
        # Cached images come back in one order; shuffle them in a buffer of
        # bounded size, so memory still does not grow with the folder.
        image_bytes = 4 * int(np.prod(cached.element_spec[0].shape))
        buffer = max(64, min(len(data), SHUFFLE_BUFFER_BYTES // image_bytes))
        ds = cached.shuffle(buffer, seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.batch(plan.batch_size)
    if augment.layers:
        ds = ds.map(
            lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE
        )
    return ds.prefetch(tf.data.AUTOTUNE)


def _sample_pixels(data: ImageSet, n: int, side: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to `n` images of `data`, downscaled to side x side, with their labels."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.permutation(len(data))[:n])
    sample = data.subset(pick)
    small = _batches(sample, 256).map(lambda x, y: tf.image.resize(x, (side, side)))
    return np.concatenate(list(small.as_numpy_iterator())), sample.labels


def make_plan(options: TrainOptions, train_set: ImageSet) -> Plan:
    n = len(train_set)
    batch_size, batch_why = batch_size_for(n, options.batch_size)
    steps, steps_why = steps_per_epoch_for(n, batch_size)
    epochs, epochs_why = epochs_for(steps, options.epochs)
    patience, patience_why = patience_for(steps, options.patience)
    momentum, momentum_why = momentum_for(steps)
    weights, weights_why = class_weights_for(train_set.counts())
    if options.flip is None and options.augment:
        pixels, labels = _sample_pixels(train_set, PROBE_IMAGES, PROBE_SIDE, options.seed)
        flip, flip_why = mirror_probe(pixels, labels, len(train_set.class_names), options.seed)
    else:
        flip = bool(options.flip) and options.augment
        flip_why = "set by --flip/--no-flip" if options.flip is not None else "--no-augment"
    warmup = round(epochs * steps * WARMUP_SHARE)
    return Plan(
        batch_size=batch_size,
        epochs=epochs,
        steps_per_epoch=steps,
        learning_rate=options.learning_rate,
        warmup_steps=warmup,
        patience_epochs=patience,
        batch_norm_momentum=momentum,
        flip=flip,
        shift=0.1 if options.augment else 0.0,
        class_weights=weights,
        reasons={
            "batch_size": batch_why,
            "steps_per_epoch": steps_why,
            "epochs": epochs_why,
            "patience_epochs": patience_why,
            "batch_norm_momentum": momentum_why,
            "flip": flip_why,
            "shift": "random shifts of up to 10% of each side (off with --no-augment)",
            "class_weights": weights_why,
            "learning_rate": (
                f"Adam; linear warm-up over {warmup} steps, then cosine decay to 1% "
                "over the planned steps"
            ),
        },
    )


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


class _BestWeights(keras.callbacks.Callback):
    """Early stopping on validation accuracy; keeps and restores the best weights.

    Patience counts epochs since validation accuracy last rose. Among epochs
    of equal accuracy the one with the lowest validation loss is kept: on
    small validation sets accuracy plateaus while the loss still falls, and
    the first epoch to reach a plateau is rarely its best.
    """

    def __init__(self, patience: int, target: float | None) -> None:
        super().__init__()
        self.patience = patience
        self.target = target
        self.best: tuple[float, float] = (-1.0, float("-inf"))
        self.best_epoch = 0
        self._last_rise = 0
        self._weights: list[np.ndarray] | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        score = (float(logs.get("val_accuracy", 0.0)), -float(logs.get("val_loss", np.inf)))
        if score[0] > self.best[0]:
            self._last_rise = epoch + 1
        if score > self.best:
            self.best, self.best_epoch = score, epoch + 1
            self._weights = self.model.get_weights()
        if epoch + 1 - self._last_rise >= self.patience:
            self.model.stop_training = True
        if self.target is not None and score[0] >= self.target:
            self.model.stop_training = True

    def on_train_end(self, logs: object = None) -> None:
        if self._weights is not None:
            self.model.set_weights(self._weights)


def _predict(model: keras.Model, data: ImageSet) -> np.ndarray:
    return np.asarray(model.predict(_batches(data, 256), verbose=0)).argmax(axis=1)


def train(options: TrainOptions) -> TrainResult:
    """Trains, evaluates and exports; returns the new version's folder.

    Raises:
        DatasetError: the data cannot be loaded.
        BelowMinAccuracy: validation accuracy is under `options.min_accuracy`.
    """
    started = time.perf_counter()
    keras.utils.set_random_seed(options.seed)
    size = (options.input_size, options.input_size) if options.input_size else None
    config: VGGConfig = preset(options.preset, input_size=size)
    preprocess = PreprocessConfig(height=config.input_size[0], width=config.input_size[1])
    train_set, val_set = load_data(options, preprocess)
    plan = make_plan(options, train_set)
    config = preset(
        options.preset,
        input_size=config.input_size,
        width=options.width,
        batch_norm=options.batch_norm,
        batch_norm_momentum=plan.batch_norm_momentum,
        dropout=options.dropout,
        num_classes=len(train_set.class_names),
    )
    log.info(
        "training %s on %d images (%d validation), %d classes; batch %d, up to %d epochs "
        "of %d steps, flips %s",
        options.preset,
        len(train_set),
        len(val_set),
        len(train_set.class_names),
        plan.batch_size,
        plan.epochs,
        plan.steps_per_epoch,
        "on" if plan.flip else "off",
    )
    model = build_vgg(config, name=options.name.replace("-", "_"))
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if plan.warmup_steps else plan.learning_rate,
        decay_steps=max(1, plan.total_steps - plan.warmup_steps),
        alpha=0.01,
        warmup_target=plan.learning_rate if plan.warmup_steps else None,
        warmup_steps=plan.warmup_steps,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    throughput = _Throughput(plan.steps_per_epoch * plan.batch_size)
    best = _BestWeights(plan.patience_epochs, options.target_accuracy)
    history = model.fit(
        _training_batches(train_set, plan, options.seed, options.cache),
        validation_data=_batches(val_set, 256, options.cache, "validation"),
        epochs=plan.epochs,
        steps_per_epoch=plan.steps_per_epoch,
        callbacks=[throughput, best],
        class_weight=plan.class_weights,
        verbose=options.verbose,
    )
    evaluation = Evaluation.of(val_set.labels, _predict(model, val_set), val_set.class_names)
    train_sample = train_set.subset(
        np.random.default_rng(options.seed).permutation(len(train_set))[:TRAIN_EVAL_IMAGES]
    )
    train_accuracy = float(np.mean(_predict(model, train_sample) == train_sample.labels))
    counts = val_set.counts()
    chance = float(counts.max() / counts.sum())
    warnings = diagnose(
        evaluation.accuracy, train_accuracy, chance, train_set.counts(), len(val_set)
    )
    report = TrainingReport(
        evaluation=evaluation,
        train_accuracy=train_accuracy,
        chance=chance,
        warnings=warnings,
        plan=plan.to_dict(),
        history={k: [float(v) for v in vs] for k, vs in history.history.items()},
        class_names=val_set.class_names,
        settings={**asdict(options), "model": asdict(config)},
        wall_time_s=0.0,
        train_images_per_s=throughput.images_per_s,
        device=device.describe(),
        epochs_run=len(history.history.get("loss", [])),
        best_epoch=best.best_epoch,
        extra={
            "skipped_files": train_set.skipped,
            "train_images": len(train_set),
            "validation_images": len(val_set),
        },
    )
    for warning in warnings:
        log.warning("%s", warning)
    if options.min_accuracy is not None and evaluation.accuracy < options.min_accuracy:
        raise BelowMinAccuracy(
            f"validation accuracy {evaluation.accuracy:.2%} is below --min-accuracy "
            f"{options.min_accuracy:.2%}; nothing was exported"
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
    except BelowMinAccuracy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    r = result.report
    print(
        f"exported {result.version_dir}: validation accuracy {r.evaluation.accuracy:.2%} "
        f"(training {r.train_accuracy:.2%}, chance {r.chance:.2%}) after {r.epochs_run} "
        f"epochs in {r.wall_time_s:.0f} s ({r.train_images_per_s:.0f} training images/s, "
        f"{r.device})"
    )
    for warning in r.warnings:
        print(f"warning: {warning}")
    print(f"report: {result.version_dir / layout.REPORT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
