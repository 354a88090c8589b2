"""Engine "local": the SavedModel in this process, behind the server's own core.

The server's validation, batcher and model runtime run here, so --local rows
equal the server's answers without a server. `_embedded` is the one place this
engine touches the server's code; it is imported there, so the other engines
never load TensorFlow or the server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from tqdm import tqdm

from vggclient.batch.engine import answer, refusal
from vggclient.batch.files import read_image_file
from vggclient.batch.output import Output
from vggclient.batch.rows import Row, key
from vggclient.client import Classification, ImageError

Classify = Callable[[bytes], Awaitable[Classification | ImageError]]


def run(args: argparse.Namespace, todo: list[Path], output: Output, progress: tqdm) -> int:
    """Classifies `todo` in this process; returns 0 (every image gets a row)."""
    asyncio.run(_classify_all(args, todo, output, progress))
    return 0


async def _classify_all(
    args: argparse.Namespace, todo: list[Path], output: Output, progress: tqdm
) -> None:
    async with _embedded(args.model, args.batch_size, args.top_k) as classify:
        window = asyncio.Semaphore(args.window)

        async def one(path: Path) -> None:
            try:
                data = await asyncio.to_thread(read_image_file, path)
                # Unreadable: the reason is the row.
                outcome = data if isinstance(data, str) else await classify(data)
                output.write(Row.of(key(path), outcome))
                progress.update()
            finally:
                window.release()

        tasks: set[asyncio.Task[None]] = set()
        for path in todo:
            await window.acquire()
            task = asyncio.create_task(one(path))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)


@contextlib.asynccontextmanager
async def _embedded(model_dir: str, batch_size: int, top_k: int) -> AsyncIterator[Classify]:
    """The server's core (validation, batcher, runtime) over the newest version under
    `model_dir`, as a function from image bytes to the client's answer."""
    from service.core import (
        IN_PROCESS,
        CoreOptions,
        Encoded,
        RequestContext,
        ServiceError,
        build_core,
    )

    core = build_core(CoreOptions(model_dir=model_dir, max_batch_size=batch_size))
    await core.start()

    async def classify(data: bytes) -> Classification | ImageError:
        try:
            prediction = await core.classify(RequestContext(IN_PROCESS, "Classify"), Encoded(data))
        except ServiceError as exc:
            return refusal(exc.code, exc.message)
        return answer(prediction.top(top_k), prediction.model_name, prediction.version)

    try:
        yield classify
    finally:
        await core.close()
