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


@dataclass
class TrainingReport:
    evaluation: Evaluation
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
            "per_class_accuracy": self.evaluation.per_class,
            "confusion_matrix": self.evaluation.confusion,
            "class_names": self.class_names,
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "wall_time_s": round(self.wall_time_s, 2),
            "train_images_per_s": round(self.train_images_per_s, 1),
            "device": self.device,
            "history": self.history,
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
