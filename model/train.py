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
"""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from model import device, distributed, layout, transfer
from model.architecture import VGGConfig, build_vgg, preset
from model.cli import TrainOptions, parse_args
from model.data import DatasetError, ImageSet, cifar10, folder, stratified_split, synthetic
from model.export import export_model
from model.fitting import BestWeights, Phase, Throughput, batches, fit_phase
from model.plan import (
    AUTO,
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
from model.report import Evaluation, TrainingReport, diagnose

log = logging.getLogger("model.train")

# Training accuracy for the report is measured on at most this many images.
TRAIN_EVAL_IMAGES = 5000
# The mirror probe looks at this many training images, downscaled to this side.
PROBE_IMAGES, PROBE_SIDE = 2000, 16


class BelowMinAccuracy(Exception):
    """The run's validation accuracy is under --min-accuracy; nothing was exported."""


@dataclass
class TrainResult:
    version_dir: Path | None  # None on a worker that is not the chief (it exports nothing)
    report: TrainingReport | None
    model: keras.Model
    weights_digest: str = ""  # --distributed: equal on every worker of the run


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


def _sample_pixels(data: ImageSet, n: int, side: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to `n` images of `data`, downscaled to side x side, with their labels."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.permutation(len(data))[:n])
    sample = data.subset(pick)
    small = batches(sample, 256).map(lambda x, y: tf.image.resize(x, (side, side)))
    return np.concatenate(list(small.as_numpy_iterator())), sample.labels


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


def _predict(model: keras.Model, data: ImageSet) -> np.ndarray:
    return np.asarray(model.predict(batches(data, 256), verbose=0)).argmax(axis=1)


def _still_improving(phase: dict[str, Any]) -> bool:
    """The phase used every epoch it had and its best came in the last tenth of them."""
    last_tenth = phase["first_epoch"] + int(0.9 * phase["epochs"]) - 1
    return bool(phase["epochs_run"] == phase["epochs"] and phase["best_epoch"] >= last_tenth)


def _phase_report(
    name: str,
    trains: str,
    plan: Plan,
    fitted: dict[str, list[float]],
    best: BestWeights,
    first_epoch: int = 0,
) -> dict[str, Any]:
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
        report = _phase_report(phase.name, trains, phase_plan, fitted, best, first_epoch)
        phase_reports.append(report)
        if options.target_accuracy is not None and best.best[0] >= options.target_accuracy:
            break
    return history, phase_reports


def train(options: TrainOptions) -> TrainResult:
    """Trains, evaluates and exports; returns the new version's folder.

    Raises:
        DatasetError: the data cannot be loaded.
        BelowMinAccuracy: validation accuracy is under `options.min_accuracy`.
    """
    started = time.perf_counter()
    # The strategy comes before any other TensorFlow op (it configures the runtime).
    strategy = distributed.strategy() if options.distributed else None
    role = distributed.role_of(strategy) if strategy else None
    keras.utils.set_random_seed(options.seed)
    size = (options.input_size, options.input_size) if options.input_size else None
    config: VGGConfig = preset(options.preset, input_size=size)
    if options.weights is not None:
        # Before the data is read: a missing weights file should fail in a second.
        transfer.check_fine_tune_from(options.preset, options.fine_tune_from)
        weights_file = transfer.resolve_weights(options.preset, options.weights)
        preprocess = transfer.preprocess_config(*config.input_size)
    else:
        preprocess = PreprocessConfig(height=config.input_size[0], width=config.input_size[1])
    train_set, val_set, stats = load_data(options, preprocess)
    plan = make_plan(options, train_set, role.replicas if role else 1)
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
    throughput = Throughput(plan.steps_per_epoch * plan.batch_size * (role.replicas if role else 1))
    # An automatic cache lives in a temporary folder for this run only.
    scratch = tempfile.TemporaryDirectory(prefix="vggserve-cache-") if cache == AUTO else None
    run_options = replace(options, cache=scratch.name if scratch else cache)
    try:
        if strategy is not None and role is not None:
            history, best = distributed.fit(
                model, plan, train_set, val_set, run_options, throughput, strategy, role
            )
            phase_reports = [_phase_report(phases[0][0].name, "every layer", plan, history, best)]
        else:
            history, phase_reports = _fit_phases(
                model, phases, train_set, val_set, run_options, throughput
            )
    finally:
        if scratch is not None:
            scratch.cleanup()
    digest = ""
    if strategy is not None and role is not None:
        # Evaluation and export use a plain copy: no collectives, so only the chief
        # does them (the others would write the same weights), and Keras's
        # predict and export know nothing of the strategy.
        trained = model
        model = build_vgg(config, name=model_name)
        model.set_weights(trained.get_weights())
        digest = distributed.weights_digest(model)
        log.info("worker %d of %d: weights %s", role.index, role.workers, digest)
        if not role.chief:
            distributed.leave_together(role, options.collective_timeout)
            return TrainResult(None, None, model, digest)
    try:
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
        for phase in phase_reports:
            if _still_improving(phase):
                warnings.append(
                    f"phase {phase['name']} was still improving when its {phase['epochs']} epochs "
                    "ran out; more --epochs may help"
                )
        report = TrainingReport(
            evaluation=evaluation,
            train_accuracy=train_accuracy,
            chance=chance,
            warnings=warnings,
            plan={**plan.to_dict(), "phases": phase_reports},
            history=history,
            class_names=val_set.class_names,
            settings={**asdict(options), "model": model_settings},
            wall_time_s=0.0,
            train_images_per_s=throughput.images_per_s,
            device=device.describe(),
            epochs_run=len(history.get("loss", [])),
            best_epoch=int(phase_reports[-1]["best_epoch"]),
            extra={
                **({"workers": role.workers, "replicas": role.replicas} if role else {}),
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
        return TrainResult(version_dir, report, model, digest)
    finally:
        if role is not None:
            distributed.leave_together(role, options.collective_timeout)


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
