"""The on-disk layout of exported models (TensorFlow Serving's).

    models/<name>/<version>/saved_model.pb, variables/, assets/
    models/<name>/<version>/assets/labels.txt           one class name a line
    models/<name>/<version>/assets/preprocessing.json   PreprocessConfig
    models/<name>/<version>/model.keras                 the Keras model
    models/<name>/<version>/report/                     training report

Versions are positive integers; anything else in the folder (such as the
temporary folders of an export in progress) is ignored. Reading labels and
settings needs no TensorFlow.
"""

from __future__ import annotations

import json
from pathlib import Path

from model.preprocess_config import PreprocessConfig

LABELS = Path("assets") / "labels.txt"
PREPROCESSING = Path("assets") / "preprocessing.json"
REPORT = Path("report")
# The Keras model itself, for the feature-map visualiser and fine-tuning.
KERAS_MODEL = Path("model.keras")
SERVING_SIGNATURE = "serving_default"
PIXELS_SIGNATURE = "serving_pixels"
# Grad-CAM explanations (model.gradcam); versions exported before it lack it.
GRADCAM_SIGNATURE = "gradcam"
CLASS_INDEX_INPUT = "class_index"
IMAGES_INPUT = "images"
PIXELS_INPUT = "pixels"
OUTPUT = "probabilities"


def list_versions(model_dir: str | Path) -> list[int]:
    """The complete versions under `model_dir`, ascending."""
    root = Path(model_dir)
    if not root.is_dir():
        return []
    return sorted(
        int(p.name)
        for p in root.iterdir()
        if p.is_dir() and p.name.isdigit() and int(p.name) > 0 and (p / "saved_model.pb").exists()
    )


def latest_version_dir(path: str | Path) -> Path | None:
    """`path` itself when it is a version folder, else its newest complete
    version; None when it holds none."""
    root = Path(path)
    if (root / "saved_model.pb").exists():
        return root
    versions = list_versions(root)
    return root / str(versions[-1]) if versions else None


def next_version(model_dir: str | Path) -> int:
    """One more than the highest version number in use (complete or not)."""
    root = Path(model_dir)
    used = [int(p.name) for p in root.iterdir() if p.name.isdigit()] if root.is_dir() else []
    return max(used, default=0) + 1


def read_labels(version_dir: str | Path) -> list[str]:
    return (Path(version_dir) / LABELS).read_text(encoding="utf-8").splitlines()


def read_preprocessing(version_dir: str | Path) -> PreprocessConfig:
    data = json.loads((Path(version_dir) / PREPROCESSING).read_text(encoding="utf-8"))
    return PreprocessConfig.from_dict(data)
