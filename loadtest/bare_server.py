"""A bare grpc.aio ImageClassifier that answers every Classify with a constant.

The benchmark's yardstick for serving overhead: what the same client reaches
when the server does no work at all. Prints "listening on 127.0.0.1:PORT" and,
with --port-file, writes the port there once listening (as `python -m service`).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import grpc

from protos.vggserve.v1 import classifier_pb2 as pb
from protos.vggserve.v1 import classifier_pb2_grpc as pb_grpc
from service.portfile import write_port_file

REPLY = pb.ClassifyResponse(
    classes=[pb.ClassScore(index=i, label=f"class_{i}", probability=0.2) for i in range(5)],
    model_name="bare",
    model_version=1,
)


class Constant(pb_grpc.ImageClassifierServicer):
    async def Classify(
        self,
        request: pb.ClassifyRequest,
        context: grpc.aio.ServicerContext,
    ) -> pb.ClassifyResponse:
        return REPLY


async def serve(port: int, port_file: str = "") -> None:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 16 << 20)])
    pb_grpc.add_ImageClassifierServicer_to_server(Constant(), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"listening on 127.0.0.1:{bound}", file=sys.stderr, flush=True)
    if port_file:
        write_port_file(port_file, bound)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.bare_server", description=__doc__)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file", default="", help="write the port here once listening")
    args = p.parse_args(argv)
    asyncio.run(serve(args.port, args.port_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
