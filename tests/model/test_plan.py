"""The training plan's choices from the data, and the report's warnings."""

from __future__ import annotations

import numpy as np
import pytest

from model import plan
from model.data import synthetic
from model.report import diagnose
from tests import realdata


def test_short_epochs_get_step_based_patience_budget_and_momentum() -> None:
    batch, _ = plan.batch_size_for(128, None)
    steps, why = plan.steps_per_epoch_for(128, batch)
    assert (batch, steps) == (32, plan.MIN_EPOCH_STEPS) and "passes" in why
    epochs, _ = plan.epochs_for(steps, None)
    assert epochs * steps >= plan.MIN_STEPS
    patience, _ = plan.patience_for(steps, None)
    assert patience * steps >= plan.PATIENCE_STEPS
    momentum, _ = plan.momentum_for(steps)
    # Initial statistics must be forgotten well within the first epochs.
    assert momentum ** (2 * steps) < 0.2


def test_large_sets_keep_one_pass_an_epoch_and_the_usual_momentum() -> None:
    batch, _ = plan.batch_size_for(100_000, None)
    steps, _ = plan.steps_per_epoch_for(100_000, batch)
    assert (batch, steps) == (64, 100_000 // 64)
    assert plan.epochs_for(steps, None)[0] == 30
    assert plan.momentum_for(steps)[0] == pytest.approx(0.99)


def test_flags_win_over_choices() -> None:
    assert plan.batch_size_for(128, 8)[0] == 8
    assert plan.epochs_for(4, 3) == (3, "set by --epochs")
    assert plan.patience_for(1000, 7)[0] == 7


def test_class_weights_only_for_skewed_folders_and_they_equalise_classes() -> None:
    assert plan.class_weights_for(np.array([100, 90, 110]))[0] is None
    counts = np.array([300, 100, 50])
    weights, why = plan.class_weights_for(counts)
    assert weights is not None and "6.0x" in why
    totals = [weights[i] * counts[i] for i in range(3)]
    assert max(totals) == pytest.approx(min(totals))


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.repeat(digits.images[..., None], 3, axis=-1).astype(np.float32) * 16
    return images, digits.target


def test_mirror_probe_turns_flips_off_for_digits() -> None:
    images, labels = _digits()
    flip, why = plan.mirror_probe(images, labels, 10, seed=0)
    assert not flip and "changes the class" in why


def test_mirror_probe_keeps_flips_for_shapes_and_faces() -> None:
    images, labels = synthetic.generate_arrays(per_class=60, size=(16, 16), seed=0)
    assert plan.mirror_probe(images.astype(np.float32), labels, 12, seed=0)[0]
    faces, face_labels, _ = realdata.load("faces")
    stacked = np.repeat(np.stack(faces)[..., None], 3, axis=-1).astype(np.float32)
    assert plan.mirror_probe(stacked, face_labels, 2, seed=0)[0]


def test_near_chance_warns_and_names_the_cause() -> None:
    counts = np.array([20, 20])
    memorised = diagnose(0.52, 1.0, 0.5, counts, 200)
    assert len(memorised) == 1 and "near chance" in memorised[0]
    assert "only 20 training images" in memorised[0]
    unfit = diagnose(0.11, 0.12, 0.1, np.array([500] * 10), 1000)
    assert "did not fit the training images" in unfit[0]


def test_overfitting_and_tiny_validation_sets_warn() -> None:
    assert "overfitting" in diagnose(0.70, 0.99, 0.1, np.array([500] * 10), 1000)[0]
    assert diagnose(0.97, 0.99, 0.1, np.array([500] * 10), 1000) == []
    assert "validation images" in diagnose(0.97, 0.99, 0.5, np.array([80, 80]), 32)[0]


def test_mirror_probe_leaves_flips_off_when_it_cannot_tell() -> None:
    # Noise in both classes: the probe learns nothing, so it has no evidence
    # that mirror images keep their class.
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (200, 16, 16, 3)).astype(np.float32)
    labels = np.repeat(np.arange(2), 100)
    flip, why = plan.mirror_probe(images, labels, 2, seed=0)
    assert not flip and "could not tell" in why


def test_large_files_are_decoded_once_into_a_temporary_cache() -> None:
    cache, why = plan.cache_for(None, (3024, 4032), (32, 32), 300)
    assert cache == plan.AUTO and "temporary folder" in why
    assert plan.cache_for(None, (40, 40), (32, 32), 300)[0] is None
    assert plan.cache_for(None, None, (32, 32), 300)[0] is None
    too_big, why = plan.cache_for(None, (3024, 4032), (224, 224), 100_000)
    assert too_big is None and "--cache DIR" in why
    assert plan.cache_for("/data/cache", (40, 40), (32, 32), 300)[0] == "/data/cache"
