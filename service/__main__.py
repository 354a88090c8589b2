"""`python -m service --model-dir models/<name>`: run the server (gRPC and REST).

Flags and VGGSERVE_* environment variables: `python -m service --help`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

# Only what parsing the command line needs: a bad flag or --help must answer
# at once, not after the seconds TensorFlow takes to import.
from service.portfile import write_port_file
from service.settings import Settings

log = logging.getLogger("service")


def configure_tensorflow(settings: Settings) -> None:
    """Thread pools must be sized before TensorFlow runs its first op."""
    import tensorflow as tf

    if settings.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(settings.intra_op_threads)
    if settings.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(settings.inter_op_threads)


async def serve(settings: Settings) -> int:
    from service.core.runtime import ModelLoadError
    from service.server import Server

    try:
        server = Server(settings)
        port = await server.start()
    except (ValueError, OSError) as exc:  # bad TLS/token files, port in use, ...
        log.error("cannot start: %s", exc)
        return 2
    log.info(
        "listening on %s: gRPC port %d, REST port %s; loading the model",
        settings.host,
        port,
        server.rest_port if server.rest_port is not None else "off",
    )
    if settings.port_file:
        write_port_file(settings.port_file, port, rest=server.rest_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loading = asyncio.create_task(server.load())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    failure = loading.exception() if loading.done() else None
    if failure is not None:
        log.error("cannot serve: %s", failure)
        await server.stop(0)
        return 1 if isinstance(failure, ModelLoadError) else 2
    await stop.wait()
    # A second signal skips the grace (Server.stop holds the drain's order).
    stop.clear()
    loading.cancel()
    await server.stop(settings.drain_timeout_s, settings.drain_grace_s, skip_grace=stop)
    log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    settings = Settings.parse(argv)
    logging.basicConfig(
        level=settings.log_level.upper(),  # checked by Settings
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    configure_tensorflow(settings)
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
