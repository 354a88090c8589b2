"""`python -m vggclient.healthcheck`: exit 0 when the server reports SERVING.

For container HEALTHCHECKs and scripts: asks the standard grpc.health.v1
service through the project's client, prints the status, and exits 1 on
anything else (NOT_SERVING, no answer, refused connection).
"""

from __future__ import annotations

import sys

import grpc

from vggclient.client import Client
from vggcommon import cli


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m vggclient.healthcheck", description=__doc__)
    parser.add_argument("--target", default="127.0.0.1:8500", help="server host:port")
    parser.add_argument("--service", default="", help="service name ('' = the whole server)")
    parser.add_argument(
        "--timeout", type=cli.at_least(0.001, float), default=3.0, help="seconds to wait"
    )
    args = parser.parse_args(argv)
    with Client(args.target, timeout=args.timeout, retries=0) as client:
        try:
            status = client.health(args.service)
        except grpc.RpcError as exc:
            print(f"{args.target}: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    print(f"{args.target}: {status}")
    return 0 if status == "SERVING" else 1
