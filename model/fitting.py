"""One phase of training: the input batches, the callbacks and the fit itself.

A run from scratch is one phase; transfer learning (`model.transfer`) is two,
each compiled anew (compiling fixes which weights train) and numbered on from
the previous one's epochs, so the history and the curves continue.
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from model.cli import TrainOptions
from model.data import ImageSet
from model.optim import optimizer_for
from model.plan import Plan

# The shuffle buffer of cached (decoded) images holds at most this many bytes.
SHUFFLE_BUFFER_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class Phase:
    """One training phase: what trains, for how long, at what learning rate.

    Attributes:
        name: "train" for a network trained from scratch; "head" and
            "fine-tune" for the phases of `model.transfer`.
        epochs: at most this many epochs (early stopping may end it sooner).
        learning_rate: the peak of the phase's warm-up and cosine decay.
        fine_tune_from: the first layer of the pretrained base that trains;
            None freezes the whole base (or, from scratch, there is none).
    """

    name: str
    epochs: int
    learning_rate: float
    fine_tune_from: str | None


def batches(
    data: ImageSet, batch_size: int, cache_dir: str | None = None, part: str = ""
) -> tf.data.Dataset:
    """Unshuffled, unaugmented batches (validation, evaluation)."""
    ds = cached(data, cache_dir, part) or data.dataset()
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def cached(data: ImageSet, cache_dir: str | None, part: str) -> tf.data.Dataset | None:
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


def training_batches(
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
    decoded = cached(data, cache_dir, "train")
    if decoded is None:
        ds = data.dataset(shuffle_seed=seed).repeat()
    else:
        # Cached images come back in one order; shuffle them in a buffer of
        # bounded size, so memory still does not grow with the folder.
        image_bytes = 4 * int(np.prod(decoded.element_spec[0].shape))
        buffer = max(64, min(len(data), SHUFFLE_BUFFER_BYTES // image_bytes))
        ds = decoded.shuffle(buffer, seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.batch(plan.batch_size)
    if augment.layers:
        ds = ds.map(
            lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE
        )
    return ds.prefetch(tf.data.AUTOTUNE)


class Throughput(keras.callbacks.Callback):
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


class BestWeights(keras.callbacks.Callback):
    """Early stopping on validation accuracy; keeps and restores the best weights.

    Patience counts epochs since validation accuracy last rose. Among epochs
    of equal accuracy the one with the lowest validation loss is kept: on
    small validation sets accuracy plateaus while the loss still falls, and
    the first epoch to reach a plateau is rarely its best.
    """

    def __init__(self, patience: int, target: float | None, first_epoch: int = 0) -> None:
        super().__init__()
        self.patience = patience
        self.target = target
        self.best: tuple[float, float] = (-1.0, float("-inf"))
        self.best_epoch = 0
        # Epochs are numbered across phases (fit's initial_epoch); patience starts at this one.
        self._last_rise = first_epoch
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


def fit_phase(
    model: keras.Model,
    plan: Plan,
    train_set: ImageSet,
    val_set: ImageSet,
    options: TrainOptions,
    throughput: Throughput,
    first_epoch: int,
    phase: int,
) -> tuple[dict[str, list[float]], BestWeights]:
    """One phase: compiles (which fixes what trains) and fits from `first_epoch` on."""
    model.compile(
        optimizer=optimizer_for(plan),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    best = BestWeights(plan.patience_epochs, options.target_accuracy, first_epoch)
    history = model.fit(
        training_batches(train_set, plan, options.seed + phase, options.cache),
        validation_data=batches(val_set, 256, options.cache, "validation"),
        initial_epoch=first_epoch,
        epochs=first_epoch + plan.epochs,
        steps_per_epoch=plan.steps_per_epoch,
        callbacks=[throughput, best],
        class_weight=plan.class_weights,
        # Progress bars suit a terminal; a log file gets one line an epoch.
        verbose=(1 if sys.stdout.isatty() else 2) if options.verbose == "auto" else options.verbose,
    )
    return {k: [float(v) for v in vs] for k, vs in history.history.items()}, best
