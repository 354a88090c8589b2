"""The documented training command on real image folders, against a classical baseline.

Each set (tests/realdata.py: real images shipped with scikit-learn and
scikit-image) is split into a training folder and a held-out folder. The
default command trains on the first, with no tuning flags; its export must
classify the held-out images about as well as an RBF SVM on raw pixels trained
on the same files. Before the training plan existed these runs exported
near-chance models (faces: 50%, digits: 26-39%) and said nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model import layout
from model.train import main
from tests import realdata

# Within 3 points of the baseline, or one held-out image on small sets.
MARGIN = 0.03


@pytest.mark.slow
@pytest.mark.parametrize("name", ["faces", "digits", "textures"])
def test_default_command_matches_the_svm_baseline_on_held_out_images(
    name: str, tmp_path: Path
) -> None:
    real = realdata.write(name, tmp_path)
    baseline = realdata.baseline_accuracy(real)
    models = tmp_path / "models"
    args = ["--data", "folder", "--data-dir", str(real.train_dir), "--output", str(models)]
    assert main([*args, "--name", name, "--verbose", "0"]) == 0
    version_dir = models / name / "1"
    accuracy = realdata.held_out_accuracy(version_dir, real)
    n_test = sum(1 for _ in real.files("test"))
    assert accuracy >= baseline - max(MARGIN, 1.0 / n_test), (accuracy, baseline)
    metrics = json.loads((version_dir / layout.REPORT / "metrics.json").read_text())
    assert metrics["train_accuracy"] >= metrics["validation_accuracy"] - 0.1
    assert metrics["chance_accuracy"] == pytest.approx(1 / len(real.class_names), abs=0.05)
    assert not [w for w in metrics["warnings"] if "near chance" in w or "overfitting" in w]
