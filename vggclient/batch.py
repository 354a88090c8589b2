"""Batch inference over files and folders: `python -m vggclient.batch`.

    python -m vggclient.batch photos/ more.jpg --out predictions.csv
    python -m vggclient.batch photos/ --out predictions.jsonl --local models/vgg-mini
    python -m vggclient.batch photos/ --out predictions.jsonl --engine ray --model models/vgg-mini

Streams images through ClassifyStream with a bounded window of images in
flight, so memory stays flat however large the folder. Rows are appended and
flushed as answers arrive; re-running with the same --out skips the images
already written (a kill loses at most the window in flight). A file that
cannot be read or is refused by the server (a bad image) becomes an error row
and the run goes on. Answers that say "not now" (UNAVAILABLE, RESOURCE_EXHAUSTED,
DEADLINE_EXCEEDED: a server restarting, draining or shedding load) never
become rows: those images are resent after a backoff, and a rerun retries
such rows written by older versions of this tool. Exit status: 0 when every
image has an ok row, 1 when this run wrote an error row, 2 when some image
has no answer (the server could not be reached, or --max-retries consecutive
attempts made no progress). --local runs the SavedModel in this process with
the server's own batching, no server needed. --engine ray runs the SavedModel
in Ray actors fed by Ray Data (vggclient.batch_ray), on this machine or a cluster
(--ray-address); its rows are the same and go through the same output file.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import grpc
from tqdm import tqdm

from model.data import IMAGE_SUFFIXES
from vggclient.cli.connection import add_connection_flags, client_from_args
from vggclient.client import Classification, ClassScore, Client, ImageError

if TYPE_CHECKING:  # the server's core: only the in-process engines load it
    from service.core.errors import ServiceError
    from service.core.repository import Prediction

FIELDS = ("path", "status", "label", "probability", "top_k", "model", "version", "error")

# Answers that say "not now" rather than "this image is bad": never final.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)
# Room for the request's own fields around the image bytes.
MESSAGE_OVERHEAD = 1024
# A whole stream may also end CANCELLED when a draining server runs out of time.
RECONNECT = RETRYABLE | {grpc.StatusCode.CANCELLED}

log = logging.getLogger("vggclient.batch")


@dataclass
class Row:
    path: str
    status: str  # "ok" or "error"
    label: str = ""
    probability: float | str = ""
    top_k: str = ""  # JSON list of [label, probability]
    model: str = ""
    version: int | str = ""
    error: str = ""

    @classmethod
    def of(cls, path: str, outcome: Classification | ImageError | str) -> Row:
        if isinstance(outcome, Classification):
            best = outcome.classes[0]
            top = [[c.label, round(c.probability, 6)] for c in outcome.classes]
            return cls(
                path,
                "ok",
                best.label,
                round(best.probability, 6),
                json.dumps(top),
                outcome.model_name,
                outcome.model_version,
            )
        message = outcome if isinstance(outcome, str) else f"{outcome.code.name}: {outcome.message}"
        return cls(path, "error", error=message)


def classified(path: str, result: Prediction | ServiceError | str, top_k: int) -> Row:
    """The row of one image the model answered in this process (--local, Ray actors):
    the classes, the core's refusal, or why the file could not be read."""
    from service.core.errors import ServiceError

    outcome: Classification | ImageError | str
    if isinstance(result, ServiceError):
        outcome = ImageError(grpc.StatusCode[result.code], result.message)
    elif isinstance(result, str):
        outcome = result
    else:
        outcome = Classification(
            [ClassScore(i, label, p) for i, label, p in result.top(top_k)],
            result.model_name,
            result.version,
        )
    return Row.of(path, outcome)


def key(path: Path | str) -> str:
    """The name a row is kept under: absolute and normalised, so that `photos/a.png`
    and `/home/me/photos/a.png` are one image. Symlinks are not followed: two
    names for one file are two rows, as the user listed two files."""
    return os.path.abspath(path)


def is_retryable(row: dict[str, object]) -> bool:
    """An error row that a retry may turn into an answer (older tools wrote them)."""
    error = str(row.get("error") or "")
    return row.get("status") == "error" and error.split(":", 1)[0] in {
        code.name for code in RETRYABLE
    }


