"""The custom training loop of `model.distributed` (one worker's part of it).

Keras's `fit` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585),
so this loop does its job: `strategy.run` of one step per batch (gradients
all-reduced across the replicas), validation on every worker with the figures
averaged across them, and `model.fitting`'s early stopping. Everything that
runs collectives is made once per run (the distributed dataset and its
iterator, the `tf.function`s), never per epoch or step.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from model.cli import TrainOptions
from model.data import ImageSet
from model.fitting import BestWeights, Throughput, batches, training_batches
from model.optim import optimizer_for
from model.plan import Plan
from model.step_watchdog import StepWatchdog

log = logging.getLogger("model.train")


@dataclass(frozen=True)
class Role:
    """This process's place in the cluster."""

    index: int  # the worker's number (0 is the chief)
    workers: int
    replicas: int  # across the cluster

    @property
    def chief(self) -> bool:
        return self.index == 0


def fit_loop(
    model: keras.Model,
    plan: Plan,
    train_set: ImageSet,
    val_set: ImageSet,
    options: TrainOptions,
    throughput: Throughput,
    strat: tf.distribute.Strategy,
    role: Role,
    watchdog: StepWatchdog,
) -> tuple[dict[str, list[float]], BestWeights]:
    """Trains `model` (built in `strat`'s scope) for the plan's epochs, or until
    early stopping; every call that runs collectives is bounded by `watchdog`.

    Returns:
        (each metric per epoch, the early stopping that kept the best weights,
        which `model` now holds).
    """
    global_batch = plan.batch_size * role.replicas
    with strat.scope():
        optimizer = optimizer_for(plan)
        optimizer.build(model.trainable_variables)
    weights = plan.class_weights
    class_weight = (
        tf.constant([weights[i] for i in range(len(weights))], tf.float32) if weights else None
    )

    def dataset(context: tf.distribute.InputContext) -> tf.data.Dataset:
        # Shard the file list, not decoded images: each worker decodes only its own.
        shard = train_set.subset(
            np.arange(context.input_pipeline_id, len(train_set), context.num_input_pipelines)
        )
        per_replica = replace(plan, batch_size=context.get_per_replica_batch_size(global_batch))
        return training_batches(shard, per_replica, options.seed + role.index, options.cache)

    batches_in = iter(strat.distribute_datasets_from_function(dataset))

    def step(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            probabilities = model(images, training=True)
            losses = keras.losses.sparse_categorical_crossentropy(labels, probabilities)
            if class_weight is not None:
                losses *= tf.gather(class_weight, tf.cast(labels, tf.int32))
            loss = tf.nn.compute_average_loss(losses, global_batch_size=global_batch)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        predicted = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        correct = tf.reduce_sum(tf.cast(tf.equal(predicted, tf.cast(labels, tf.int32)), "float32"))
        return loss, correct

    @tf.function
    def train_step(iterator: Iterator) -> tuple[tf.Tensor, tf.Tensor]:
        loss, correct = strat.run(step, args=next(iterator))
        total = tf.distribute.ReduceOp.SUM
        return strat.reduce(total, loss, axis=None), strat.reduce(total, correct, axis=None)

    @tf.function
    def agree(values: tf.Tensor) -> tf.Tensor:
        """The mean of `values` over the replicas: one figure on every worker."""
        local = strat.run(lambda: tf.identity(values))
        return strat.reduce(tf.distribute.ReduceOp.MEAN, local, axis=None)

    predict = tf.function(lambda images: model(images, training=False))
    val_batches = batches(val_set, 256, options.cache, "validation")
    best = BestWeights(plan.patience_epochs, options.target_accuracy)
    best.set_model(model)
    model.stop_training = False  # fit() sets it; BestWeights sets it to stop
    history: dict[str, list[float]] = {}
    for epoch in range(plan.epochs):
        started = time.perf_counter()
        loss_sum = correct_sum = 0.0
        for _ in range(plan.steps_per_epoch):
            with watchdog.step("a training step"):
                loss, correct = train_step(batches_in)
                loss_sum += float(loss)  # waits for the step (and its collectives) to end
                correct_sum += float(correct)
        seconds = time.perf_counter() - started
        throughput.seconds += seconds
        throughput.epochs += 1
        val_loss, val_accuracy = _evaluate(predict, val_batches)
        with watchdog.step("averaging the validation figures"):
            figures = agree(tf.constant([val_loss, val_accuracy], tf.float32)).numpy()
        logs = {
            "loss": loss_sum / plan.steps_per_epoch,
            "accuracy": correct_sum / (plan.steps_per_epoch * global_batch),
            "val_loss": float(figures[0]),
            "val_accuracy": float(figures[1]),
        }
        for name, value in logs.items():
            history.setdefault(name, []).append(value)
        log.info(
            "epoch %d/%d: loss %.4f, accuracy %.4f, validation accuracy %.4f; %.0f images/s "
            "(global batch %d, %d replicas); %d threads",
            epoch + 1,
            plan.epochs,
            logs["loss"],
            logs["accuracy"],
            logs["val_accuracy"],
            plan.steps_per_epoch * global_batch / seconds,
            global_batch,
            role.replicas,
            threads_now(),  # flat from epoch to epoch; tests/model/test_distributed.py checks
        )
        best.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    best.on_train_end()
    return history, best


def _evaluate(predict: tf.types.experimental.PolymorphicFunction, data: tf.data.Dataset) -> tuple:
    """(mean loss, accuracy) of the model over `data`, on this worker alone."""
    loss_sum = correct = count = 0.0
    for images, labels in data:
        probabilities = predict(images)
        losses = keras.losses.sparse_categorical_crossentropy(labels, probabilities)
        loss_sum += float(tf.reduce_sum(losses))
        correct += float(np.sum(np.argmax(probabilities, axis=-1) == labels.numpy()))
        count += int(labels.shape[0])
    return loss_sum / max(count, 1), correct / max(count, 1)


def threads_now() -> int:
    """This process's thread count (Linux's /proc; 0 where there is none)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return 0
    found = re.search(r"^Threads:\s+(\d+)", status, re.M)
    return int(found.group(1)) if found else 0
