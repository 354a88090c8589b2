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
in Ray actors fed by Ray Data (vggclient.batch.ray), on this machine or a cluster
(--ray-address); its rows are the same and go through the same output file.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import grpc
from tqdm import tqdm

from vggclient.batch import local, server
from vggclient.batch import ray as ray_engine
from vggclient.batch.engine import Engine, EngineError
from vggclient.batch.files import find_images
from vggclient.batch.output import Output
from vggclient.batch.overlays import write_overlays
from vggclient.batch.rows import key
from vggclient.cli.connection import add_connection_flags

ENGINES: dict[str, Engine] = {"server": server.run, "local": local.run, "ray": ray_engine.run}


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
        "(vggclient.batch.overlays; needs --engine server)",
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
