"""Engine "ray": batch inference on Ray Data (`python -m vggclient.batch ... --engine ray`).

The same inputs, flags and rows as the other engines (vggclient.batch.cli lists
the images, recovers the output file and writes every row); here Ray runs the
work, on this machine or across a cluster (--ray-address):

    paths --from_items--> read_files (Ray tasks: bytes, or why not)
          --map_batches--> Classifier (Ray actors, --ray-actors of them, each
                           loading the SavedModel once and calling its
                           serving_default through the server's model runtime)
          --iter_batches--> this process: one row per image, appended and flushed

Rows are written by this process only, through the same `Output` as the other
engines, as Ray streams the results back. So a killed job resumes like any
other: the rerun skips every image with a row, and never writes a second one.
A kill loses only the blocks in flight (blocks are a few batches each).

A bad file becomes an error row: unreadable files at the read stage; bad
images in the actor, by the server's own header check and by the model
runtime's split of a failed batch (the other images of the batch still get
their answers). `_embedded` is the one place this engine touches the server's
code, and only actors call it: the driver never loads the model.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from model import layout
from vggclient.batch.engine import EngineError, answer, refusal
from vggclient.batch.files import read_image_file
from vggclient.batch.output import Output
from vggclient.batch.rows import Row, key
from vggclient.client import Classification, ImageError

# A block is this many batches: a kill loses at most the blocks in flight, and
# a million images are still a manageable number of blocks.
BATCHES_PER_BLOCK = 4
MAX_BLOCKS = 20_000

ClassifyBatch = Callable[[list[bytes]], list[Classification | ImageError]]


def read_files(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Ray task: each path's bytes, or (in `error`) why the file cannot be read."""
    data, errors = [], []
    for path in batch["path"]:
        got = read_image_file(Path(path))
        data.append(b"" if isinstance(got, str) else got)
        errors.append(got if isinstance(got, str) else "")
    return {
        "path": batch["path"],
        "data": np.array(data, dtype=object),
        "error": np.array(errors, dtype=object),
    }


class Classifier:
    """Ray actor: one SavedModel load, then one row (as JSON) per image of each batch."""

    def __init__(self, version_dir: str, name: str, top_k: int, batch_size: int = 32) -> None:
        self.classify = _embedded(version_dir, name, top_k, batch_size)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [str(p) for p in batch["path"]]
        # The read stage's reason where a file could not be read, else its answer.
        outcomes: list[Classification | ImageError | str] = [str(e) for e in batch["error"]]
        readable = [i for i, error in enumerate(outcomes) if not error]
        answers = self.classify([bytes(batch["data"][i]) for i in readable])
        for i, outcome in zip(readable, answers, strict=True):
            outcomes[i] = outcome
        rows = [Row.of(path, outcome) for path, outcome in zip(paths, outcomes, strict=True)]
        return {"row": np.array([json.dumps(asdict(row)) for row in rows], dtype=object)}


def _embedded(version_dir: str, name: str, top_k: int, batch_size: int) -> ClassifyBatch:
    """The server's core (validation, batcher, runtime) serving exactly `version_dir`,
    as a function from a batch of image bytes to the client's answers.

    The actor is synchronous; the core runs on an event loop of its own, and a
    Ray batch is one `classify_each` call, so its images share model calls.
    """
    import asyncio

    from service.core import (  # TensorFlow: in the actor, not the driver
        IN_PROCESS,
        CoreOptions,
        Encoded,
        RequestContext,
        ServiceError,
        build_core,
    )

    folder = Path(version_dir)
    options = CoreOptions(
        model_dir=str(folder.parent),
        model_name=name,
        versions=folder.name,  # this version only, pinned
        max_batch_size=batch_size,
        max_queue=max(1024, batch_size),
    )
    loop = asyncio.new_event_loop()
    core = build_core(options)
    loop.run_until_complete(core.start())

    def classify(batch: list[bytes]) -> list[Classification | ImageError]:
        if not batch:
            return []
        ctx = RequestContext(IN_PROCESS, "Classify")
        outcomes = loop.run_until_complete(
            core.classify_each(ctx, [Encoded(data) for data in batch])
        )
        return [
            refusal(o.code, o.message)
            if isinstance(o, ServiceError)
            else answer(o.top(top_k), o.model_name, o.version)
            for o in outcomes
        ]

    return classify


def start(address: str | None) -> bool:
    """Connects to Ray; returns whether this call started it (and so must stop it)."""
    if address is None and not os.environ.get("RAY_ADDRESS"):
        # A local instance for this run: on loopback (Ray otherwise advertises and
        # listens on the machine's interface address), without usage reports or a
        # dashboard. Ray reads the first variable when it is imported: set first.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():  # a caller (a notebook, a test) already joined a cluster
        return False
    if address is None:
        ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    else:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    return True


def run(args: argparse.Namespace, todo: list[Path], output: Output, progress: tqdm) -> int:
    """Classifies `todo` with Ray and writes a row for each; returns 0 (no image
    is left without an answer: a failure of Ray itself raises).

    Raises:
        EngineError: Ray is not installed, or `args.model` holds no version.
    """
    # Looked up, not imported: Ray must be imported after start() sets its variables.
    if importlib.util.find_spec("ray") is None:
        raise EngineError("--engine ray needs Ray: pip install -r requirements-ray.txt")
    version_dir = layout.latest_version_dir(args.model)
    if version_dir is None:
        raise EngineError(f"no exported version under {args.model}; run `make train` first")
    if not todo:
        return 0
    started = start(args.ray_address)
    import ray

    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # ours counts rows as they are written
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # a plan and timing per run
        rows_per_block = max(args.batch_size * BATCHES_PER_BLOCK, math.ceil(len(todo) / MAX_BLOCKS))
        paths = ray.data.from_items(
            [{"path": key(p)} for p in todo],
            override_num_blocks=math.ceil(len(todo) / rows_per_block),
        )
        answered = paths.map_batches(
            read_files, batch_size=args.batch_size, batch_format="numpy"
        ).map_batches(
            Classifier,
            # The model's name is its folder's, whether --model names it or a version in it.
            fn_constructor_args=(
                str(version_dir),
                version_dir.resolve().parent.name,
                args.top_k,
                args.batch_size,
            ),
            batch_size=args.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=args.ray_actors),
            num_gpus=args.ray_gpus_per_actor or None,
        )
        for batch in answered.iter_batches(batch_size=None, batch_format="numpy"):
            for text in batch["row"]:
                output.write(Row(**json.loads(text)))
                progress.update()
    finally:
        if started:
            ray.shutdown()
    return 0
