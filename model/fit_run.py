"""Fits a run's network: each phase in turn, or the loop on several workers.

The second step of `model.train`. From scratch a run is one phase; transfer
learning is two (`model.transfer`), each fitted by `model.fitting.fit_phase`
and recorded for the report; with --distributed the one phase is fitted by
`model.distributed`'s custom loop.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, replace
from typing import Any

import keras
import tensorflow as tf

from model import distributed, transfer
from model.build import Setup
from model.cli import TrainOptions
from model.data import ImageSet
from model.fitting import BestWeights, Phase, Throughput, fit_phase
from model.plan import AUTO, Plan

log = logging.getLogger("model.train")


@dataclass
class Fitted:
    """What fitting gives the report.

    Attributes:
        history: each metric per epoch, across every phase.
        phases: the report's record of each phase (see `phase_report`).
        images_per_s: training images a second (the cluster's), epochs only.
    """

    history: dict[str, list[float]]
    phases: list[dict[str, Any]]
    images_per_s: float


def fit(
    setup: Setup,
    options: TrainOptions,
    strategy: tf.distribute.Strategy | None = None,
    role: distributed.Role | None = None,
) -> Fitted:
    """Fits `setup.model` in place, keeping each phase's best weights.

    Raises:
        WorkerLost: with a strategy, another worker died or stopped answering.
    """
    plan = setup.plan
    throughput = Throughput(plan.steps_per_epoch * plan.batch_size * (role.replicas if role else 1))
    # An automatic cache lives in a temporary folder for this run only.
    scratch = tempfile.TemporaryDirectory(prefix="vggserve-cache-") if setup.cache == AUTO else None
    run_options = replace(options, cache=scratch.name if scratch else setup.cache)
    try:
        if strategy is not None and role is not None:
            history, best = distributed.fit(
                setup.model,
                plan,
                setup.train_set,
                setup.val_set,
                run_options,
                throughput,
                strategy,
                role,
            )
            phases = [phase_report(setup.phases[0][0].name, "every layer", plan, history, best)]
        else:
            history, phases = _fit_phases(
                setup.model, setup.phases, setup.train_set, setup.val_set, run_options, throughput
            )
    finally:
        if scratch is not None:
            scratch.cleanup()
    return Fitted(history, phases, throughput.images_per_s)


def phase_report(
    name: str,
    trains: str,
    plan: Plan,
    fitted: dict[str, list[float]],
    best: BestWeights,
    first_epoch: int = 0,
) -> dict[str, Any]:
    """The report's record of one phase (`first_epoch` counts from 0, the record from 1)."""
    return {
        "name": name,
        "trains": trains,
        "epochs": plan.epochs,
        "epochs_run": len(fitted.get("loss", [])),
        "first_epoch": first_epoch + 1,
        "best_epoch": best.best_epoch,
        "best_validation_accuracy": best.best[0],
        "learning_rate": plan.learning_rate,
        "warmup_steps": plan.warmup_steps,
    }


def _fit_phases(
    model: keras.Model,
    phases: list[tuple[Phase, Plan]],
    train_set: ImageSet,
    val_set: ImageSet,
    options: TrainOptions,
    throughput: Throughput,
) -> tuple[dict[str, list[float]], list[dict[str, Any]]]:
    """Runs each phase in turn; the history runs on across them."""
    history: dict[str, list[float]] = {}
    phase_reports: list[dict[str, Any]] = []
    for index, (phase, phase_plan) in enumerate(phases):
        first_epoch = len(history.get("loss", []))
        trains = transfer.freeze(model, phase.fine_tune_from) if options.weights else "every layer"
        log.info("phase %s: training %s", phase.name, trains)
        fitted, best = fit_phase(
            model, phase_plan, train_set, val_set, options, throughput, first_epoch, index
        )
        for key, values in fitted.items():
            history.setdefault(key, []).extend(values)
        report = phase_report(phase.name, trains, phase_plan, fitted, best, first_epoch)
        phase_reports.append(report)
        if options.target_accuracy is not None and best.best[0] >= options.target_accuracy:
            break
    return history, phase_reports
