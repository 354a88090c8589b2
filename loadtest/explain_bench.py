"""Explain vs Classify on one server, one run: `python -m loadtest.explain_bench MODEL_DIR [1,8]`.

A local server on MODEL_DIR; the closed-loop client (its own process) keeps C
requests in flight, Classify then Explain, at each level, on 128x128 JPEGs.
Prints one JSON line per run and the Explain/Classify ratios.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from loadtest import corpus
from loadtest.runner import closed_loop
from loadtest.serverproc import local_server


def main(argv: list[str]) -> int:
    model_dir, levels = argv[0], [int(c) for c in (argv[1] if len(argv) > 1 else "1,8").split(",")]
    with tempfile.TemporaryDirectory() as folder, local_server(model_dir) as server:
        images = Path(folder)
        for i, data in enumerate(corpus.fixed(32, 128)):
            (images / f"{i}.jpg").write_bytes(data)
        for c in levels:
            runs = {
                mode: closed_loop(server.target, images, c, mode, window=2.0, max_seconds=12.0)
                for mode in ("classify", "explain")
            }
            for run in runs.values():
                print(json.dumps(run))
            classify, explain = runs["classify"], runs["explain"]
            print(
                f"C={c}: explain/classify throughput "
                f"{explain['images_per_s'] / classify['images_per_s']:.2f}, "
                f"p50 {explain['p50_ms'] / classify['p50_ms']:.2f}x, "
                f"p99 {explain['p99_ms'] / classify['p99_ms']:.2f}x"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