def find_images(inputs: Iterable[str]) -> Iterator[Path]:
    """Files as given, and image files under folders (recursively, sorted)."""
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        else:
            yield path  # a missing file becomes an error row


class Output:
    """Appends rows to a CSV or JSONL file, flushing each; knows what is done."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.jsonl = path.suffix.lower() in {".jsonl", ".ndjson"}
        self.done = self._recover()
        self.written = {"ok": 0, "error": 0}
        new = not path.exists() or path.stat().st_size == 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = path.open("a", newline="", encoding="utf-8")
        self._csv = csv.DictWriter(self._file, FIELDS) if not self.jsonl else None
        self._lock = threading.Lock()  # the request thread writes unreadable-file rows
        if new and self._csv is not None:
            self._csv.writeheader()
            self._file.flush()

    def _recover(self) -> set[str]:
        """Paths already answered. Drops a last line cut short by a kill, and rows
        whose error was only "not now" (so they are retried), rewriting the file
        atomically when either is found."""
        if not self.path.exists():
            return set()
        data = self.path.read_bytes()
        cut = bool(data) and not data.endswith(b"\n")
        if cut:
            data = data[: data.rfind(b"\n") + 1]
        text = data.decode("utf-8")
        if self.jsonl:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            rows = list(csv.DictReader(io.StringIO(text)))
        kept = [row for row in rows if not is_retryable(row)]
        if cut or len(kept) < len(rows):
            self._rewrite(kept)
        return {key(row["path"]) for row in kept}

    def _rewrite(self, rows: list[dict[str, object]]) -> None:
        # Temp file + rename: a kill during the rewrite leaves the old file whole.
        temp = self.path.with_name(f".{self.path.name}.tmp")
        with temp.open("w", newline="", encoding="utf-8") as handle:
            if self.jsonl:
                handle.writelines(json.dumps(row) + "\n" for row in rows)
            else:
                writer = csv.DictWriter(handle, FIELDS, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)
        os.replace(temp, self.path)

    def count(self) -> int:
        with self._lock:
            return self.written["ok"] + self.written["error"]

    def write(self, row: Row) -> None:
        values = {name: getattr(row, name) for name in FIELDS}
        with self._lock:
            if row.path in self.done:  # never two rows for one image
                return
            if self._csv is not None:
                self._csv.writerow(values)
            else:
                self._file.write(json.dumps(values) + "\n")
            self._file.flush()
            self.done.add(row.path)
            self.written[row.status] += 1

    def close(self) -> None:
        self._file.close()


def read_image_file(path: Path) -> bytes | str:
    """The file's bytes, or why it cannot be read (an error row's text)."""
    try:
        return path.read_bytes()
    except OSError as exc:
        return f"cannot read file: {exc.strerror or exc}"


def run_remote(args: argparse.Namespace, todo: list[Path], output: Output, progress: tqdm) -> int:
    """Streams `todo` to the server until every image has a row; returns how many
    have none when --max-retries consecutive attempts made no progress.

    An attempt is one stream over the images without a row. It ends early when
    the server goes away (a restart or drain), and images answered "not now"
    get no row; both are resent after a backoff. The budget counts attempts
    in a row that wrote nothing, so a long job survives any number of restarts
    as long as each one lets it move on.
    """
    failures = 0
    window = args.window
    with client_from_args(args, retries=0, max_message_bytes=args.max_message_bytes) as client:
        while True:
            remaining = [p for p in todo if key(p) not in output.done]
            if not remaining:
                return 0
            before = output.count()
            try:
                refused = _stream(
                    client, remaining, output, progress, window, args.top_k, args.max_message_bytes
                )
                problem = ", ".join(f"{n} answered {code.name}" for code, n in refused.items())
            except grpc.RpcError as exc:
                if exc.code() not in RECONNECT:
                    raise
                refused = {}
                problem = f"{exc.code().name}: {exc.details()}"
            left = sum(key(p) not in output.done for p in todo)
            if not left:
                return 0
            failures = 0 if output.count() > before else failures + 1
            if failures > args.max_retries:
                log.error(
                    "%d image(s) have no answer after %d attempts in a row without progress "
                    "(last: %s); rerun the same command to retry them",
                    left,
                    failures,
                    problem,
                )
                return left
            if grpc.StatusCode.RESOURCE_EXHAUSTED in refused and window > 1:
                window = max(1, window // 2)  # the server sheds load: send less at once
            delay = min(args.backoff * 2 ** max(failures - 1, 0), 30.0)
            log.warning(
                "%d image(s) left (%s); retrying in %.1f s (%d/%d attempts without progress)",
                left,
                problem,
                delay,
                failures,
                args.max_retries,
            )
            time.sleep(delay)  # backoff before resending


def _stream(
    client: Client,
    paths: list[Path],
    output: Output,
    progress: tqdm,
    window_size: int,
    top_k: int,
    max_message_bytes: int,
) -> dict[grpc.StatusCode, int]:
    """One stream over `paths`; returns how many images were answered "not now"."""
    window = threading.Semaphore(window_size)
    finished = threading.Event()
    order: list[str] = []  # classify_many numbers images in the order they are sent
    refused: dict[grpc.StatusCode, int] = {}

    def images() -> Iterator[bytes]:
        for path in paths:
            data = read_image_file(path)
            if not isinstance(data, str) and len(data) + MESSAGE_OVERHEAD > max_message_bytes:
                # Sent, it would break the whole stream (RESOURCE_EXHAUSTED) every time.
                data = f"file is {len(data)} bytes: over --max-message-bytes {max_message_bytes}"
            if isinstance(data, str):  # unreadable or too large: an error row, nothing to send
                output.write(Row.of(key(path), data))
                progress.update()
                continue
            while not window.acquire(timeout=0.5):  # at most window_size in flight
                if finished.is_set():
                    return
            order.append(key(path))
            yield data

    try:
        for index, outcome in client.classify_many(images(), top_k=top_k):
            window.release()
            if isinstance(outcome, ImageError) and outcome.code in RETRYABLE:
                refused[outcome.code] = refused.get(outcome.code, 0) + 1
                continue  # no row: resent by the next attempt
            output.write(Row.of(order[index], outcome))
            progress.update()
    finally:
        finished.set()  # lets the request thread stop if the call broke
    return refused


def run_local(args: argparse.Namespace, todo: list[Path], output: Output, progress: tqdm) -> int:
    asyncio.run(_local(args, todo, output, progress))
    return 0


async def _local(
    args: argparse.Namespace, todo: list[Path], output: Output, progress: tqdm
) -> None:
    """The server's own core (validation, batcher, runtime) in this process."""
    from service.core.classify import Core, Encoded
    from service.core.errors import ServiceError
    from service.core.images import Limits
    from service.core.metrics import Metrics
    from service.core.protocols import IN_PROCESS
    from service.core.repository import ModelRepository
    from service.core.watcher import VersionWatcher
    from service.settings import Settings

    settings = Settings(
        model_dir=args.model, max_batch_size=args.batch_size, poll_interval_s=0, metrics_port=-1
    )
    metrics = Metrics()
    repository = ModelRepository(settings, metrics)
    await VersionWatcher(repository, settings, metrics).load()
    core = Core(repository, metrics, Limits(settings.max_message_bytes, settings.max_image_pixels))
    window = asyncio.Semaphore(args.window)

    async def one(path: Path) -> None:
        try:
            data = await asyncio.to_thread(read_image_file, path)
            result: Prediction | ServiceError | str
            if isinstance(data, str):
                result = data  # unreadable: the reason is the row
            else:
                try:
                    result = await core.classify(IN_PROCESS, Encoded(data))
                except ServiceError as exc:
                    result = exc
            output.write(classified(key(path), result, args.top_k))
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
    await repository.close()


