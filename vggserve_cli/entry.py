"""`vggserve COMMAND ...`: hands the arguments to the tool's own `main(argv)`.

Each command runs the `main(argv)` its `python -m` form runs, with the
arguments unchanged (same flags, same exit codes). That module is imported
only when its command runs, so `vggserve --help` imports none of them, and
`vggserve COMMAND --help` imports only what that command's parser needs.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, NoReturn

PROG = "vggserve"


# A NamedTuple, and quiet imported only to run a command: `--help` answers
# with little more than the interpreter's own start-up.
class Command(NamedTuple):
    """One subcommand.

    Attributes:
        summary: its line in `vggserve --help`.
        target: `module:function`, the `main(argv)` its `python -m` form runs.
        parser: `module:function` that parses the same arguments without
            importing TensorFlow, run first when `target`'s module imports
            TensorFlow at import time: `--help` and a wrong flag answer at once.
        lead: arguments put before the user's (`explain` is `classify --explain`).
    """

    summary: str
    target: str
    parser: str | None = None
    lead: tuple[str, ...] = ()


COMMANDS: dict[str, Command] = {
    "serve": Command("run the server (gRPC and REST) on a model folder", "service.__main__:main"),
    "train": Command(
        "train a VGG-style classifier and export it as a SavedModel version",
        "model.train:main",
        parser="model.cli:parse_args",
    ),
    "classify": Command(
        "classify image files with a running server", "vggclient.cli.classify:main"
    ),
    "explain": Command(
        "write a Grad-CAM overlay per image: explain OUT_DIR IMAGE... (classify --explain)",
        "vggclient.cli.classify:main",
        lead=("--explain",),
    ),
    "batch": Command(
        "classify files and folders into a CSV/JSONL file, resumable",
        "vggclient.batch.cli:main",
    ),
    "bench": Command(
        "measure served against in-process throughput and latency", "loadtest.bench:main"
    ),
    "loadtest": Command("run a headless locust load test that can fail", "loadtest.__main__:main"),
}

HELP_FLAGS = ("-h", "--help")


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        f"usage: {PROG} [--verbose] COMMAND [ARGS...]",
        "",
        "Train, serve and use a VGG-style image classifier.",
        f"`{PROG} COMMAND --help` shows that command's own flags.",
        "",
        "commands:",
        *(f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items()),
        "",
        "options:",
        "  -h, --help  show this help and exit",
        "  --verbose   show TensorFlow's start-up log lines (hidden by default)",
    ]
    return "\n".join(lines)


def fail(message: str) -> NoReturn:
    """One line and status 2, as every tool's own flag errors (vggcommon.cli)."""
    print(f"{PROG}: error: {message} (see --help)", file=sys.stderr)
    sys.exit(2)


def resolve(reference: str) -> Callable[[list[str]], Any]:
    module, _, function = reference.partition(":")
    return getattr(importlib.import_module(module), function)  # type: ignore[no-any-return]


def run(name: str, argv: list[str]) -> int:
    """Runs command `name` with `argv` (what follows the command's name)."""
    command = COMMANDS[name]
    if command.lead and argv[:1] and argv[0] in HELP_FLAGS:
        # `explain --help` would read as `--explain --help`: show the flags it takes instead.
        print(f"usage: {PROG} {name} OUT_DIR IMAGE... [FLAGS]")
        print(f"is `{PROG} classify --explain OUT_DIR IMAGE...`; the flags are classify's:\n")
        argv = ["--help"]
    else:
        argv = [*command.lead, *argv]
    if command.parser is not None:
        resolve(command.parser)(list(argv))  # exits on --help or a wrong flag
    code = resolve(command.target)(argv)
    return int(code or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """`vggserve [--verbose] COMMAND [ARGS...]`; returns the command's exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = False
    while args and args[0].startswith("-"):
        flag = args.pop(0)
        if flag in HELP_FLAGS:
            print(usage())
            return 0
        if flag == "--verbose":
            verbose = True
            continue
        fail(f"unknown option {flag!r} before the command; allowed: --verbose, --help")
    if not args:
        fail(f"no command given; choose one of: {', '.join(COMMANDS)}")
    name = args.pop(0)
    if name not in COMMANDS:
        fail(f"unknown command {name!r}; choose one of: {', '.join(COMMANDS)}")
    if not verbose:
        from vggserve_cli import quiet

        quiet.quiet_tensorflow(os.environ)
    return run(name, args)
