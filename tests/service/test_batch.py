"""The batch inference tool over a folder, against a real server or --local."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import encode, read_rows, rows_written, wait_for
from tests.service.helpers import RunningServer, settings_for
from vggclient.batch.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 images in two sub-folders, plus 3 corrupt files."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(200):
        sub = root / ("a" if i % 2 else "b" / Path("deeper"))
        sub.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)
        (sub / f"{i:03d}.png").write_bytes(encode(pixels, "PNG"))
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (root / "a" / "empty.png").write_bytes(b"")
    (root / "b" / "text.gif").write_bytes(b"hello")
    (root / "b" / "notes.txt").write_text("not an image, not picked up")
    return root


def test_folder_to_csv_with_error_rows(
    server: RunningServer, folder: Path, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "predictions.csv"
    missing = folder / "missing.png"
    code = main(
        [str(folder), str(missing), "--out", str(out), "--target", server.target, "--top-k", "3"]
    )
    assert code == 1  # some images failed
    rows = read_rows(out)
    assert len(rows) == 204 and len({r["path"] for r in rows}) == 204
    errors = {Path(r["path"]).name: r["error"] for r in rows if r["status"] == "error"}
    assert set(errors) == {"broken.jpg", "empty.png", "text.gif", "missing.png"}
    assert errors["missing.png"].startswith("cannot read file")
    assert errors["text.gif"].startswith("INVALID_ARGUMENT")
    ok = [r for r in rows if r["status"] == "ok"]
    assert all(r["model"] == "tiny" and r["version"] == "2" for r in ok)
    assert all(len(json.loads(r["top_k"])) == 3 for r in ok)
    assert "done: 200 classified, 4 failed" in capsys.readouterr().err


def test_local_gives_the_same_predictions_as_the_server(
    server: RunningServer, model_dir: Path, folder: Path, tmp_path: Path
) -> None:
    remote, local = tmp_path / "remote.jsonl", tmp_path / "local.jsonl"
    main([str(folder / "a"), "--out", str(remote), "--target", server.target])
    main([str(folder / "a"), "--out", str(local), "--local", str(model_dir)])
    served = {r["path"]: r for r in read_rows(remote)}
    in_process = {r["path"]: r for r in read_rows(local)}
    assert served.keys() == in_process.keys()
    for path, row in served.items():
        other = in_process[path]
        assert (row["status"], row["label"], row["error"][:16]) == (
            other["status"],
            other["label"],
            other["error"][:16],
        )
        if row["status"] == "ok":
            # Batches form differently in the two runs, and kernels may differ
            # in the last bits of float32 with the batch size.
            assert abs(row["probability"] - other["probability"]) < 1e-5


def test_resume_after_a_kill_writes_exactly_one_row_per_image(
    server: RunningServer, folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "predictions.jsonl"
    command = [
        sys.executable,
        "-m",
        "vggclient.batch",
        str(folder),
        "--out",
        str(out),
        "--target",
        server.target,
        "--window",
        "2",
    ]
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        # Kill it once some rows are written (it must not have finished by then).
        wait_for(
            lambda: rows_written(out, 20, lambda: process.poll() is None), 120, f"20 rows in {out}"
        )
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    partial = out.read_bytes().count(b"\n")
    assert 20 <= partial < 203
    assert main([str(folder), "--out", str(out), "--target", server.target]) == 1
    paths = [r["path"] for r in read_rows(out)]
    assert len(paths) == 203 and len(set(paths)) == 203


@pytest.mark.slow
def test_reconnects_when_the_server_restarts_mid_run(
    model_dir: Path, folder: Path, tmp_path: Path
) -> None:
    first = RunningServer(settings_for(model_dir, metrics_port=-1))
    first.load()
    port = first.port
    out = tmp_path / "predictions.csv"
    result: list[int] = []
    run = threading.Thread(
        target=lambda: result.append(
            main(
                [
                    str(folder),
                    "--out",
                    str(out),
                    "--target",
                    f"127.0.0.1:{port}",
                    "--window",
                    "2",
                    "--backoff",
                    "0.2",
                ]
            )
        )
    )
    run.start()
    second = None
    try:
        wait_for(lambda: rows_written(out, 40, run.is_alive), 120, f"40 rows in {out}")
        first.stop()  # graceful: answers what it accepted, then goes away
        second = RunningServer(settings_for(model_dir, metrics_port=-1, port=port))
        second.load()
        run.join(timeout=120)
    finally:
        if second is not None:
            second.stop()
    assert result == [1]  # the 3 corrupt files
    paths = [r["path"] for r in read_rows(out)]
    assert len(paths) == 203 and len(set(paths)) == 203
