"""Trains a VGG-style classifier and exports it as a versioned SavedModel.

    python -m model.train                          # vgg-mini on the synthetic set
    python -m model.train --data folder --data-dir photos/
    python -m model.train --data cifar10 --data-dir ~/cifar-10-python.tar.gz
    python -m model.train --preset vgg16 --weights imagenet --data folder --data-dir photos/

Writes models/<name>/<version>/ with the training report in report/. Settings
that are not given (batch size, epochs, patience, batch-norm momentum, flips,
class weights) are chosen from the data by `model.plan`; the report records
each with its reason. With --weights, training runs in the phases of
`model.transfer` (new head on a frozen base, then fine-tuning), each a fit
of its own whose curves continue the previous one's. With --distributed,
training runs on the workers TF_CONFIG names (`model.distributed`); the chief
(worker 0) evaluates and exports, the others only train.

A run is four steps, each a module: `model.build` (data, plan, network),
`model.fit_run` (the phases, or the loop on several workers), `model.assess`
(evaluation and report) and `model.export` (the versioned SavedModel).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import keras

from model import distributed, layout, transfer
from model.architecture import build_vgg
from model.assess import assess
from model.build import Setup, build
from model.cli import TrainOptions, parse_args
from model.data import DatasetError
from model.export import export_model
from model.fit_run import Fitted, fit
from model.report import TrainingReport

__all__ = ["BelowMinAccuracy", "TrainOptions", "TrainResult", "main", "parse_args", "train"]

log = logging.getLogger("model.train")


class BelowMinAccuracy(Exception):
    """The run's validation accuracy is under --min-accuracy; nothing was exported."""


@dataclass
class TrainResult:
    version_dir: Path | None  # None on a worker that is not the chief (it exports nothing)
    report: TrainingReport | None
    model: keras.Model
    weights_digest: str = ""  # --distributed: equal on every worker of the run


def train(options: TrainOptions) -> TrainResult:
    """Trains, evaluates and exports; returns the new version's folder.

    Raises:
        DatasetError: the data cannot be loaded.
        BelowMinAccuracy: validation accuracy is under `options.min_accuracy`.
        WorkerLost: with --distributed, another worker died or stopped answering.
    """
    started = time.perf_counter()
    # The strategy comes before any other TensorFlow op (it configures the runtime).
    strategy = distributed.strategy() if options.distributed else None
    role = distributed.role_of(strategy) if strategy else None
    keras.utils.set_random_seed(options.seed)
    setup = build(options, strategy, role.replicas if role else 1)
    fitted = fit(setup, options, strategy, role)
    if role is None:
        return _report_and_export(setup.model, setup, fitted, options, started)
    # Evaluation and export use a plain copy: no collectives, so only the chief
    # does them (the others would write the same weights), and Keras's
    # predict and export know nothing of the strategy.
    model = build_vgg(setup.config, name=options.name.replace("-", "_"))
    model.set_weights(setup.model.get_weights())
    digest = distributed.weights_digest(model)
    log.info("worker %d of %d: weights %s", role.index, role.workers, digest)
    try:
        if not role.chief:
            return TrainResult(None, None, model, digest)
        return _report_and_export(model, setup, fitted, options, started, role, digest)
    finally:
        distributed.leave_together(role, options.collective_timeout)


def _report_and_export(
    model: keras.Model,
    setup: Setup,
    fitted: Fitted,
    options: TrainOptions,
    started: float,
    role: distributed.Role | None = None,
    digest: str = "",
) -> TrainResult:
    """Evaluates `model`, then exports it with its report unless it is below --min-accuracy."""
    report = assess(model, setup, fitted, options, role)
    for warning in report.warnings:
        log.warning("%s", warning)
    if options.min_accuracy is not None and report.evaluation.accuracy < options.min_accuracy:
        raise BelowMinAccuracy(
            f"validation accuracy {report.evaluation.accuracy:.2%} is below --min-accuracy "
            f"{options.min_accuracy:.2%}; nothing was exported"
        )

    def write_report(staging: Path) -> None:
        report.wall_time_s = time.perf_counter() - started
        report.write(staging / layout.REPORT)

    version_dir = export_model(
        model,
        setup.preprocess,
        setup.val_set.class_names,
        Path(options.output) / options.name,
        version=options.version,
        extra=write_report,
    )
    return TrainResult(version_dir, report, model, digest)


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
    except (
        DatasetError,
        FileExistsError,
        transfer.TransferError,
        distributed.ClusterConfigError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BelowMinAccuracy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except distributed.WorkerLost as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 4
    if result.weights_digest:
        print(f"weights {result.weights_digest}")
    r = result.report
    if r is None or result.version_dir is None:
        print("trained; the chief (worker 0) evaluates and exports")
        return 0
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
