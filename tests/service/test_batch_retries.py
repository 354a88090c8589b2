"""The batch tool loses no image: restarts, load shedding, resumes (issue 10, items 6-8).

Answers that say "not now" (UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED)
must never become rows; every image ends as exactly one row.
"""

from __future__ import annotations

import csv
import json
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest

from loadtest.serverproc import child_server, server_command
from protos.vggserve.v1 import classifier_pb2 as pb
from protos.vggserve.v1 import classifier_pb2_grpc as pb_grpc
from tests.helpers import encode, rows_written, wait_for
from tests.service.helpers import RunningServer, settings_for
from vggclient.batch.cli import main
from vggclient.batch.rows import FIELDS


@pytest.fixture(scope="module")
def many_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 good images: enough that a run is still going when the server restarts."""
    root = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(2)
    for i in range(300):
        pixels = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
        (root / f"{i:03d}.png").write_bytes(encode(pixels, "PNG"))
    return root


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 good images (no corrupt ones: every image must end as an ok row)."""
    root = tmp_path_factory.mktemp("good")
    rng = np.random.default_rng(1)
    for i in range(120):
        pixels = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
        (root / f"{i:03d}.png").write_bytes(encode(pixels, "PNG"))
    return root


def rows_of(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def all_ok_once(rows: list[dict[str, str]], folder: Path) -> None:
    """Exactly one ok row per image of `folder`, keyed by absolute path; no error row."""
    expected = sorted(str(p) for p in folder.glob("*.png"))
    assert sorted(r["path"] for r in rows) == expected
    assert [r for r in rows if r["status"] != "ok"] == []


def run_in_thread(argv: list[str]) -> tuple[threading.Thread, list[int]]:
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(main(argv)))
    thread.start()
    return thread, result


# --- item 6: a real server restarted mid-run ---------------------------------------


@pytest.mark.slow
def test_server_restart_mid_run_leaves_every_image_one_ok_row(
    model_dir: Path, many_photos: Path, tmp_path: Path
) -> None:
    photos = many_photos
    out = tmp_path / "predictions.csv"
    # No grace: the drain starts at once, with images in flight on the stream.
    drain = ["--drain-grace-s", "0", "--drain-timeout-s", "5", "--max-batch-size", "4"]
    first_command = server_command(model_dir, drain)
    with child_server(first_command) as first:
        port = first.target.rsplit(":", 1)[1]
        thread, result = run_in_thread(
            [
                str(photos),
                "--out",
                str(out),
                "--target",
                first.target,
                "--window",
                "4",
                "--backoff",
                "0.1",
                "--max-retries",
                "12",
            ]
        )
        # SIGTERM once some rows are written: images are in flight on the stream.
        wait_for(lambda: rows_written(out, 10, thread.is_alive), 120, f"10 rows in {out}")
        first.process.send_signal(signal.SIGTERM)
        assert first.process.wait(timeout=60) == 0
    second_command = server_command(model_dir, drain)
    second_command[second_command.index("--port") + 1] = port
    with child_server(second_command):
        thread.join(timeout=240)
    assert result == [0]
    all_ok_once(rows_of(out), photos)


# --- item 7: a server that sheds load ------------------------------------------------


@pytest.fixture(scope="module")
def shedding_server(model_dir: Path) -> Iterator[RunningServer]:
    # The server lets one stream hold 2 x max-batch-size images; a queue of 2
    # sheds most of them.
    running = RunningServer(settings_for(model_dir, metrics_port=-1, max_queue=2))
    running.load()
    yield running
    running.stop()


def test_load_shedding_writes_no_error_row(
    shedding_server: RunningServer, photos: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "predictions.csv"
    with caplog.at_level(logging.WARNING, logger="vggclient.batch"):
        code = main(
            [
                str(photos),
                "--out",
                str(out),
                "--target",
                shedding_server.target,
                "--window",
                "64",
                "--backoff",
                "0.05",
            ]
        )
    assert "answered RESOURCE_EXHAUSTED" in caplog.text  # it did shed, and it was retried
    assert code == 0
    all_ok_once(rows_of(out), photos)


def write_old_rows(out: Path, photos: Path) -> list[str]:
    """A file as older tools left it: "not now" errors written as final rows."""
    paths = sorted(str(p) for p in photos.glob("*.png"))
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS)
        writer.writeheader()
        for i, path in enumerate(paths):
            error = ["RESOURCE_EXHAUSTED: server is at capacity", "UNAVAILABLE: shutting down"]
            row = {"path": path, "status": "error", "error": error[i % 2]}
            if i % 3 == 0:
                row = {"path": path, "status": "ok", "label": "kept", "probability": "1.0"}
            writer.writerow(row)
    return paths


