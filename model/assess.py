"""Evaluates a trained network and writes down what the run did: the report.

The third step of `model.train` (on the chief alone with --distributed):
validation accuracy per class, training accuracy on a sample, the chance
level, and every warning a person should read before trusting the model.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import keras
import numpy as np

from model import device
from model.build import Setup
from model.cli import TrainOptions
from model.data import ImageSet
from model.distributed import Role
from model.fit_run import Fitted
from model.fitting import batches
from model.report import Evaluation, TrainingReport, diagnose

# Training accuracy for the report is measured on at most this many images.
TRAIN_EVAL_IMAGES = 5000


def assess(
    model: keras.Model,
    setup: Setup,
    fitted: Fitted,
    options: TrainOptions,
    role: Role | None = None,
) -> TrainingReport:
    """The run's report; its `wall_time_s` is set when it is written.

    Args:
        model: the trained network (with --distributed, a plain copy of it).
        setup: the run's data, plan and network settings.
        fitted: the history and phases fitting recorded.
        options: the run's options (recorded as its settings).
        role: this worker's place in the cluster, with --distributed.
    """
    train_set, val_set = setup.train_set, setup.val_set
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
    if train_set.skipped:
        warnings.append(
            f"{len(train_set.skipped)} file(s) did not decode and were left out (the log names "
            f"each with its reason; report/metrics.json lists them): {train_set.skipped[0]}"
            + (", ..." if len(train_set.skipped) > 1 else "")
        )
    for phase in fitted.phases:
        if _still_improving(phase):
            warnings.append(
                f"phase {phase['name']} was still improving when its {phase['epochs']} epochs "
                "ran out; more --epochs may help"
            )
    return TrainingReport(
        evaluation=evaluation,
        train_accuracy=train_accuracy,
        chance=chance,
        warnings=warnings,
        plan={**setup.plan.to_dict(), "phases": fitted.phases},
        history=fitted.history,
        class_names=val_set.class_names,
        settings={**asdict(options), "model": setup.model_settings},
        wall_time_s=0.0,
        train_images_per_s=fitted.images_per_s,
        device=device.describe(),
        epochs_run=len(fitted.history.get("loss", [])),
        best_epoch=int(fitted.phases[-1]["best_epoch"]),
        extra={
            **({"workers": role.workers, "replicas": role.replicas} if role else {}),
            "skipped_files": train_set.skipped,
            "train_images": len(train_set),
            "validation_images": len(val_set),
        },
    )


def _predict(model: keras.Model, data: ImageSet) -> np.ndarray:
    return np.asarray(model.predict(batches(data, 256), verbose=0)).argmax(axis=1)


def _still_improving(phase: dict[str, Any]) -> bool:
    """The phase used every epoch it had and its best came in the last tenth of them."""
    last_tenth = phase["first_epoch"] + int(0.9 * phase["epochs"]) - 1
    return bool(phase["epochs_run"] == phase["epochs"] and phase["best_epoch"] >= last_tenth)
