"""The batch tool's engines on the same images: --local, --engine ray, the server.

    .venv/bin/python scripts/batch_engines_bench.py --model models/vgg-mini
    .venv/bin/python scripts/batch_engines_bench.py --model models/vgg-mini --images 5000

Writes --images PNG files of 64x64 (random pixels, seed 0) once, then runs
`python -m vggclient.batch` over them once per engine, each into a fresh output
file, and watches that file from outside (every 20 ms): the whole command's
time, the time to its first row (start-up: TensorFlow, the model, Ray), and
images/s from the first row to the last (the rate a large job settles at).
The server is started first and waited for (its start-up is not in its row,
as for a server that is already running). Then every engine's rows are
compared with --local's: labels, errors, and the largest probability
difference. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
SIDE = 64


def write_images(folder: Path, count: int) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        path = folder / f"{i:06d}.png"
        pixels = rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
        if not path.exists():
            Image.fromarray(pixels).save(path)


def watch(command: list[str], out: Path, expected: int) -> dict[str, float]:
    """Runs `command`; the times of its first and last rows and its end."""
    started = time.perf_counter()
    first = last = 0.0
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    rows = 0
    while process.poll() is None or rows < expected:
        rows = out.read_bytes().count(b"\n") - (out.suffix == ".csv") if out.exists() else 0
        now = time.perf_counter() - started
        if rows and not first:
            first = now
        if rows >= expected and not last:
            last = now
        if process.poll() is not None and rows < expected:
            break
        time.sleep(0.02)  # a benchmark's sampling interval, not a wait for readiness
    _, err = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{err[-2000:]}")
    return {"whole": time.perf_counter() - started, "first": first, "last": last or first}


def rows(path: Path) -> dict[str, dict]:
    return {row["path"]: row for row in map(json.loads, path.read_text().splitlines())}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="models/<name>")
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--work", default="/tmp/vggserve-batch-bench")
    p.add_argument("--port", type=int, default=18571)
    args = p.parse_args()
    work = Path(args.work)
    photos = work / f"photos-{args.images}"
    write_images(photos, args.images)
    batch = [sys.executable, "-m", "vggclient.batch", str(photos)]
    engines = {
        "--local": ["--local", args.model],
        "--engine ray (1 actor)": ["--engine", "ray", "--model", args.model],
        "--engine ray (2 actors)": ["--engine", "ray", "--model", args.model, "--ray-actors", "2"],
        "server (ClassifyStream)": ["--target", f"127.0.0.1:{args.port}"],
    }
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    serve = ["--model-dir", args.model, "--port", str(args.port), "--metrics-port", "0"]
    server = subprocess.Popen(
        [sys.executable, "-m", "service", *serve],
        cwd=ROOT,
        env=env,
        stderr=subprocess.DEVNULL,
    )
    results = {}
    try:
        from vggclient.client import Client

        with Client(f"127.0.0.1:{args.port}") as client:
            client.wait_until_serving(timeout=300)
        for name, flags in engines.items():
            out = work / f"{name.split()[0].strip('-')}-{len(results)}.jsonl"
            out.unlink(missing_ok=True)
            results[name] = (watch([*batch, "--out", str(out), *flags], out, args.images), out)
    finally:
        server.terminate()
        server.wait()
    reference = rows(results["--local"][1])
    print(f"{args.images} PNG images of {SIDE}x{SIDE}, model {args.model}, {os.cpu_count()} cores")
    print(
        "| engine | whole command | to the first row | images/s after the first row "
        "| same labels as --local | largest probability difference |"
    )
    print("|---|---|---|---|---|---|")
    for name, (times, out) in results.items():
        got = rows(out)
        same = sum(
            got[k]["label"] == r["label"] and got[k]["error"] == r["error"]
            for k, r in reference.items()
        )
        diff = max(
            abs(float(got[k]["probability"] or 0) - float(r["probability"] or 0))
            for k, r in reference.items()
        )
        rate = (
            (args.images - 1) / (times["last"] - times["first"])
            if times["last"] > times["first"]
            else 0
        )
        print(
            f"| {name} | {times['whole']:.1f} s | {times['first']:.1f} s | {rate:.0f} "
            f"| {same}/{len(reference)} | {diff:.1g} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
