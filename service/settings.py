"""Server settings: typed, one field one help text, flags over environment.

Every field is a command-line flag (`--max-batch-size`) and an environment
variable (`VGGSERVE_MAX_BATCH_SIZE`); a flag wins over the variable, which wins
over the default. Tests pass `env` explicitly instead of patching os.environ.

Every value is checked here, when the settings are made: a bad one stops
`python -m service` with one line naming the flag (or variable) and what is
allowed, exit status 2, before TensorFlow is imported or a model is loaded.
This module must stay free of TensorFlow and gRPC for that reason.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any

from service.version_policy import VersionPolicy
from vggcommon.cli import ArgumentParser

ENV_PREFIX = "VGGSERVE_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
MAX_PORT = 65535
# gRPC takes message limits as a C int.
MAX_MESSAGE_BYTES = 2**31 - 1


def _opt(
    default: Any,
    help: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    file: bool = False,
    **extra: Any,
) -> Any:
    """A setting; `minimum`/`maximum` bound numbers, `file` must name a readable file."""
    return field(
        default=default,
        metadata={"help": help, "minimum": minimum, "maximum": maximum, "file": file, **extra},
    )


@dataclass(frozen=True)
class Settings:
    model_dir: str = field(metadata={"help": "the model's folder: models/<name> (versions inside)"})
    model_name: str = _opt("", "name reported to clients (default: the folder's name)")
    versions: str = _opt(
        "latest", "which versions to load: 'latest', 'latest:N' (the N newest) or '1,3'"
    )
    host: str = _opt("0.0.0.0", "address to listen on ('127.0.0.1' for this machine only)")
    port: int = _opt(
        8500, "gRPC port (0 picks a free one; the log says which)", minimum=0, maximum=MAX_PORT
    )
    rest_port: int = _opt(
        8501,
        "HTTP port of the REST APIs and /metrics, on --host with the same TLS and tokens "
        "(0: a free one, -1: off)",
        minimum=-1,
        maximum=MAX_PORT,
    )
    metrics_port: int = _opt(
        -1,
        "a separate, plain-HTTP Prometheus port besides the REST port's /metrics "
        "(0: a free one; default -1: none)",
        minimum=-1,
        maximum=MAX_PORT,
    )
    metrics_host: str = _opt("", "address of --metrics-port (default: same as --host)")
    max_batch_size: int = _opt(32, "most images per model call", minimum=1)
    batch_timeout_ms: float = _opt(
        2.0, "longest a batch waits to fill, in ms (0: dispatch at once)", minimum=0
    )
    max_queue: int = _opt(
        1024, "most images waiting for the model; beyond: RESOURCE_EXHAUSTED", minimum=1
    )
    batching: bool = _opt(True, "coalesce concurrent requests (off: one image per model call)")
    model_workers: int = _opt(
        1, "model calls at once (raise on GPUs; 1 is best on CPUs)", minimum=1
    )
    intra_op_threads: int = _opt(0, "TensorFlow threads inside one op (0: one per core)", minimum=0)
    inter_op_threads: int = _opt(
        0, "TensorFlow ops run at once (0: TensorFlow's default)", minimum=0
    )
    max_message_bytes: int = _opt(
        16 * 1024 * 1024, "largest gRPC message, both ways", minimum=1, maximum=MAX_MESSAGE_BYTES
    )
    max_image_pixels: int = _opt(
        36_000_000, "largest width x height accepted (before decoding)", minimum=1
    )
    explain_max_pixels: int = _opt(
        16_777_216,
        "largest width x height Explain takes (before any work; also within "
        "--max-image-pixels); beyond: INVALID_ARGUMENT",
        minimum=1,
    )
    explain_max_concurrent: int = _opt(
        4,
        "images explained at once, all protocols together; beyond: RESOURCE_EXHAUSTED at "
        "once (retry with backoff), so Explain cannot take the CPU and memory from Classify",
        minimum=1,
    )
    max_concurrent_rpcs: int = _opt(
        1000,
        "RPCs handled at once, open streams included, health checks not; "
        "beyond: RESOURCE_EXHAUSTED",
        minimum=1,
    )
    max_concurrent_streams: int = _opt(
        100, "HTTP/2 streams (calls) at once per client connection", minimum=1
    )
    stream_idle_timeout_s: float = _opt(
        60.0,
        "a ClassifyStream with nothing in flight that sends no image for this long is "
        "ended with DEADLINE_EXCEEDED, freeing its slot (0: never)",
        minimum=0,
    )
    poll_interval_s: float = _opt(
        2.0,
        "seconds between checks of the model folder for new or removed versions (0: off)",
        minimum=0,
    )
    drain_grace_s: float = _opt(
        3.0,
        "after SIGTERM: seconds of NOT_SERVING (still answering) before refusing new calls",
        minimum=0,
    )
    drain_timeout_s: float = _opt(
        30.0, "after the grace: longest wait for calls in flight", minimum=0
    )
    tls_cert: str = _opt(
        "", "PEM server certificate (chain); with --tls-key turns TLS on", file=True
    )
    tls_key: str = _opt("", "PEM private key of --tls-cert", file=True)
    tls_client_ca: str = _opt(
        "", "PEM CA bundle; when set, clients must present a certificate", file=True
    )
    auth_token: str = field(
        default="",
        repr=False,
        metadata={"help": "bearer token every RPC but health must carry (prefer the file)"},
    )
    auth_token_file: str = _opt("", "file of accepted bearer tokens, one per line", file=True)
    log_level: str = _opt("INFO", "DEBUG, INFO, WARNING or ERROR (any case)")
    port_file: str = _opt(
        "",
        "once listening, write the ports to this file (atomically: temp + rename): the gRPC "
        "port on the first line, then 'rest=PORT' unless REST is off; for tools that start "
        "the server on port 0",
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            problem = _problem(f, getattr(self, f.name))
            if problem is not None:
                raise ValueError(f"{_flag(f)} {getattr(self, f.name)!r}: {problem}")
        problem = _combination_problem(self)
        if problem is not None:
            raise ValueError(problem)

    @property
    def batch_timeout_s(self) -> float:
        return self.batch_timeout_ms / 1000.0

    @classmethod
    def parse(
        cls, argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
    ) -> Settings:
        """Settings from flags, then `env` (default os.environ), then defaults.

        A bad value exits with status 2 and one line naming its flag or variable.
        """
        env = os.environ if env is None else env
        parser = _parser(cls)
        args = vars(parser.parse_args(argv))
        values: dict[str, Any] = {}
        for f in fields(cls):
            var = ENV_PREFIX + f.name.upper()
            if args[f.name] is not None:
                source = f"{_flag(f)} {args[f.name]!r}"
                values[f.name] = args[f.name]
            elif var in env:
                source = f"{var}={env[var]!r}"
                values[f.name] = _from_env(env[var], _type_of(f), var, parser)
            else:
                continue
            problem = _problem(f, values[f.name])
            if problem is not None:
                parser.error(f"{source}: {problem}")
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
        try:
            return cls(**values)
        except ValueError as exc:  # a combination of settings (each one is fine alone)
            parser.error(str(exc))


def _parser(cls: type[Settings]) -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m service",
        description="Serve a vggserve model over gRPC. Every flag can also be set "
        f"by an environment variable {ENV_PREFIX}<FLAG> (e.g. {ENV_PREFIX}PORT); "
        "a flag wins over its variable.",
    )
    for f in fields(cls):
        kind = _type_of(f)
        help_text = f"{f.metadata['help']}{_default_text(f)} [{ENV_PREFIX}{f.name.upper()}]"
        # "%" would be read as a format directive by argparse's help formatter.
        help_text = help_text.replace("%", "%%")
        if kind is bool:
            parser.add_argument(
                _flag(f), action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            parser.add_argument(
                _flag(f), type=kind, default=None, help=help_text, metavar=kind.__name__.upper()
            )
    return parser


def _flag(f: Field[Any]) -> str:
    return "--" + f.name.replace("_", "-")


def _type_of(f: Field[Any]) -> type:
    return str if f.default is MISSING else type(f.default)


def _default_text(f: Field[Any]) -> str:
    if f.default is MISSING:
        return " (required)"
    if "default" in f.metadata["help"]:
        return ""  # the help text already says it in words
    if isinstance(f.default, bool):
        return f" (default: {'on' if f.default else 'off'})"
    if f.default == "":
        return " (default: unset)"
    return (
        f" (default: {f.default:g})" if isinstance(f.default, float) else f" (default: {f.default})"
    )


def _problem(f: Field[Any], value: Any) -> str | None:
    """What is wrong with one setting's value, or None; the one place values are checked."""
    meta = f.metadata
    if f.name == "model_dir" and not str(value).strip():
        return "must name the model's folder"
    if f.name == "versions":
        try:
            VersionPolicy.parse(value)
        except ValueError as exc:
            return str(exc).split(": ", 1)[1]
    if f.name == "log_level" and str(value).upper() not in LOG_LEVELS:
        return f"must be one of {', '.join(LOG_LEVELS)}"
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    minimum, maximum = meta.get("minimum"), meta.get("maximum")
    if minimum is not None and value < minimum:
        return f"must be at least {minimum}"
    if maximum is not None and value > maximum:
        return f"must be at most {maximum}"
    if f.name in ("auth_token", "auth_token_file") and value and not value.strip():
        # Blank but given (often an unset variable in a compose file): refusing
        # is safer than running without authentication.
        return "is given but empty; give a token (file), or leave it unset to run without tokens"
    if meta.get("file") and value and not Path(value).is_file():
        return "no such file"
    return None


def _combination_problem(settings: Settings) -> str | None:
    """What is wrong with settings that are each fine alone, or None."""
    return _tls_problem(settings) or _port_problem(settings)


def _port_problem(settings: Settings) -> str | None:
    ports = {"--port": settings.port, "--rest-port": settings.rest_port}
    if settings.metrics_port >= 0 and (settings.metrics_host or settings.host) == settings.host:
        ports["--metrics-port"] = settings.metrics_port
    taken: dict[int, str] = {}
    for flag, port in ports.items():
        if port > 0 and port in taken:
            return f"{taken[port]} and {flag} are both {port}: give each its own port"
        taken[port] = flag
    return None


def _tls_problem(settings: Settings) -> str | None:
    if bool(settings.tls_cert) != bool(settings.tls_key):
        return "TLS needs both --tls-cert and --tls-key"
    if settings.tls_client_ca and not settings.tls_cert:
        return "--tls-client-ca needs --tls-cert and --tls-key"
    return None


_KIND_NAMES = {int: "an integer", float: "a number", str: "text"}


def _from_env(raw: str, kind: type, var: str, parser: ArgumentParser) -> Any:
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
