"""Batch inference on Ray Data: `python -m vggclient.batch ... --engine ray`.

The same inputs, flags and rows as the other engines (vggclient.batch lists the
images, recovers the output file and writes every row); here Ray runs the
work, on this machine or across a cluster (--ray-address):

    paths --from_items--> read_files (Ray tasks: bytes, or why not)
          --map_batches--> Classifier (Ray actors, --ray-actors of them, each
                           loading the SavedModel once and calling its
                           serving_default through service.core.runtime)
          --iter_batches--> this process: one row per image, appended and flushed

Rows are written by this process only, through the same `Output` as the other
engines, as Ray streams the results back. So a killed job resumes like any
other: the rerun skips every image with a row, and never writes a second one.
A kill loses only the blocks in flight (blocks are a few batches each).

A bad file becomes an error row: unreadable files at the read stage; bad
images in the actor, by the server's own header check and by the model
runtime's split of a failed batch (the other images of the batch still get
their answers).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from model import layout
from service.core import images
from service.core.errors import ServiceError
from service.settings import Settings
from vggclient.batch import EngineError, Output, Row, classified, key, read_image_file

log = logging.getLogger("vggclient.batch")

# A block is this many batches: a kill loses at most the blocks in flight, and
# a million images are still a manageable number of blocks.
BATCHES_PER_BLOCK = 4
MAX_BLOCKS = 20_000


def latest_version(model_dir: str) -> Path:
    """The newest complete version under `model_dir` (what --local serves)."""
    versions = layout.list_versions(model_dir)
    if not versions:
        raise EngineError(f"no exported version under {model_dir}; run `make train` first")
    return Path(model_dir) / str(versions[-1])


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

    def __init__(self, version_dir: str, name: str, top_k: int) -> None:
        from service.core.runtime import LoadedModel  # TensorFlow: in the actor, not the driver

        self.model = LoadedModel(name, Path(version_dir))
        defaults = Settings(model_dir=version_dir)  # the limits the server and --local apply
        self.limits = images.Limits(defaults.max_message_bytes, defaults.max_image_pixels)
        self.top_k = top_k

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from service.core.repository import Prediction

        paths = [str(p) for p in batch["path"]]
        rows: list[Row | None] = [None] * len(paths)
        valid: list[tuple[int, images.EncodedImage]] = []
        for i, (data, error) in enumerate(zip(batch["data"], batch["error"], strict=True)):
            if error:
                rows[i] = classified(paths[i], str(error), self.top_k)
                continue
            try:
                valid.append((i, images.encoded(bytes(data), self.limits)))
            except ServiceError as exc:
                rows[i] = classified(paths[i], exc, self.top_k)
        outcomes = self.model.predict([image for _, image in valid]) if valid else []
        for (i, _), outcome in zip(valid, outcomes, strict=True):
            result = (
                outcome
                if isinstance(outcome, ServiceError)
                else Prediction(outcome, self.model.labels, self.model.name, self.model.version)
            )
            rows[i] = classified(paths[i], result, self.top_k)
        texts = [json.dumps(asdict(row)) for row in rows if row is not None]
        assert len(texts) == len(paths), "every image has a row"
        return {"row": np.array(texts, dtype=object)}


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
    is left without an answer: a failure of Ray itself raises)."""
    version_dir = latest_version(args.model)
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
            fn_constructor_args=(str(version_dir), Path(args.model).resolve().name, args.top_k),
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
