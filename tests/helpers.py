"""Helpers shared by test modules that need no running server.

Test modules import shared code from here (or tests/service/helpers.py), never
from each other or from a conftest: a conftest holds fixtures only.
"""

from __future__ import annotations

import csv
import datetime
import functools
import io
import ipaddress
import json
import os
import re
import shlex
import shutil
import struct
import sys
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from PIL import Image

from model import layout
from model.train import TrainOptions

ROOT = Path(__file__).resolve().parents[1]

# --- the tiny model -----------------------------------------------------------------------------

# Small enough to train in seconds on 2 cores, big enough to learn the task.
# (No batch norm or augmentation: both slow down learning over a few epochs.)
TINY = dict(
    preset="vgg-mini",
    input_size=16,
    width=0.5,
    per_class=60,
    epochs=3,
    batch_size=32,
    learning_rate=3e-3,
    batch_norm=False,
    augment=False,
    patience=3,
    verbose=0,
)


def tiny_options(output: Path, **overrides: object) -> TrainOptions:
    return TrainOptions(output=str(output), name="tiny", **{**TINY, **overrides})  # type: ignore[arg-type]


@functools.cache
def _serving_signature(version_dir: str, written_ns: int) -> Any:
    # Loading a SavedModel takes about a second and tests ask the same few many
    # times; `written_ns` tells apart a folder replaced by another export.
    return tf.saved_model.load(version_dir).signatures[layout.SERVING_SIGNATURE]


def in_process(model_dir: Path, images: Sequence[bytes], version: int = 2) -> np.ndarray:
    """The probabilities version `version` of `model_dir` gives `images`, run in this process."""
    folder = model_dir / str(version)
    signature = _serving_signature(str(folder), (folder / "saved_model.pb").stat().st_mtime_ns)
    return signature(images=tf.constant(list(images)))[layout.OUTPUT].numpy()


# Two versions "differ" on an image when some probability differs by more than
# this; far above float noise between batch sizes (1e-6) and the tolerance the
# tests compare a served answer with (1e-5).
VERSIONS_DIFFER_BY = 1e-3


def assert_answered_by(
    served: Any, model_dir: Path, images: Sequence[bytes], version: int, atol: float = 1e-5
) -> None:
    """`served` probabilities are version `version`'s, and no other version's.

    Checks WHICH weights answered, not the version number the server reports:
    every other version folder in `model_dir` must answer the same images
    differently (else the check could not tell the versions apart).
    """
    served = np.asarray(served, dtype=np.float32).reshape(len(images), -1)
    np.testing.assert_allclose(
        served,
        in_process(model_dir, images, version),
        atol=atol,
        err_msg=f"the answer is not version {version}'s",
    )
    others = sorted(int(p.name) for p in model_dir.iterdir() if p.name.isdigit())
    for other in others:
        if other != version:
            gap = np.abs(in_process(model_dir, images, other) - served).max()
            assert gap > VERSIONS_DIFFER_BY, (
                f"versions {version} and {other} give these images the same probabilities "
                f"(largest difference {gap:.2g}): the test cannot tell which one answered"
            )


# --- images -------------------------------------------------------------------------------------


def encode(pixels: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    """Encodes uint8 pixels as an image file (optionally converted to `mode`)."""
    image = Image.fromarray(pixels)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def random_pixels(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A valid-looking PNG a few dozen bytes long that claims width x height."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def truncated(fmt: str) -> bytes:
    """The first half of a file: its header is intact, its data is cut."""
    data = encode(random_pixels(64, 64), fmt)
    return data[: len(data) // 2]


def half_a_jpeg() -> bytes:
    return truncated("JPEG")


# --- tools and waiting ----------------------------------------------------------------------------


def require_tool(path: str | None, missing: str, env: Mapping[str, str] = os.environ) -> str:
    """`path` if the tool was found; else skip the test, or fail it under CI=true.

    A developer's machine may lack nginx, docker-compose or hadolint; CI must
    not, or the tests that need them would pass there without running.
    """
    if path:
        return path
    if env.get("CI", "").strip().lower() in {"true", "1", "yes"}:
        pytest.fail(f"{missing}, and CI=true: CI must run this test", pytrace=False)
    pytest.skip(missing)


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, poll_s: float = 0.01
) -> None:
    """Returns once `predicate()` holds; fails naming `what` after `timeout` seconds.

    For state that raises no event (rows in a file another process writes, a
    Prometheus gauge): each poll checks the state itself, and the pause
    between polls only keeps the check cheap. `predicate` may raise (an
    AssertionError when what it waits for can no longer happen) to fail at once.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g}s for {what}")
        time.sleep(poll_s)


def rows_written(path: Path, at_least: int, writing: Callable[[], bool]) -> bool:
    """For wait_for: `path` holds `at_least` complete lines; fails once the writer
    stopped (`writing()` false) without writing them."""
    if path.exists() and path.read_bytes().count(b"\n") >= at_least:
        return True
    assert writing(), f"the writer stopped before {path} held {at_least} rows"
    return False


def read_rows(path: Path) -> list[dict]:
    """The rows a batch job wrote, as JSON lines or CSV (by suffix)."""
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def doc_commands(module: str, page: str) -> list[list[str]]:
    """A page's `.venv/bin/python -m <module> ...` lines, as argv for this Python.

    `page` is relative to the repository: "README.md" or "docs/....md". The
    tests run what the page shows, so editing a command there edits the test.
    """
    pattern = re.compile(rf"^\.venv/bin/python -m {re.escape(module)} .*$", re.M)
    lines = pattern.findall((ROOT / page).read_text())
    assert lines, f"{page} has no line running {module}"
    return [[sys.executable, *shlex.split(line.split("#")[0])[1:]] for line in lines]


def doc_section(page: str, heading: str) -> str:
    """The text of `## heading` in `page`, up to the next `## ` heading."""
    text = (ROOT / page).read_text()
    marker = f"\n## {heading}\n"
    assert marker in text, f"{page} has no section '## {heading}'"
    return text.split(marker, 1)[1].split("\n## ", 1)[0]


def shell_lines(markdown: str, starting: str) -> list[str]:
    """The lines of the ```sh blocks in `markdown` that start with `starting`,
    continued lines (a trailing backslash) joined."""
    blocks = re.findall(r"```sh\n(.*?)```", markdown, re.S)
    return [
        line
        for code in blocks
        for line in code.replace("\\\n", " ").splitlines()
        if line.startswith(starting)
    ]


# --- certificates ---------------------------------------------------------------------------------


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write(
    folder: Path, stem: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> None:
    (folder / f"{stem}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (folder / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_ca(folder: Path, stem: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(stem))
        .issuer_name(_name(stem))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    _write(folder, stem, key, cert)
    return key, cert


def make_leaf(
    folder: Path, stem: str, ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], server: bool
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(stem))
        .issuer_name(ca[1].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    _write(folder, stem, key, builder.sign(ca[0], hashes.SHA256()))


# --- deployment files -----------------------------------------------------------------------------

# kubernetes-validate comes from PyPI (requirements-dev.txt) into the virtual environment.
VALIDATE = shutil.which(
    "kubernetes-validate", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}"
)
# Versions in upstream support when this was written (the newest the tool bundles
# included); native grpc probes need 1.27+, the preStop sleep action 1.30+.
VERSIONS = ["1.35.0", "1.36.0", "1.37.0"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", [])}


def stage(name: str) -> str:
    """The Dockerfile's lines of build stage `name`, up to the next FROM."""
    return DOCKERFILE.split(f" AS {name}\n", 1)[1].split("\nFROM ", 1)[0]