def test_rerun_retries_rows_whose_error_was_retryable(
    shedding_server: RunningServer, photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "predictions.csv"
    paths = write_old_rows(out, photos)
    code = main(
        [str(photos), "--out", str(out), "--target", shedding_server.target, "--backoff", "0.05"]
    )
    assert code == 0
    rows = rows_of(out)
    all_ok_once(rows, photos)
    # The ok rows already there were kept, not redone.
    assert [r["path"] for r in rows if r["label"] == "kept"] == paths[::3]


# --- a fake server on port 0 with scripted answers ------------------------------------

OK = pb.ImageResult(
    response=pb.ClassifyResponse(
        classes=[pb.ClassScore(index=0, label="thing", probability=1.0)],
        model_name="fake",
        model_version=1,
    )
)


class Scripted(pb_grpc.ImageClassifierServicer):
    """ClassifyStream answering each image with `answer(index in this stream)`;
    an `answer` that returns None ends the stream UNAVAILABLE (a restart)."""

    def __init__(self, answer: Callable[[int], pb.ImageResult | None]) -> None:
        self.answer = answer

    def ClassifyStream(self, request_iterator, context):  # type: ignore[no-untyped-def]
        for index, request in enumerate(request_iterator):
            result = self.answer(index)
            if result is None:
                context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
            yield pb.StreamResult(request_id=request.request_id, result=result)


@pytest.fixture
def scripted() -> Iterator[Callable[[Callable[[int], pb.ImageResult | None]], str]]:
    servers: list[grpc.Server] = []

    def start(answer: Callable[[int], pb.ImageResult | None]) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(4))
        pb_grpc.add_ImageClassifierServicer_to_server(Scripted(answer), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(None)


# --- item 8: the retry budget and the row keys ----------------------------------------


def test_retry_budget_counts_failures_in_a_row_not_in_total(
    scripted: Callable[..., str], photos: Path, tmp_path: Path
) -> None:
    # Every stream answers 10 images, then the server "restarts": 12 restarts
    # in all, never two in a row without progress.
    target = scripted(lambda index: OK if index < 10 else None)
    out = tmp_path / "predictions.csv"
    code = main(
        [
            str(photos),
            "--out",
            str(out),
            "--target",
            target,
            "--window",
            "4",
            "--max-retries",
            "2",
            "--backoff",
            "0.01",
        ]
    )
    assert code == 0
    all_ok_once(rows_of(out), photos)


def test_a_server_that_never_answers_leaves_no_row_and_exits_2(
    scripted: Callable[..., str], photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    busy = pb.ImageResult(
        error=pb.ImageError(code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], message="full")
    )
    target = scripted(lambda index: busy)
    out = tmp_path / "predictions.jsonl"
    code = main(
        [
            str(photos),
            "--out",
            str(out),
            "--target",
            target,
            "--max-retries",
            "2",
            "--backoff",
            "0.01",
        ]
    )
    assert code == 2
    assert out.read_text() == ""
    assert "120 without an answer" in capsys.readouterr().err


def test_a_rerun_of_old_retryable_rows_exits_2_while_they_have_no_answer(
    photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "predictions.csv"
    write_old_rows(out, photos)
    with socket.socket() as probe:  # a free port, with no server behind it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = main(
        [
            str(photos),
            "--out",
            str(out),
            "--target",
            f"127.0.0.1:{port}",
            "--max-retries",
            "1",
            "--backoff",
            "0.01",
        ]
    )
    assert code == 2


def test_resume_with_a_relative_path_after_an_absolute_one_adds_no_row(
    scripted: Callable[..., str],
    photos: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = scripted(lambda index: OK)
    out = tmp_path / "predictions.jsonl"
    assert main([str(photos), "--out", str(out), "--target", target]) == 0
    monkeypatch.chdir(photos.parent)
    assert main([photos.name, "--out", str(out), "--target", target]) == 0
    assert "resuming: 120 of 120 images are already in" in capsys.readouterr().err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    all_ok_once(rows, photos)


def test_a_file_over_the_message_limit_is_its_own_error_row(
    scripted: Callable[..., str], photos: Path, tmp_path: Path
) -> None:
    # Sent, it would break the stream for every image, on every attempt.
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(50_000))
    target = scripted(lambda index: OK)
    out = tmp_path / "predictions.csv"
    code = main(
        [
            str(photos),
            str(big),
            "--out",
            str(out),
            "--target",
            target,
            "--max-message-bytes",
            "40000",
        ]
    )
    assert code == 1
    rows = rows_of(out)
    errors = [(r["path"], r["error"]) for r in rows if r["status"] == "error"]
    assert errors == [(str(big), "file is 50008 bytes: over --max-message-bytes 40000")]
    all_ok_once([r for r in rows if r["status"] == "ok"], photos)
