"""The batch tool's Ray engine: the local Ray instance it starts, kept for the module
and joined by the tool with --ray-address (as a user joins a cluster)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import encode, read_rows, rows_written, wait_for
from vggclient.batch import ray as ray_engine
from vggclient.batch.cli import main

ROOT = Path(__file__).resolve().parents[2]
IMAGES = 120


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """The Ray instance the tool starts without --ray-address, kept for the module."""
    assert ray_engine.start(None)
    import ray  # after start(), which sets what Ray reads on import

    try:
        # Loopback only: Ray advertises the machine's interface address otherwise.
        assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """IMAGES small PNGs in two folders, and two files that are not images."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(1)
    for i in range(IMAGES):
        sub = root / ("a" if i % 2 else "b")
        sub.mkdir(exist_ok=True)
        (sub / f"{i:03d}.png").write_bytes(encode(rng.integers(0, 256, (24, 24, 3), np.uint8)))
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (root / "b" / "text.gif").write_bytes(b"hello")
    return root


@pytest.mark.slow  # Ray workers each load TensorFlow
def test_ray_rows_equal_local_rows_and_bad_files_are_error_rows(
    ray_address: str, model_dir: Path, photos: Path, tmp_path: Path
) -> None:
    ray_out, local_out = tmp_path / "ray.csv", tmp_path / "local.csv"
    missing = str(photos / "missing.png")
    ray_args = ["--engine", "ray", "--model", str(model_dir), "--ray-address", ray_address]
    assert main([str(photos), missing, "--out", str(ray_out), *ray_args, "--batch-size", "8"]) == 1
    assert main([str(photos), missing, "--out", str(local_out), "--local", str(model_dir)]) == 1
    by_ray = {r["path"]: r for r in read_rows(ray_out)}
    in_process = {r["path"]: r for r in read_rows(local_out)}
    assert len(by_ray) == IMAGES + 3 and by_ray.keys() == in_process.keys()
    errors = {Path(p).name: r["error"] for p, r in by_ray.items() if r["status"] == "error"}
    assert set(errors) == {"broken.jpg", "text.gif", "missing.png"}
    assert errors["missing.png"].startswith("cannot read file")
    assert errors["text.gif"].startswith("INVALID_ARGUMENT: image is not a JPEG")
    for path, row in by_ray.items():
        other = in_process[path]
        for field in ("status", "label", "model", "version", "error"):
            assert row[field] == other[field], (path, field)
        if row["status"] == "ok":
            # Batches form differently; float32 kernels differ in the last bits.
            assert abs(float(row["probability"]) - float(other["probability"])) < 1e-5
            assert [c[0] for c in json.loads(row["top_k"])] == [
                c[0] for c in json.loads(other["top_k"])
            ]


@pytest.mark.slow
def test_a_killed_ray_job_resumes_with_one_row_per_image(
    ray_address: str, model_dir: Path, photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "predictions.jsonl"
    args = [str(photos), "--out", str(out), "--engine", "ray", "--model", str(model_dir)]
    args += ["--ray-address", ray_address, "--batch-size", "1"]
    process = subprocess.Popen(
        [sys.executable, "-m", "vggclient.batch", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Kill the driver once some rows are written (it must not have finished by then).
        wait_for(
            lambda: rows_written(out, 4, lambda: process.poll() is None), 300, f"4 rows in {out}"
        )
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    partial = out.read_bytes().count(b"\n")
    assert 4 <= partial < IMAGES + 2
    assert main(args) == 1  # the two bad files
    paths = [r["path"] for r in read_rows(out)]
    assert len(paths) == len(set(paths)) == IMAGES + 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--engine", "ray"], "--engine ray needs --model MODEL_DIR"),
        (["--engine", "ray", "--local", "m"], "--local MODEL_DIR is --engine local --model"),
        (["--engine", "ray", "--model", "m", "--ray-actors", "0"], "--ray-actors must be at"),
    ],
)
def test_engine_flags_are_checked_before_anything_runs(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["photos/", "--out", str(tmp_path / "out.csv"), *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_a_model_folder_without_versions_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "photo.png").write_bytes(encode(np.zeros((8, 8, 3), np.uint8)))
    out = tmp_path / "out.csv"
    argv = [str(tmp_path / "photo.png"), "--out", str(out), "--engine", "ray", "--model"]
    assert main([*argv, str(tmp_path / "empty")]) == 2
    assert f"error: no exported version under {tmp_path / 'empty'}" in capsys.readouterr().err
