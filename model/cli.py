"""The training command's options (`python -m model.train --help`)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

# Not model.architecture: building the options (and --help) must not import TensorFlow.
from model.vgg_config import PRESETS

# Presets that --weights can start from (keras.applications ships their ImageNet weights).
TRANSFER_PRESETS = ("vgg16", "vgg19")


@dataclass
class TrainOptions:
    """Every knob of a training run (the command-line flags).

    None means "choose from the data" (see `model.plan`).
    """

    data: str = "synthetic"
    data_dir: str | None = None
    per_class: int = 1000
    preset: str = "vgg-mini"
    input_size: int | None = None
    width: float | None = None
    batch_norm: bool | None = None
    dropout: float | None = None
    weights: str | None = None
    head_epochs: int = 10
    fine_tune_epochs: int = 10
    # VGG's last block holds its most task-specific filters; the earlier, generic ones stay.
    fine_tune_from: str = "block5_conv1"
    fine_tune_learning_rate: float = 1e-5
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float = 1e-3
    seed: int = 0
    validation_split: float = 0.2
    cache: str | None = None
    patience: int | None = None
    target_accuracy: float | None = None
    min_accuracy: float | None = None
    augment: bool = True
    flip: bool | None = None
    output: str = "models"
    name: str = "vgg-mini"
    version: int | None = None
    verbose: int | str = "auto"
    skip_if_exists: bool = False
    # Longest side of Explain overlays the export draws (0: the image's own size).
    overlay_max_side: int = 1024
    distributed: bool = False
    collective_timeout: float = 300.0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def parse_args(argv: list[str] | None = None) -> TrainOptions:
    p = argparse.ArgumentParser(
        prog="python -m model.train",
        description="Train a VGG-style classifier and export it as a versioned SavedModel. "
        "Settings left unset are chosen from the data; the report records each choice.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d = TrainOptions()
    data = p.add_argument_group("data")
    data.add_argument("--data", choices=["synthetic", "folder", "cifar10"], default=d.data)
    data.add_argument("--data-dir", help="image folder (DIR/<class>/<images>), or CIFAR-10")
    data.add_argument(
        "--per-class", type=_positive_int, default=d.per_class, help="synthetic images per class"
    )
    data.add_argument("--validation-split", type=_fraction, default=d.validation_split)
    data.add_argument(
        "--cache",
        metavar="DIR",
        help="keep decoded, resized images in DIR after the first epoch (faster epochs "
        "when decoding is the bottleneck; reused by later runs on the same files and size)",
    )
    net = p.add_argument_group("network")
    net.add_argument("--preset", choices=sorted(PRESETS), default=d.preset)
    net.add_argument("--input-size", type=_positive_int, help="square input side (preset's)")
    net.add_argument("--width", type=float, help="multiplier on filters and dense widths")
    net.add_argument(
        "--batch-norm",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="batch normalisation after each convolution (preset's default)",
    )
    net.add_argument("--dropout", type=_fraction, help="dropout after dense layers (preset's)")
    tl = p.add_argument_group("transfer learning (--preset vgg16 or vgg19 with --weights)")
    tl.add_argument(
        "--weights",
        help="start from pretrained weights: 'imagenet' (downloaded once by Keras) or a local "
        "weights file of the base without its top (.weights.h5, or Keras's *_notop.h5)",
    )
    tl.add_argument(
        "--head-epochs",
        type=_positive_int,
        default=d.head_epochs,
        help="phase 1: at most this many epochs training the new head, base frozen",
    )
    tl.add_argument(
        "--fine-tune-epochs",
        type=_non_negative_int,
        default=d.fine_tune_epochs,
        help="phase 2: at most this many epochs fine-tuning the top of the base (0: head only)",
    )
    tl.add_argument(
        "--fine-tune-from",
        default=d.fine_tune_from,
        help="phase 2 trains the base's layers from this one on (block5_conv1: the last block)",
    )
    tl.add_argument(
        "--fine-tune-learning-rate",
        type=float,
        default=d.fine_tune_learning_rate,
        help="phase 2's peak learning rate (phase 1 uses --learning-rate)",
    )
    fit = p.add_argument_group("training (unset: chosen from the data)")
    fit.add_argument("--epochs", type=_positive_int, help="at most this many epochs")
    fit.add_argument("--batch-size", type=_positive_int)
    fit.add_argument("--learning-rate", type=float, default=d.learning_rate)
    fit.add_argument("--seed", type=int, default=d.seed)
    fit.add_argument(
        "--patience",
        type=_positive_int,
        help="epochs without better validation accuracy before stopping (at least 600 steps)",
    )
    fit.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=d.augment,
        help="random shifts (and flips, see --flip) while training",
    )
    fit.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random horizontal flips (unset: on when mirror images stay in their class)",
    )
    fit.add_argument(
        "--target-accuracy", type=_fraction, help="stop once validation accuracy reaches this"
    )
    fit.add_argument(
        "--min-accuracy",
        type=_fraction,
        help="export nothing and exit 3 when validation accuracy ends below this",
    )
    fit.add_argument(
        "--verbose",
        type=lambda v: v if v == "auto" else int(v),
        choices=["auto", 0, 1, 2],
        default=d.verbose,
        help="Keras progress: 0 silent, 1 progress bar, 2 one line an epoch",
    )
    dist = p.add_argument_group("several workers or GPUs (model.distributed)")
    dist.add_argument(
        "--distributed",
        action="store_true",
        help="train with MultiWorkerMirroredStrategy on the workers TF_CONFIG names (none: "
        "this machine, every GPU); --batch-size is per replica; worker 0 exports",
    )
    dist.add_argument(
        "--collective-timeout",
        type=float,
        default=d.collective_timeout,
        help="seconds a step waits for the other workers before the run fails",
    )
    out = p.add_argument_group("output")
    out.add_argument("--output", default=d.output, help="models folder")
    out.add_argument("--name", default=d.name, help="model name")
    out.add_argument("--version", type=_positive_int, help="version number (default: next free)")
    out.add_argument(
        "--overlay-max-side",
        type=_non_negative_int,
        default=d.overlay_max_side,
        help="longest side in pixels of the Explain overlay PNG the export draws; larger "
        "images get a scaled-down overlay, aspect kept (0: the image's own size, unbounded)",
    )
    out.add_argument(
        "--skip-if-exists",
        action="store_true",
        help="do nothing when the model already has a version (for deploy jobs)",
    )
    options = TrainOptions(**vars(p.parse_args(argv)))
    if options.weights is not None:
        if options.preset not in TRANSFER_PRESETS:
            p.error(f"--weights needs --preset {' or '.join(TRANSFER_PRESETS)}")
        if options.width is not None or options.batch_norm is not None:
            p.error("--width and --batch-norm change networks trained from scratch, not --weights")
        if options.epochs is not None:
            p.error("with --weights, set --head-epochs and --fine-tune-epochs instead of --epochs")
        if options.distributed:
            p.error("--distributed trains networks from scratch; it does not take --weights yet")
    if options.collective_timeout <= 0:
        p.error("--collective-timeout must be positive")
    return options
