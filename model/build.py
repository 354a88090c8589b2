"""What a run trains: its data, its plan and its network, from the options.

The first step of `model.train`: reads the data, chooses the plan's settings
from it (`model.plan`), and builds the network, from scratch (`model.architecture`)
or on a pretrained base (`model.transfer`), under the strategy when there is one.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import asdict, dataclass, replace
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from model import transfer
from model.architecture import VGGConfig, build_vgg, preset
from model.cli import TrainOptions
from model.data import DatasetError, ImageSet, cifar10, folder, stratified_split, synthetic
from model.fitting import Phase, batches
from model.plan import (
    WARMUP_SHARE,
    Plan,
    batch_size_for,
    cache_for,
    class_weights_for,
    epochs_for,
    mirror_probe,
    momentum_for,
    patience_for,
    steps_per_epoch_for,
)
from model.preprocessing import PreprocessConfig

log = logging.getLogger("model.train")

# The mirror probe looks at this many training images, downscaled to this side.
PROBE_IMAGES, PROBE_SIDE = 2000, 16


@dataclass
class Setup:
    """A run ready to fit.

    Attributes:
        preprocess: how images become the network's input (exported with it).
        train_set, val_set: the training and validation images.
        plan: the run's settings; with phases (transfer learning), the first's.
        phases: each phase with its own plan; one phase from scratch.
        cache: where decoded images are kept: a folder, `model.plan.AUTO`
            (a temporary one for this run) or None.
        config: the network's settings (from scratch: the ones it was built with).
        model: the network, built under the strategy when there is one.
        model_settings: what the report records of the network.
    """

    preprocess: PreprocessConfig
    train_set: ImageSet
    val_set: ImageSet
    plan: Plan
    phases: list[tuple[Phase, Plan]]
    cache: str | None
    config: VGGConfig
    model: keras.Model
    model_settings: dict[str, Any]


def build(
    options: TrainOptions, strategy: tf.distribute.Strategy | None = None, replicas: int = 1
) -> Setup:
    """The data, the plan and the network `options` ask for.

    Raises:
        DatasetError: the data cannot be loaded.
        TransferError: the pretrained weights or the fine-tuning layer are wrong.
    """
    size = (options.input_size, options.input_size) if options.input_size else None
    config: VGGConfig = preset(options.preset, input_size=size)
    if options.weights is not None:
        # Before the data is read: a missing weights file should fail in a second.
        transfer.check_fine_tune_from(options.preset, options.fine_tune_from)
        weights_file = transfer.resolve_weights(options.preset, options.weights)
        preprocess = transfer.preprocess_config(*config.input_size)
    else:
        preprocess = PreprocessConfig(height=config.input_size[0], width=config.input_size[1])
    preprocess = replace(preprocess, overlay_max_side=options.overlay_max_side or None)
    train_set, val_set, stats = load_data(options, preprocess)
    plan = make_plan(options, train_set, replicas)
    cache, plan.reasons["cache"] = cache_for(
        options.cache,
        (stats.median_height, stats.median_width) if stats else None,
        (preprocess.height, preprocess.width),
        len(train_set) + len(val_set),
    )
    num_classes = len(train_set.class_names)
    model_name = options.name.replace("-", "_")
    if options.weights is not None:
        model = transfer.build_transfer(
            options.preset,
            config.input_size,
            num_classes,
            weights_file,
            dropout=0.5 if options.dropout is None else options.dropout,
            name=model_name,
        )
        plan, phases = transfer.plan_phases(options, plan)
        model_settings = {"base": options.preset, "weights": str(weights_file)}
    else:
        config = preset(
            options.preset,
            input_size=config.input_size,
            width=options.width,
            batch_norm=options.batch_norm,
            batch_norm_momentum=plan.batch_norm_momentum,
            dropout=options.dropout,
            num_classes=num_classes,
        )
        with strategy.scope() if strategy else contextlib.nullcontext():
            # Under a strategy every replica normalises with the global batch's
            # statistics: per-replica ones would leave each worker's moving
            # statistics (weights too) different from the chief's.
            model = build_vgg(config, name=model_name, synchronized_batch_norm=bool(strategy))
        phases = [(Phase("train", plan.epochs, plan.learning_rate, None), plan)]
        model_settings = asdict(config)
    log.info(
        "training %s on %d images (%d validation), %d classes; batch %d, up to %d epochs "
        "of %d steps, flips %s",
        options.preset,
        len(train_set),
        len(val_set),
        num_classes,
        plan.batch_size,
        plan.epochs,
        plan.steps_per_epoch,
        "on" if plan.flip else "off",
    )
    return Setup(preprocess, train_set, val_set, plan, phases, cache, config, model, model_settings)


def load_data(
    options: TrainOptions, preprocess: PreprocessConfig
) -> tuple[ImageSet, ImageSet, folder.FolderStats | None]:
    """(train, validation, what a folder's scan learnt) for the chosen source."""
    if options.data == "synthetic":
        full = synthetic.generate(options.per_class, preprocess, options.seed)
        return *stratified_split(full, options.validation_split, options.seed), None
    if options.data_dir is None:
        raise DatasetError(f"--data {options.data} needs --data-dir")
    if options.data == "folder":
        full, stats = folder.load(options.data_dir, preprocess)
        train, val = stratified_split(full, options.validation_split, options.seed)
        train.skipped = full.skipped
        return train, val, stats
    if options.data == "cifar10":
        return *cifar10.load(options.data_dir, preprocess), None
    raise DatasetError(f"unknown data source {options.data!r}: synthetic, folder or cifar10")


def make_plan(options: TrainOptions, train_set: ImageSet, replicas: int = 1) -> Plan:
    """The run's settings; with several replicas the batch size is per replica and an
    epoch is a pass of the global batch (batch size x replicas)."""
    n = len(train_set)
    batch_size, batch_why = batch_size_for(n, options.batch_size)
    if replicas > 1:
        batch_why += f"; per replica: {replicas} replicas, global batch {batch_size * replicas}"
    steps, steps_why = steps_per_epoch_for(n, batch_size * replicas)
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


def _sample_pixels(data: ImageSet, n: int, side: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to `n` images of `data`, downscaled to side x side, with their labels."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.permutation(len(data))[:n])
    sample = data.subset(pick)
    small = batches(sample, 256).map(lambda x, y: tf.image.resize(x, (side, side)))
    return np.concatenate(list(small.as_numpy_iterator())), sample.labels
