"""Server memory around a burst of large Explain (or Classify) calls, one run.

    python -m loadtest.explain_memory MODEL_DIR [--calls 8] [--size 4000x3000]
        [--env MALLOC_ARENA_MAX=2] [-- SERVER FLAGS...]

Starts a local server on MODEL_DIR (its own process), reads its resident
memory (VmRSS, /proc) once it has answered one small Explain (so graphs are
traced), sends `--calls` concurrent Explain calls of one noisy JPEG of
`--size`, and reads VmRSS again when they have all been answered and again
`--settle` seconds later; VmHWM is the peak. Meanwhile one client thread
classifies a small image in a loop: its slowest call says how long Explain
held Classify back. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
from PIL import Image

from loadtest.serverproc import local_server
from vggclient.client import Client
from vggclient.explain import explain

# Room for a 4000x3000 overlay drawn at the image's own size (36 MB raw), so the
# unbounded baseline finishes its work instead of failing on the answer's size.
ANSWER_BYTES = 256 * 1024 * 1024


def noisy_jpeg(width: int, height: int, quality: int = 75) -> bytes:
    """Uniform noise compresses worst: the largest answer a file of this size can ask for."""
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def status_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of `pid`, in KiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.explain_memory")
    p.add_argument("model_dir")
    p.add_argument("--calls", type=int, default=8, help="concurrent Explain calls")
    p.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT of the noisy JPEG")
    p.add_argument("--settle", type=float, default=5.0, help="seconds before the last read")
    p.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server")
    p.add_argument("--bursts", type=int, default=1, help="bursts, one after another")
    p.add_argument(
        "--classify",
        action="store_true",
        help="burst Classify calls of the same image instead (what decoding alone keeps)",
    )
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    args = p.parse_args(argv[:split])
    args.server_args = argv[split + 1 :]  # extra server flags
    width, height = (int(v) for v in args.size.split("x"))
    image = noisy_jpeg(width, height)
    small = noisy_jpeg(64, 48)
    env = dict(pair.split("=", 1) for pair in args.env)
    flags = ["--max-message-bytes", str(ANSWER_BYTES), *args.server_args]
    with local_server(args.model_dir, flags, env=env) as server:
        pid = server.process.pid
        client = Client(server.target, timeout=300.0, retries=0, max_message_bytes=ANSWER_BYTES)
        with client:
            explain(client, small)
            before = status_kib(pid)["VmRSS"]
            done = threading.Event()
            slowest = [0.0]

            def classify_loop() -> None:
                while not done.is_set():
                    started = time.perf_counter()
                    client.classify(small)
                    slowest[0] = max(slowest[0], time.perf_counter() - started)

            def one(_: int) -> str:
                try:
                    if args.classify:
                        client.classify(image)
                        return "OK classified"
                    answer = explain(client, image)
                except grpc.RpcError as exc:
                    return f"{exc.code().name}: {exc.details()[:120]}"
                return f"OK overlay {len(answer.overlay_png)} B"

            watcher = threading.Thread(target=classify_loop, daemon=True)
            watcher.start()
            outcomes: Counter[str] = Counter()
            seconds, after = [], []
            for _ in range(args.bursts):
                started = time.perf_counter()
                with ThreadPoolExecutor(args.calls) as pool:
                    outcomes.update(pool.map(one, range(args.calls)))
                seconds.append(round(time.perf_counter() - started, 1))
                after.append(round(status_kib(pid)["VmRSS"] / 1024))
            done.set()
            watcher.join(timeout=60)
            time.sleep(args.settle)  # a benchmark's pause, not a wait for state
            settled = status_kib(pid)
    print(
        json.dumps(
            {
                "image": f"{width}x{height} noisy JPEG, {len(image)} B",
                "calls": args.calls,
                "method": "Classify" if args.classify else "Explain",
                "env": env,
                "server_args": args.server_args,
                "outcomes": dict(outcomes),
                "burst_s": seconds,
                "rss_before_mib": round(before / 1024),
                "rss_peak_mib": round(settled["VmHWM"] / 1024),
                "rss_after_each_burst_mib": after,
                "rss_settled_mib": round(settled["VmRSS"] / 1024),
                "slowest_classify_s": round(slowest[0], 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
