"""`python -m model.train` as scripts use it: honest warnings, --min-accuracy, --skip-if-exists."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model import layout
from model.train import main
from tests.helpers import encode

TINY_FLAGS = ["--input-size", "16", "--width", "0.25", "--epochs", "2", "--verbose", "0"]


def _unlearnable_folder(root: Path) -> Path:
    """Two classes of the very same image: no model can beat a coin toss."""
    same = encode(np.full((12, 12, 3), 128, dtype=np.uint8))
    for name in ("heads", "tails"):
        (root / name).mkdir(parents=True)
        for i in range(30):
            (root / name / f"{i}.png").write_bytes(same)
    return root


def test_a_near_chance_run_warns_with_the_likely_cause(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _unlearnable_folder(tmp_path / "coin")
    args = ["--data", "folder", "--data-dir", str(data), "--output", str(tmp_path / "m")]
    assert main([*args, "--name", "coin", *TINY_FLAGS]) == 0
    out = capsys.readouterr().out
    assert "chance 50.00%" in out and "training" in out
    assert "warning: validation accuracy 50.0% is near chance (50.0%)" in out
    assert "did not fit the training images either" in out
    metrics = json.loads((tmp_path / "m" / "coin" / "1" / "report" / "metrics.json").read_text())
    assert metrics["chance_accuracy"] == 0.5 and metrics["train_accuracy"] == 0.5
    assert any("near chance" in w for w in metrics["warnings"])


def test_min_accuracy_exits_non_zero_and_exports_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _unlearnable_folder(tmp_path / "coin")
    args = ["--data", "folder", "--data-dir", str(data), "--output", str(tmp_path / "m")]
    assert main([*args, "--name", "coin", "--min-accuracy", "0.9", *TINY_FLAGS]) == 3
    err = capsys.readouterr().err
    assert "below --min-accuracy 90.00%; nothing was exported" in err
    assert not (tmp_path / "m" / "coin").exists() or not list((tmp_path / "m" / "coin").iterdir())


def test_skip_if_exists_does_nothing_when_a_version_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    version = tmp_path / "m" / "tiny" / "4"
    version.mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"")
    args = ["--output", str(tmp_path / "m"), "--name", "tiny", "--skip-if-exists", *TINY_FLAGS]
    assert main(args) == 0
    assert "has version(s) 4: nothing to do" in capsys.readouterr().out
    assert layout.list_versions(tmp_path / "m" / "tiny") == [4]


def test_bad_flag_values_are_one_line_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for flag, value in (("--min-accuracy", "1.5"), ("--epochs", "0"), ("--batch-size", "-1")):
        with pytest.raises(SystemExit) as info:
            main([flag, value])
        assert info.value.code == 2
        assert flag in capsys.readouterr().err


def test_cache_keeps_decoded_images_on_disk_for_later_runs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = tmp_path / "colours"
    for name, channel in (("red", 0), ("blue", 2)):
        (data / name).mkdir(parents=True)
        for i in range(20):
            pixels = rng.integers(0, 60, (20, 20, 3), dtype=np.uint8)
            pixels[..., channel] = 200
            (data / name / f"{i}.png").write_bytes(encode(pixels))
    (data / "red" / "broken.jpg").write_bytes(b"")  # left out, and said so
    cache = tmp_path / "cache"
    args = ["--data", "folder", "--data-dir", str(data), "--output", str(tmp_path / "m")]
    args += ["--name", "rb", "--cache", str(cache), *TINY_FLAGS]
    assert main(args) == 0
    parts = sorted(p.name.split("-")[0] for p in cache.iterdir())
    assert parts == ["train", "validation"]
    assert all(list(p.glob("images*.index")) for p in cache.iterdir())
    # A second run reads the same cache (same files, same size): no new entries.
    assert main(args) == 0
    assert len(list(cache.iterdir())) == 2
    metrics = json.loads((tmp_path / "m" / "rb" / "2" / "report" / "metrics.json").read_text())
    assert metrics["validation_accuracy"] == 1.0
    assert any("did not decode" in w and "broken.jpg" in w for w in metrics["warnings"])
    assert metrics["plan"]["reasons"]["cache"].startswith("on: decoded images are kept in")
