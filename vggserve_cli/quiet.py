"""TensorFlow's start-up lines, hidden unless `vggserve --verbose`.

TF_CPP_MIN_LOG_LEVEL=3 silences what TensorFlow logs once its logging is set
up, but not what its libraries print while `import tensorflow` loads them:
abseil writes those to stderr before anything can configure it ("All log
messages before absl::InitializeLog() is called are written to STDERR", the
oneDNN and "Could not find cuda drivers" lines), and no environment variable
reaches them (tried with TensorFlow 2.21: TF_CPP_MIN_LOG_LEVEL,
TF_CPP_MAX_VLOG_LEVEL, GRPC_VERBOSITY, GLOG_minloglevel). So for the length of
that one import, stderr is caught in a file and replayed without the lines
below the level TF_CPP_MIN_LOG_LEVEL asks for; every other line is kept.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import re
import sys
import tempfile
from collections.abc import Iterator, MutableMapping, Sequence
from types import ModuleType
from typing import Any

# The level `vggserve` asks for unless the user set one: INFO, WARNING and
# ERROR lines hidden (TensorFlow never hides FATAL).
QUIET_LEVEL = "3"

# An abseil line: severity letter, date, time (before abseil is set up, seconds
# since the epoch), thread, file:line], message.
ABSL_LINE = re.compile(rb"^([IWE])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.\-]+:\d+\] ")
ABSL_PREAMBLE = b"WARNING: All log messages before absl::InitializeLog() is called"
# TF_CPP_MIN_LOG_LEVEL: 1 hides INFO, 2 also WARNING, 3 also ERROR.
SEVERITY = {b"I": 1, b"W": 2, b"E": 3}


def quiet_tensorflow(environ: MutableMapping[str, str]) -> None:
    """Hides TensorFlow's start-up lines in this process and the ones it starts.

    Must run before TensorFlow is imported. A TF_CPP_MIN_LOG_LEVEL the user set
    is kept (and the import filter follows it).
    """
    environ.setdefault("TF_CPP_MIN_LOG_LEVEL", QUIET_LEVEL)
    level = min_level(environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    if level > 0 and "tensorflow" not in sys.modules:
        sys.meta_path.insert(0, QuietImport(level))


def min_level(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0  # TensorFlow too treats a value it cannot read as 0


def is_noise(line: bytes, level: int) -> bool:
    """True for an abseil start-up line below the level TF_CPP_MIN_LOG_LEVEL asks for."""
    if line.startswith(ABSL_PREAMBLE):
        return level >= SEVERITY[b"W"]
    match = ABSL_LINE.match(line)
    return match is not None and level >= SEVERITY[match.group(1)]


@contextlib.contextmanager
def filtered_stderr(level: int) -> Iterator[None]:
    """Catches file descriptor 2 (C++ writes there too) and replays the non-noise lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = b"".join(line for line in caught if not is_noise(line, level))
            if kept:
                os.write(2, kept)


class QuietImport(importlib.abc.MetaPathFinder):
    """Wraps the first `import tensorflow` (however it is reached) in `filtered_stderr`."""

    def __init__(self, level: int) -> None:
        self.level = level

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "tensorflow":
            return None
        # Once: the libraries print only when first loaded.
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = QuietLoader(spec.loader, self.level)
        return spec


class QuietLoader(importlib.abc.Loader):
    """The real loader, its module run inside `filtered_stderr`."""

    def __init__(self, loader: importlib.abc.Loader, level: int) -> None:
        self.loader = loader
        self.level = level

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        try:
            with filtered_stderr(self.level):
                self.loader.exec_module(module)
        finally:
            # From now on the module shows its real loader, as if never wrapped.
            module.__loader__ = self.loader
            if module.__spec__ is not None:
                module.__spec__.loader = self.loader

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)