class EngineError(Exception):
    """An engine cannot run (Ray missing, no model version); the message says why."""


def run_ray(args: argparse.Namespace, todo: list[Path], output: Output, progress: tqdm) -> int:
    try:
        from vggclient import batch_ray
    except ImportError as exc:
        raise EngineError(
            f"--engine ray needs Ray ({exc}): pip install -r requirements-ray.txt"
        ) from exc
    return batch_ray.run(args, todo, output, progress)


ENGINES = {"server": run_remote, "local": run_local, "ray": run_ray}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m vggclient.batch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", help="image files and folders (searched recursively)")
    p.add_argument("--out", required=True, help="predictions file: .csv, or .jsonl")
    p.add_argument("--target", default="127.0.0.1:8500", help="server host:port")
    p.add_argument(
        "--engine",
        choices=["server", "local", "ray"],
        help="who runs the model: the server at --target (default), this process "
        "(--local), or Ray actors (needs --model; see --ray-address)",
    )
    p.add_argument(
        "--model",
        metavar="MODEL_DIR",
        help="models/<name> for --engine local or ray (its latest version)",
    )
    p.add_argument(
        "--local",
        metavar="MODEL_DIR",
        help="run models/<name> in this process instead of calling a server "
        "(short for --engine local --model MODEL_DIR)",
    )
    p.add_argument("--top-k", type=int, default=5, help="classes per image (default: 5)")
    p.add_argument("--window", type=int, default=64, help="images in flight (default: 64)")
    p.add_argument(
        "--batch-size", type=int, default=32, help="--local, --engine ray: images per model call"
    )
    p.add_argument("--timeout", type=float, default=30.0, help="seconds for one-shot calls")
    p.add_argument(
        "--max-message-bytes",
        type=int,
        default=16 * 1024 * 1024,
        help="the server's --max-message-bytes (default: 16 MiB, its default); a larger "
        "file is an error row instead of a stream the server breaks off",
    )
    p.add_argument(
        "--max-retries",
        type=int,
        default=8,
        help="attempts in a row that may make no progress (server down, restarting or "
        "shedding load) before giving up (default: 8)",
    )
    p.add_argument(
        "--backoff", type=float, default=0.5, help="first retry delay in s, doubling (max 30)"
    )
    ray = p.add_argument_group("--engine ray")
    ray.add_argument(
        "--ray-address",
        help="join this Ray cluster (host:port, or 'auto'); default: start a local Ray "
        "instance on 127.0.0.1 for this run",
    )
    ray.add_argument(
        "--ray-actors", type=int, default=1, help="model actors, one model load each (default: 1)"
    )
    ray.add_argument(
        "--ray-gpus-per-actor", type=float, default=0.0, help="GPUs each actor asks Ray for"
    )
    p.add_argument(
        "--explain-dir",
        metavar="DIR",
        help="also write a Grad-CAM overlay PNG per answered image into DIR "
        "(vggclient.batch_explain; needs --engine server)",
    )
    add_connection_flags(p)
    args = p.parse_args(argv)
    if args.local:
        if args.engine not in (None, "local") or (args.model and args.model != args.local):
            p.error("--local MODEL_DIR is --engine local --model MODEL_DIR: give one of them")
        args.engine, args.model = "local", args.local
    args.engine = args.engine or "server"
    if args.explain_dir and args.engine != "server":
        p.error(f"--explain-dir needs a server (Explain), not --engine {args.engine}")
    if args.engine != "server" and not args.model:
        p.error(f"--engine {args.engine} needs --model MODEL_DIR (models/<name>)")
    for flag in ("batch_size", "ray_actors", "top_k", "window"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    output = Output(Path(args.out))
    found = list(find_images(args.inputs))
    todo = [p for p in found if key(p) not in output.done]
    skipped = len(found) - len(todo)
    if skipped:
        print(
            f"resuming: {skipped} of {len(found)} images are already in {args.out}", file=sys.stderr
        )
    started = time.perf_counter()
    progress = tqdm(total=len(todo), unit="img", desc="classifying", smoothing=0.1)
    try:
        unanswered = ENGINES[args.engine](args, todo, output, progress)
    except grpc.RpcError as exc:
        print(f"error: {args.target}: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 2
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:  # token or TLS files, a token without TLS
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        progress.close()
        output.close()
    seconds = time.perf_counter() - started
    if args.explain_dir and not unanswered:
        from vggclient.batch_explain import write_overlays

        try:
            drawn, undrawn = write_overlays(args, [key(p) for p in found if key(p) in output.done])
        except grpc.RpcError as exc:
            print(f"error: {args.target}: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 2
        print(
            f"overlays: {drawn} written, {undrawn} failed, in {args.explain_dir}", file=sys.stderr
        )
    ok, failed = output.written["ok"], output.written["error"]
    print(
        f"done: {ok} classified, {failed} failed, {skipped} already done, "
        f"{unanswered} without an answer; "
        f"{seconds:.1f} s, {(ok + failed) / seconds if seconds else 0:.1f} images/s; "
        f"rows in {args.out}",
        file=sys.stderr,
    )
    if unanswered:
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
