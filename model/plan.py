"""The training plan: every setting a run uses, chosen from the data when not given.

Small real folders fail with defaults that suit large sets: a few steps an
epoch leave batch normalisation's moving statistics at their initial values
(momentum 0.99 keeps 0.99^n of them after n steps: 83% after 18), and
patience counted in epochs stops such a run after a few dozen steps. So the
plan counts in optimisation steps: a minimum number of steps, patience in
steps, a learning-rate warm-up and cosine decay over the run, and a batch-norm
momentum that averages over about an epoch's worth of batches. Augmentation
is chosen to suit the data (horizontal flips only where mirror images belong
to the same class) and class weights balance skewed folders. Each choice is
recorded with its reason in the report.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

# A run is planned for at least this many optimisation steps (unless --epochs
# says otherwise): the learning-rate schedule spans them; early stopping may
# end the run sooner when validation accuracy stops rising.
MIN_STEPS = 2000
# ... and never stops earlier than this many steps without improvement.
PATIENCE_STEPS = 600
MAX_AUTO_EPOCHS = 500
# An "epoch" (one validation round) is at least this many steps: a folder of a
# few hundred images would otherwise spend more time validating than learning.
MIN_EPOCH_STEPS = 50
WARMUP_SHARE = 0.05
# Folders whose largest class has this many times the images of the smallest get class weights.
IMBALANCE_RATIO = 1.5
# Files with this many times the input's pixels are decoded once into a
# temporary cache (when the decoded set fits in AUTO_CACHE_BYTES).
AUTO_CACHE_RATIO = 4.0
AUTO_CACHE_BYTES = 2 * 1024**3
AUTO = "auto"


@dataclass
class Plan:
    """Settings of one training run, with the reason for each automatic choice."""

    batch_size: int
    epochs: int
    steps_per_epoch: int
    learning_rate: float
    warmup_steps: int
    patience_epochs: int
    batch_norm_momentum: float
    flip: bool
    shift: float
    class_weights: dict[int, float] | None
    reasons: dict[str, str] = field(default_factory=dict)

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.class_weights is not None:
            data["class_weights"] = {str(k): round(v, 4) for k, v in self.class_weights.items()}
        data["total_steps"] = self.total_steps
        return data


def batch_size_for(n_train: int, requested: int | None) -> tuple[int, str]:
    if requested:
        return requested, "set by --batch-size"
    if n_train < 4000:
        return 32, f"{n_train} training images (< 4000): smaller batches give more steps an epoch"
    return 64, f"{n_train} training images"


def steps_per_epoch_for(n_train: int, batch_size: int) -> tuple[int, str]:
    one_pass = max(1, n_train // batch_size)
    if one_pass >= MIN_EPOCH_STEPS:
        return one_pass, "one pass over the training images"
    return MIN_EPOCH_STEPS, (
        f"one pass is only {one_pass} steps, so an epoch (one validation round) is "
        f"{MIN_EPOCH_STEPS} steps, about {MIN_EPOCH_STEPS / one_pass:.1f} passes"
    )


def epochs_for(steps_per_epoch: int, requested: int | None) -> tuple[int, str]:
    if requested:
        return requested, "set by --epochs"
    epochs = min(MAX_AUTO_EPOCHS, max(30, math.ceil(MIN_STEPS / steps_per_epoch)))
    return epochs, (
        f"at most: planned for at least {MIN_STEPS} optimisation steps ({steps_per_epoch} an "
        "epoch), which the learning-rate schedule spans; early stopping may end it sooner"
    )


def patience_for(steps_per_epoch: int, requested: int | None) -> tuple[int, str]:
    floor = math.ceil(PATIENCE_STEPS / steps_per_epoch)
    patience = max(requested or 5, floor)
    return patience, (
        f"epochs without a better validation score before stopping: at least "
        f"{PATIENCE_STEPS} steps, so short epochs do not stop a run that is still learning"
    )


def momentum_for(steps_per_epoch: int) -> tuple[float, str]:
    window = min(100, max(10, steps_per_epoch))
    momentum = round(1.0 - 1.0 / window, 4)
    return momentum, (
        f"batch-norm moving statistics average over about {window} steps "
        f"({steps_per_epoch} an epoch); Keras's 0.99 would need hundreds of steps to forget "
        "its initial values"
    )


def class_weights_for(counts: np.ndarray) -> tuple[dict[int, float] | None, str]:
    present = counts[counts > 0]
    ratio = float(present.max() / present.min())
    if ratio < IMBALANCE_RATIO:
        return None, f"classes are balanced (largest/smallest = {ratio:.2f})"
    total, k = float(present.sum()), len(present)
    weights = {i: total / (k * float(c)) for i, c in enumerate(counts) if c > 0}
    return weights, (
        f"largest class has {ratio:.1f}x the images of the smallest: each class weighs "
        "total / (classes x its count), so every class counts equally"
    )


def cache_for(
    requested: str | None,
    median_size: tuple[int, int] | None,
    input_size: tuple[int, int],
    n_images: int,
) -> tuple[str | None, str]:
    """Where decoded images are cached: --cache, AUTO (a temporary folder), or None.

    Large photos cost far more to decode than a small network costs to train
    on them (a 12-megapixel JPEG takes about 0.1 s to decode on one core), and
    a run reads each image dozens of times; decoding each once pays back from
    the second pass.
    """
    if requested:
        return requested, f"on: decoded images are kept in {requested} (--cache)"
    if median_size is None:
        return None, "off: images are generated or stored at a small size"
    (h, w), (height, width) = median_size, input_size
    ratio = h * w / (height * width)
    decoded = n_images * height * width * 3 * 4
    if ratio < AUTO_CACHE_RATIO:
        return None, f"off: files (median {h}x{w}) are about the input's size, cheap to decode"
    if decoded > AUTO_CACHE_BYTES:
        return None, (
            f"off: files (median {h}x{w}) are large, but decoded they would take "
            f"{decoded / 1024**3:.1f} GB; pass --cache DIR on a disk with room"
        )
    return AUTO, (
        f"on, in a temporary folder removed after the run: files (median {h}x{w}) have "
        f"{ratio:.0f}x the input's pixels, so each is decoded once, not every pass "
        f"({decoded / 1024**2:.0f} MB)"
    )


def mirror_probe(
    images: np.ndarray, labels: np.ndarray, n_classes: int, seed: int
) -> tuple[bool, str]:
    """Whether horizontal flips keep images in their class, judged on the data itself.

    A nearest-class-mean classifier is fitted on half of a sample of training
    images (downscaled) and scored on the other half, as they are and
    mirrored. Mirroring digits or text changes the class; mirroring photos of
    objects does not. Flips are used unless mirroring costs the probe a clear
    share of its accuracy above chance.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    half = len(order) // 2
    fit, held = order[:half], order[half:]
    x = images.reshape(len(images), -1).astype(np.float64)
    mean, std = x[fit].mean(axis=0), x[fit].std(axis=0) + 1e-6
    centroids = np.stack(
        [
            ((x[fit][labels[fit] == c] - mean) / std).mean(axis=0)
            if np.any(labels[fit] == c)
            else np.full(x.shape[1], 1e6)  # a class absent from the sample
            for c in range(n_classes)
        ]
    )

    def accuracy(rows: np.ndarray) -> float:
        z = (rows - mean) / std
        # |z - c|^2 without the |z|^2 term, which is the same for every class.
        distances = (centroids**2).sum(axis=1)[None, :] - 2.0 * z @ centroids.T
        return float(np.mean(distances.argmin(axis=1) == labels[held]))

    mirrored = images[held][:, :, ::-1, :].reshape(len(held), -1).astype(np.float64)
    plain_acc, mirror_acc = accuracy(x[held]), accuracy(mirrored)
    chance = 1.0 / n_classes
    drop = plain_acc - mirror_acc
    noise = 2.0 * math.sqrt(max(plain_acc * (1 - plain_acc), 0.01) * 2.0 / max(1, len(held)))
    figures = f"a nearest-class-mean probe scored {plain_acc:.0%} as is, {mirror_acc:.0%} mirrored"
    if plain_acc - chance <= noise:
        # The probe learnt nothing, so it cannot tell; a flip that changes the
        # class would make the task unlearnable, while one that does not only
        # adds variety: without evidence, leave them off.
        return False, (
            f"off: the probe could not tell ({figures}, chance {chance:.0%}); --flip turns them on"
        )
    if drop > max(noise, 0.1 * max(plain_acc - chance, 0.0)):
        return False, f"off: mirroring changes the class ({figures})"
    return True, f"on: mirror images stay in their class ({figures})"
