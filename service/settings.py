"""Server settings: typed, one field one help text, flags over environment.

Every field is a command-line flag (`--max-batch-size`) and an environment
variable (`VGGSERVE_MAX_BATCH_SIZE`); a flag wins over the variable, which wins
over the default. Tests pass `env` explicitly instead of patching os.environ.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

ENV_PREFIX = "VGGSERVE_"


def _opt(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


@dataclass(frozen=True)
class Settings:
    model_dir: str = field(metadata={"help": "the model's folder: models/<name> (versions inside)"})
    model_name: str = _opt("", "name reported to clients (default: the folder's name)")
    versions: str = _opt(
        "latest", "which versions to load: 'latest', 'latest:N' (the N newest) or '1,3'"
    )
    host: str = _opt("0.0.0.0", "address to listen on ('127.0.0.1' for this machine only)")
    port: int = _opt(8500, "gRPC port (0 picks a free one; the log says which)")
    metrics_port: int = _opt(8501, "Prometheus metrics HTTP port (0: a free one, -1: off)")
    metrics_host: str = _opt("", "metrics address (default: same as --host)")
    max_batch_size: int = _opt(32, "most images per model call")
    batch_timeout_ms: float = _opt(
        2.0, "longest a batch waits to fill, in ms (0: dispatch at once)"
    )
    max_queue: int = _opt(1024, "most images waiting for the model; beyond: RESOURCE_EXHAUSTED")
    batching: bool = _opt(True, "coalesce concurrent requests (off: one image per model call)")
    model_workers: int = _opt(1, "model calls at once (raise on GPUs; 1 is best on CPUs)")
    intra_op_threads: int = _opt(0, "TensorFlow threads inside one op (0: one per core)")
    inter_op_threads: int = _opt(0, "TensorFlow ops run at once (0: TensorFlow's default)")
    max_message_bytes: int = _opt(16 * 1024 * 1024, "largest gRPC message, both ways")
    max_image_pixels: int = _opt(36_000_000, "largest width x height accepted (before decoding)")
    max_concurrent_rpcs: int = _opt(
        1000,
        "RPCs handled at once, open streams included, health checks not; "
        "beyond: RESOURCE_EXHAUSTED",
    )
    max_concurrent_streams: int = _opt(100, "HTTP/2 streams (calls) at once per client connection")
    stream_idle_timeout_s: float = _opt(
        60.0,
        "a ClassifyStream with nothing in flight that sends no image for this long is "
        "ended with DEADLINE_EXCEEDED, freeing its slot (0: never)",
    )
    poll_interval_s: float = _opt(
        2.0, "seconds between checks of the model folder for new or removed versions (0: off)"
    )
    drain_grace_s: float = _opt(
        3.0, "after SIGTERM: seconds of NOT_SERVING (still answering) before refusing new calls"
    )
    drain_timeout_s: float = _opt(30.0, "after the grace: longest wait for calls in flight")
    tls_cert: str = _opt("", "PEM server certificate (chain); with --tls-key turns TLS on")
    tls_key: str = _opt("", "PEM private key of --tls-cert")
    tls_client_ca: str = _opt("", "PEM CA bundle; when set, clients must present a certificate")
    auth_token: str = field(
        default="",
        repr=False,
        metadata={"help": "bearer token every RPC but health must carry (prefer the file)"},
    )
    auth_token_file: str = _opt("", "file of accepted bearer tokens, one per line")
    log_level: str = _opt("INFO", "DEBUG, INFO, WARNING or ERROR")

    @property
    def batch_timeout_s(self) -> float:
        return self.batch_timeout_ms / 1000.0

    @classmethod
    def parse(
        cls, argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
    ) -> Settings:
        """Settings from flags, then `env` (default os.environ), then defaults."""
        env = os.environ if env is None else env
        parser = argparse.ArgumentParser(
            prog="python -m service",
            description="Serve a vggserve model over gRPC. Every flag can also be set "
            f"by an environment variable {ENV_PREFIX}<FLAG> (e.g. {ENV_PREFIX}PORT).",
        )
        for f in fields(cls):
            flag = "--" + f.name.replace("_", "-")
            var = ENV_PREFIX + f.name.upper()
            help_text = f"{f.metadata['help']} [{var}]"
            kind = _type_of(f.default, f.name)
            if kind is bool:
                parser.add_argument(
                    flag, action=argparse.BooleanOptionalAction, default=None, help=help_text
                )
            else:
                parser.add_argument(flag, type=kind, default=None, help=help_text)
        args = vars(parser.parse_args(argv))
        values: dict[str, Any] = {}
        for f in fields(cls):
            var = ENV_PREFIX + f.name.upper()
            if args[f.name] is not None:
                values[f.name] = args[f.name]
            elif var in env:
                values[f.name] = _from_env(env[var], _type_of(f.default, f.name), var, parser)
        if "model_dir" not in values:
            parser.error(f"--model-dir (or {ENV_PREFIX}MODEL_DIR) is required")
        for name in ("auth_token", "auth_token_file"):
            # Given but blank (often an unset variable in a compose file): refusing
            # is safer than running without authentication.
            if name in values and not values[name].strip():
                flag = "--" + name.replace("_", "-")
                parser.exit(
                    2,
                    f"{parser.prog}: error: {flag} (or {ENV_PREFIX}{name.upper()}) is given "
                    "but empty; give a token (file), or leave it unset to run without tokens\n",
                )
        return cls(**values)


def _type_of(default: Any, name: str) -> type:
    if default is MISSING:
        return str
    return type(default)


_KIND_NAMES = {int: "an integer", float: "a number", str: "text"}


def _from_env(raw: str, kind: type, var: str, parser: argparse.ArgumentParser) -> Any:
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        parser.error(f"{var}={raw!r}: expected true or false")
    try:
        return kind(raw)
    except ValueError:
        parser.error(f"{var}={raw!r}: expected {_KIND_NAMES.get(kind, kind.__name__)}")
