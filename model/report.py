"""The training report: metrics JSON and pictures a person would rather look at."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers or in CI
import matplotlib.pyplot as plt
import numpy as np

# Validation accuracy within this share of the way from chance to 100% counts as near chance.
NEAR_CHANCE = 0.25
# Training accuracy this far above validation accuracy counts as overfitting.
OVERFIT_GAP = 0.15
# Fewer validation images than this: the figure is rough and, being the best
# epoch's, optimistic.
SMALL_VALIDATION = 200
# Fewer training images than this in a class: said on its own.
FEW_IMAGES = 20


@dataclass
class Evaluation:
    """Accuracy on a labelled set, overall and per class."""

    accuracy: float
    per_class: dict[str, float]
    confusion: list[list[int]]  # rows: true class, columns: predicted class

    @classmethod
    def of(cls, labels: np.ndarray, predicted: np.ndarray, class_names: list[str]) -> Evaluation:
        n = len(class_names)
        confusion = np.zeros((n, n), dtype=np.int64)
        np.add.at(confusion, (labels, predicted), 1)
        totals = confusion.sum(axis=1)
        per_class = {
            name: float(confusion[i, i] / totals[i]) if totals[i] else float("nan")
            for i, name in enumerate(class_names)
        }
        return cls(float(np.mean(labels == predicted)), per_class, confusion.tolist())


def diagnose(
    val_accuracy: float,
    train_accuracy: float,
    chance: float,
    train_counts: np.ndarray,
    n_validation: int,
) -> list[str]:
    """Warnings a person must read before trusting the model, each naming a likely cause.

    Args:
        val_accuracy: accuracy on the validation images.
        train_accuracy: accuracy on (a sample of) the training images, inference mode.
        chance: the majority class's share of the validation images.
        train_counts: training images per class.
        n_validation: number of validation images.
    """
    warnings: list[str] = []
    smallest = int(train_counts[train_counts > 0].min())
    few = f"; the smallest class has only {smallest} training images" if smallest < 50 else ""
    if val_accuracy <= chance + NEAR_CHANCE * (1.0 - chance):
        if train_accuracy <= chance + NEAR_CHANCE * (1.0 - chance):
            cause = (
                "the network did not fit the training images either: check that the class "
                "folders hold different things, try a lower --learning-rate or a larger "
                "--input-size"
            )
        else:
            cause = (
                "it learnt the training images but not what tells the classes apart "
                f"(training accuracy {train_accuracy:.0%}){few}: add images, or start from "
                "pretrained weights (--preset vgg16 --weights imagenet)"
            )
        warnings.append(
            f"validation accuracy {val_accuracy:.1%} is near chance ({chance:.1%}): {cause}"
        )
    elif train_accuracy - val_accuracy > OVERFIT_GAP:
        warnings.append(
            f"validation accuracy {val_accuracy:.1%} is far below training accuracy "
            f"{train_accuracy:.1%}: the network memorised its training images (overfitting)"
            f"{few}; add images, keep augmentation on, or start from pretrained weights"
        )
    if n_validation < SMALL_VALIDATION:
        warnings.append(
            f"only {n_validation} validation images: accuracy is measured to within about "
            f"{100 / max(1, n_validation) ** 0.5:.0f} points, and the best epoch was chosen on "
            "these same images, so it reads high; judge the model on images it never saw"
        )
    if smallest < FEW_IMAGES and not warnings:
        warnings.append(
            f"the smallest class has only {smallest} training images; expect the model to "
            "miss what those few do not show"
        )
    return warnings


@dataclass
class TrainingReport:
    evaluation: Evaluation
    train_accuracy: float
    chance: float
    warnings: list[str]
    plan: dict[str, Any]
    history: dict[str, list[float]]
    class_names: list[str]
    settings: dict[str, Any]
    wall_time_s: float
    train_images_per_s: float
    device: str
    epochs_run: int
    best_epoch: int
    extra: dict[str, Any] = field(default_factory=dict)

    def write(self, folder: Path) -> None:
        """Writes metrics.json, training_curves.png and confusion_matrix.png."""
        folder.mkdir(parents=True, exist_ok=True)
        metrics = {
            "validation_accuracy": self.evaluation.accuracy,
            "train_accuracy": self.train_accuracy,
            "chance_accuracy": self.chance,
            "warnings": self.warnings,
            "per_class_accuracy": self.evaluation.per_class,
            "confusion_matrix": self.evaluation.confusion,
            "class_names": self.class_names,
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "wall_time_s": round(self.wall_time_s, 2),
            "train_images_per_s": round(self.train_images_per_s, 1),
            "device": self.device,
            "history": self.history,
            "plan": self.plan,
            "settings": self.settings,
            **self.extra,
        }
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        self._plot_curves(folder / "training_curves.png")
        self._plot_confusion(folder / "confusion_matrix.png")

    def _plot_curves(self, path: Path) -> None:
        fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
        epochs = range(1, len(self.history.get("loss", [])) + 1)
        for key, ax in (("loss", loss_ax), ("accuracy", acc_ax)):
            for prefix, style in (("", "-"), ("val_", "--")):
                values = self.history.get(prefix + key)
                if values:
                    ax.plot(epochs, values, style, label=(prefix or "train_") + key)
            # Transfer learning's later phases (fine-tuning) start here.
            for phase in self.plan.get("phases", [])[1:]:
                ax.axvline(phase["first_epoch"] - 0.5, color="grey", linestyle=":")
            ax.set_xlabel("epoch")
            ax.set_title(key)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)

    def _plot_confusion(self, path: Path) -> None:
        matrix = np.asarray(self.evaluation.confusion)
        n = len(self.class_names)
        size = max(5.0, 0.45 * n + 2)
        fig, ax = plt.subplots(figsize=(size, size))
        ax.imshow(matrix, cmap="Blues")
        ax.set_xticks(range(n), self.class_names, rotation=90)
        ax.set_yticks(range(n), self.class_names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"validation accuracy {self.evaluation.accuracy:.1%}")
        if n <= 20:
            threshold = matrix.max() / 2 if matrix.size else 0
            for (i, j), value in np.ndenumerate(matrix):
                colour = "white" if value > threshold else "black"
                ax.text(j, i, str(value), ha="center", va="center", fontsize=7, color=colour)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
