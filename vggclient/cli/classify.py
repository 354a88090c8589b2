"""`python -m vggclient.client IMAGE...`: classify image files with a vggserve server.

Files are read here and sent in ClassifyBatch requests that stay under
--max-message-bytes (vggclient.client.request_groups); a file that cannot be
read or is too large for any request is reported and the others go on.
--explain OUT_DIR writes Grad-CAM overlays instead (vggclient.cli.explain).
Exit status: 0 when every image was classified, 1 when some image failed,
2 when the server could not answer or a flag is wrong.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import grpc

from vggclient.cli.connection import add_connection_flags, client_from_args
from vggclient.cli.explain import write_overlays
from vggclient.client import Classification, ImageError, request_groups
from vggcommon import cli


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(
        prog="python -m vggclient.client",
        description="Classify image files with a vggserve server.",
    )
    parser.add_argument("images", nargs="+", help="JPEG, PNG, BMP or GIF files")
    parser.add_argument("--target", default="127.0.0.1:8500", help="server host:port")
    parser.add_argument(
        "--top-k", type=cli.at_least(1), default=5, help="classes per image (default: 5)"
    )
    parser.add_argument(
        "--timeout", type=cli.at_least(0.001, float), default=30.0, help="seconds per call"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--max-message-bytes",
        type=int,
        default=16 * 1024 * 1024,
        help="largest request sent; set it to the server's --max-message-bytes "
        "(default: 16 MiB, the server's default). Files are split into requests under it",
    )
    parser.add_argument(
        "--max-images", type=int, default=64, help="most images per request (default: 64)"
    )
    parser.add_argument(
        "--explain",
        metavar="OUT_DIR",
        help="write a Grad-CAM overlay PNG per image into OUT_DIR (vggclient.explain)",
    )
    add_connection_flags(parser)
    args = parser.parse_args(argv)
    if args.explain:
        return write_overlays(args)
    failed = 0
    readable: list[tuple[str, bytes]] = []
    for name in args.images:
        try:
            readable.append((name, Path(name).read_bytes()))
        except OSError as exc:
            failed += 1
            _print_error(name, f"cannot read file: {exc.strerror or exc}", args.json)
    groups = request_groups(
        [len(data) for _, data in readable], args.max_message_bytes, max(args.max_images, 1)
    )
    grouped = {index for group in groups for index in group}
    for index, (name, data) in enumerate(readable):
        if index not in grouped:
            failed += 1
            _print_error(
                name,
                f"file is {len(data)} bytes: too large for one request under "
                f"--max-message-bytes {args.max_message_bytes}",
                args.json,
            )
    if not groups:
        return 1
    outcomes: dict[int, Classification | ImageError] = {}
    try:
        with client_from_args(args, max_message_bytes=args.max_message_bytes) as client:
            for group in groups:
                answers = client.classify_batch([readable[i][1] for i in group], top_k=args.top_k)
                outcomes.update(zip(group, answers, strict=True))
    except grpc.RpcError as exc:
        print(f"error: {args.target}: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:  # token or TLS files, a token without TLS
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for index in sorted(outcomes):
        name, outcome = readable[index][0], outcomes[index]
        if isinstance(outcome, ImageError):
            failed += 1
            _print_error(name, f"{outcome.code.name}: {outcome.message}", args.json)
        elif args.json:
            print(json.dumps({"image": name, **asdict(outcome)}))
        else:
            print(f"{name}  (model {outcome.model_name} v{outcome.model_version})")
            for score in outcome.classes:
                print(f"  {score.probability:7.2%}  {score.label}")
    return 1 if failed else 0


def _print_error(name: str, message: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"image": name, "error": message}))
    else:
        print(f"{name}: error: {message}", file=sys.stderr)
