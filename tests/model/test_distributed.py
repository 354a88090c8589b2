"""`python -m model.train --distributed`: two worker processes on loopback ports."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from model import layout
from model.distributed import ClusterConfigError, tf_config_from_env
from model.preprocessing import preprocess_encoded_batch
from model.train import parse_args as train_args
from tests.helpers import encode, random_pixels, wait_for
from tests.service.helpers import RunningServer, settings_for

ROOT = Path(__file__).resolve().parents[2]
# A tiny network on a tiny synthetic set: a few 50-step epochs take seconds.
TINY_ARGS = [
    "--distributed",
    "--input-size", "16",
    "--width", "0.5",
    "--per-class", "20",
    "--batch-size", "8",
    "--no-augment",
    "--name", "tiny",
    "--verbose", "0",
]  # fmt: skip


def free_ports(n: int) -> list[int]:
    """Ports free a moment ago. TensorFlow's server binds the port TF_CONFIG names
    (it cannot take 0 and report back), so another process could take one first;
    on a test machine that is rare, and the run then fails loudly, not silently."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def start_workers(tmp_path: Path, *args: str) -> list[tuple[subprocess.Popen, Path, Path]]:
    """Two workers; returns (process, output folder, log file) for each."""
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    workers = []
    for index in range(2):
        config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        output, log = tmp_path / f"worker{index}", tmp_path / f"worker{index}.log"
        env = {**os.environ, "TF_CONFIG": json.dumps(config), "TF_CPP_MIN_LOG_LEVEL": "2"}
        with log.open("w") as handle:
            process = subprocess.Popen(
                [sys.executable, "-m", "model.train", *TINY_ARGS, "--output", str(output), *args],
                cwd=ROOT,
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        workers.append((process, output, log))
    return workers


def stop(workers: list[tuple[subprocess.Popen, Path, Path]]) -> None:
    for process, _, _ in workers:
        if process.poll() is None:
            process.kill()
        process.wait()


def digest(log: Path) -> str:
    (found,) = re.findall(r"^weights ([0-9a-f]{16})$", log.read_text(), re.M)
    return found


@pytest.mark.slow  # worker processes each load TensorFlow
def test_two_workers_train_in_sync_and_the_chief_exports_what_it_trained(tmp_path: Path) -> None:
    workers = start_workers(tmp_path, "--epochs", "2")
    try:
        codes = [process.wait(timeout=300) for process, _, _ in workers]
    finally:
        stop(workers)
    (_, chief_out, chief_log), (_, other_out, other_log) = workers
    assert codes == [0, 0], chief_log.read_text()[-3000:] + other_log.read_text()[-3000:]
    # Every step all-reduced the gradients: the two copies end bit for bit equal.
    assert digest(chief_log) == digest(other_log)
    assert "global batch 16, 2 replicas" in chief_log.read_text()
    assert not other_out.exists()  # only the chief writes
    version_dir = chief_out / "tiny" / "1"
    metrics = json.loads((version_dir / layout.REPORT / "metrics.json").read_text())
    assert (metrics["workers"], metrics["replicas"]) == (2, 2)

    # The export serves what the chief trained: the server's answers equal the
    # Keras model run in this process on the same preprocessing.
    images = [encode(random_pixels(20 + i, 24, seed=i)) for i in range(4)]
    model = keras.models.load_model(version_dir / layout.KERAS_MODEL)
    preprocess = layout.read_preprocessing(version_dir)
    import tensorflow as tf

    expected = model(preprocess_encoded_batch(tf.constant(images), preprocess)).numpy()
    labels = layout.read_labels(version_dir)
    server = RunningServer(settings_for(chief_out / "tiny"))
    try:
        server.load()
        with server.client(timeout=30.0) as client:
            client.wait_until_serving()
            for image, want in zip(images, expected, strict=True):
                answer = client.classify(image, top_k=len(labels))
                got = {c.label: c.probability for c in answer.classes}
                assert np.allclose([got[label] for label in labels], want, atol=1e-5)
    finally:
        server.stop()


def epoch_threads(log: Path) -> list[int]:
    """The thread count each epoch's log line reports."""
    return [
        int(n) for n in re.findall(r"^.* epoch \d+/\d+: .*; (\d+) threads$", log.read_text(), re.M)
    ]


@pytest.mark.slow
def test_threads_stay_flat_over_epochs_and_both_workers_end_cleanly(tmp_path: Path) -> None:
    # TensorFlow's per-collective timeout started a thread per collective op that
    # slept for the whole timeout: ~1200 more threads an epoch here, until the
    # workers died ("Resource temporarily unavailable") after a few epochs.
    workers = start_workers(tmp_path, "--epochs", "5")
    try:
        codes = [process.wait(timeout=300) for process, _, _ in workers]
    finally:
        stop(workers)
    logs = [log.read_text() for _, _, log in workers]
    assert codes == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    for index, (_, _, log) in enumerate(workers):
        threads = epoch_threads(log)
        assert len(threads) == 5, logs[index][-3000:]
        # The first epoch's count includes pools that start with the first steps.
        assert max(threads[1:]) - min(threads[1:]) <= 10, f"worker {index}: {threads}"
        # A worker that left while the other still ran looked crashed to the
        # chief's coordination service ("tasks have crashed", heartbeat errors).
        assert not re.search(r"crashed|heartbeat", logs[index], re.I), logs[index][-3000:]


@pytest.mark.slow
def test_a_worker_that_dies_fails_the_run_with_a_clear_error(tmp_path: Path) -> None:
    workers = start_workers(tmp_path, "--epochs", "500", "--collective-timeout", "60")
    (chief, _, chief_log), (other, _, other_log) = workers
    try:
        # Kill worker 1 once training runs (both workers must still be running then).
        def training() -> bool:
            if "epoch 1/500" in other_log.read_text():
                return True
            assert chief.poll() is None and other.poll() is None, chief_log.read_text()[-3000:]
            return False

        wait_for(training, 300, f"worker 1 to log its first epoch in {other_log}")
        other.send_signal(signal.SIGKILL)
        code = chief.wait(timeout=180)  # a hang fails here
    finally:
        stop(workers)
    last = chief_log.read_text().strip().splitlines()[-1]
    assert code == 4, chief_log.read_text()[-3000:]
    assert last.startswith("error: worker 0 of 2: training stopped because another worker died")
    # How TensorFlow learns of it varies (heartbeats, a refused or reset connection).
    assert re.search(r"\((worker 1|a worker)\b", last), last


def test_worker_hosts_and_an_index_make_tf_config() -> None:
    hosts = {"VGGSERVE_WORKER_HOSTS": "a:2222, b:2222"}
    assert json.loads(tf_config_from_env({**hosts, "VGGSERVE_WORKER_INDEX": "1"}) or "") == {
        "cluster": {"worker": ["a:2222", "b:2222"]},
        "task": {"type": "worker", "index": 1},
    }
    assert tf_config_from_env({**hosts, "TF_CONFIG": "{}"}) is None  # TF_CONFIG wins
    assert tf_config_from_env({}) is None  # one worker
    with pytest.raises(ClusterConfigError, match="names 2 workers but this worker's index"):
        tf_config_from_env({**hosts, "JOB_COMPLETION_INDEX": "2"})


def test_distributed_refuses_transfer_learning(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        train_args(["--distributed", "--preset", "vgg16", "--weights", "imagenet"])
    assert "--distributed trains networks from scratch" in capsys.readouterr().err
