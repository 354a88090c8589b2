"""Training speed on 1 and 2 workers of `model.train --distributed`, on this machine.

    .venv/bin/python scripts/train_workers_bench.py
    .venv/bin/python scripts/train_workers_bench.py --per-class 400 --epochs 2

Runs the same training (vgg-mini on the synthetic set, the plan's per-replica
batch) as: `model.train` without --distributed (Keras's fit), one
--distributed worker without TF_CONFIG, and two --distributed workers on
loopback ports (both processes on this machine, sharing its cores). Prints the
training images/s each run reports (the whole cluster's, epochs only) and the
wall time of the command (of the slower worker). Two workers on one machine
measure the cost of the all-reduce and of sharing cores, not a speed-up: that
needs a machine (or GPU) per worker.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(workers: int, flags: list[str], distributed: bool, out: Path) -> tuple[float, float]:
    """(training images/s the chief reports, wall seconds until every worker ended)."""
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
            subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        )
    outputs = [p.communicate()[0] for p in processes]
    seconds = time.perf_counter() - started
    if any(p.returncode for p in processes):
        raise SystemExit(f"a worker failed: {[p.returncode for p in processes]}\n{outputs[0]}")
    (rate,) = re.findall(r"\(([\d.]+) training images/s", outputs[0])
    return float(rate), seconds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--per-class", type=int, default=400)
    p.add_argument("--epochs", type=int, default=2)
    args = p.parse_args()
    flags = ["--per-class", str(args.per_class), "--epochs", str(args.epochs)]
    flags += ["--verbose", "0", "--name", "bench"]
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
    for name, (rate, seconds) in rows:
        print(f"| {name} | {rate:.0f} | {seconds:.0f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
