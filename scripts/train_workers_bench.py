"""Training speed on 1 and 2 workers of `model.train --distributed`, on this machine.

    .venv/bin/python scripts/train_workers_bench.py
    .venv/bin/python scripts/train_workers_bench.py --per-class 400 --epochs 2
    .venv/bin/python scripts/train_workers_bench.py --threads --per-class 20 --epochs 15

Runs the same training (vgg-mini on the synthetic set, the plan's per-replica
batch) as: `model.train` without --distributed (Keras's fit), one
--distributed worker without TF_CONFIG, and two --distributed workers on
loopback ports (both processes on this machine, sharing its cores). Prints the
training images/s each run reports (the whole cluster's, epochs only) and the
wall time of the command (of the slower worker). Two workers on one machine
measure the cost of the all-reduce and of sharing cores, not a speed-up: that
needs a machine (or GPU) per worker.

--threads runs only the two workers, for as many epochs as asked, and prints
each worker's thread count after every epoch (from its log): it should stay
flat (TensorFlow's per-collective timeout once added ~500 threads a second).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Run:
    images_per_s: float  # the chief's figure, the cluster's images
    seconds: float  # wall time until every worker ended
    threads: list[list[int]]  # per worker, its thread count after each epoch


def run(workers: int, flags: list[str], distributed: bool, out: Path) -> Run:
    hosts = [f"127.0.0.1:{free_port()}" for _ in range(workers)]
    started = time.perf_counter()
    processes = []
    for index in range(workers):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        if workers > 1:
            task = {"type": "worker", "index": index}
            env["TF_CONFIG"] = json.dumps({"cluster": {"worker": hosts}, "task": task})
        command = [sys.executable, "-m", "model.train", *flags, "--output", str(out / str(index))]
        command += ["--distributed"] if distributed else []
        processes.append(
            subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,  # the log: one line an epoch
                text=True,
            )
        )
    # One worker's pipe left unread could fill and stall it (and so the other).
    with ThreadPoolExecutor(len(processes)) as pool:
        outputs = list(pool.map(lambda p: p.communicate()[0], processes))
    seconds = time.perf_counter() - started
    if any(p.returncode for p in processes):
        raise SystemExit(f"a worker failed: {[p.returncode for p in processes]}\n{outputs[0]}")
    (rate,) = re.findall(r"\(([\d.]+) training images/s", outputs[0])
    threads = [[int(n) for n in re.findall(r"; (\d+) threads$", text, re.M)] for text in outputs]
    return Run(float(rate), seconds, threads)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--per-class", type=int, default=400)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument(
        "--threads",
        action="store_true",
        help="only the two workers; print each one's threads after every epoch",
    )
    args = p.parse_args()
    flags = ["--per-class", str(args.per_class), "--epochs", str(args.epochs)]
    flags += ["--verbose", "0", "--name", "bench"]
    if args.threads:
        return threads_table(args, flags)
    with tempfile.TemporaryDirectory() as scratch:
        rows = [
            ("model.fit, 1 process", run(1, flags, False, Path(scratch) / "fit")),
            ("--distributed, 1 worker", run(1, flags, True, Path(scratch) / "one")),
            ("--distributed, 2 workers", run(2, flags, True, Path(scratch) / "two")),
        ]
    print(
        f"vgg-mini, synthetic {args.per_class} a class, {args.epochs} epochs, "
        f"{os.cpu_count()} cores"
    )
    print("| run | training images/s | wall time |")
    print("|---|---|---|")
    for name, result in rows:
        print(f"| {name} | {result.images_per_s:.0f} | {result.seconds:.0f} s |")
    return 0


def threads_table(args: argparse.Namespace, flags: list[str]) -> int:
    """Two workers, `args.epochs` epochs: threads after each epoch; 1 when they grew."""
    with tempfile.TemporaryDirectory() as scratch:
        # A tiny network: the epochs (50 steps each at the least) are what counts here.
        tiny = ["--input-size", "16", "--width", "0.5", "--batch-size", "8", "--no-augment"]
        result = run(2, flags + tiny, True, Path(scratch))
    print(
        f"vgg-mini (16 px, width 0.5), synthetic {args.per_class} a class, 2 workers, "
        f"{args.epochs} epochs, {result.seconds:.0f} s, {os.cpu_count()} cores"
    )
    print("| epoch | worker 0 threads | worker 1 threads |")
    print("|---|---|---|")
    for epoch, counts in enumerate(zip(*result.threads, strict=True), start=1):
        print(f"| {epoch} | {' | '.join(map(str, counts))} |")
    # The first epoch starts pools that then stay; growth after it is a leak.
    grew = [max(t[1:], default=0) - min(t[1:], default=0) for t in result.threads]
    print(f"growth after epoch 1: {grew[0]} and {grew[1]} threads")
    return 1 if max(grew) > 10 else 0


if __name__ == "__main__":
    sys.exit(main())
