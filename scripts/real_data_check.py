"""Runs the documented training command on small real image sets; prints a table.

    .venv/bin/python scripts/real_data_check.py                 # every set
    .venv/bin/python scripts/real_data_check.py digits faces    # some
    .venv/bin/python scripts/real_data_check.py --extra --preset vgg16 --input-size 64

For each set (see tests/realdata.py: real images shipped with scikit-learn and
scikit-image), it writes a training folder and a held-out folder, runs
`python -m model.train --data folder --data-dir TRAIN` with no tuning flags
(plus `--extra` ones), classifies the held-out images through the exported
SavedModel's serving signature, and compares with an RBF SVM on raw pixels
trained on the same files. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import layout
from tests import realdata


def check(name: str, root: Path, extra: list[str]) -> dict[str, object]:
    real = realdata.write(name, root)
    baseline = realdata.baseline_accuracy(real)
    command = [
        sys.executable,
        "-m",
        "model.train",
        "--data",
        "folder",
        "--data-dir",
        str(real.train_dir),
        "--output",
        str(root / "models"),
        "--name",
        name,
        "--verbose",
        "0",
        *extra,
    ]
    started = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if run.returncode != 0:
        raise SystemExit(f"{name}: training failed ({run.returncode}):\n{run.stderr[-2000:]}")
    version_dir = root / "models" / name / str(layout.list_versions(root / "models" / name)[-1])
    metrics = json.loads((version_dir / layout.REPORT / "metrics.json").read_text())
    return {
        "set": name,
        "classes": len(real.class_names),
        "train_files": sum(1 for _ in real.files("train")),
        "held_out_files": sum(1 for _ in real.files("test")),
        "held_out_accuracy": realdata.held_out_accuracy(version_dir, real),
        "svm_baseline": baseline,
        "validation_accuracy": metrics["validation_accuracy"],
        "train_accuracy": metrics["train_accuracy"],
        "flip": metrics["plan"]["flip"],
        "epochs_run": metrics["epochs_run"],
        "seconds": round(seconds),
        "warnings": metrics["warnings"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "sets", nargs="*", metavar="SET", help=f"some of {', '.join(realdata.SETS)} (default: all)"
    )
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more flags")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    if unknown := set(args.sets) - set(realdata.SETS):
        parser.error(f"unknown set(s) {', '.join(sorted(unknown))}; choose from {realdata.SETS}")
    rows = []
    print(
        "| set | classes | train / held-out files | held-out accuracy | SVM on raw pixels "
        "| difference | epochs | time |"
    )
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets or realdata.SETS:
            row = check(name, Path(tmp), args.extra)
            rows.append(row)
            diff = 100 * (float(row["held_out_accuracy"]) - float(row["svm_baseline"]))  # type: ignore[arg-type]
            print(
                f"| {name} | {row['classes']} | {row['train_files']} / {row['held_out_files']} "
                f"| {row['held_out_accuracy']:.1%} | {row['svm_baseline']:.1%} | {diff:+.1f} "
                f"| {row['epochs_run']} | {row['seconds']} s |",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
