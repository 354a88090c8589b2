"""The README's client example, run as written, against a real server."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from tests.service.conftest import RunningServer

ROOT = Path(__file__).resolve().parents[2]


def readme_command(module: str) -> list[str]:
    """The README's one `.venv/bin/python -m <module> ...` line, as argv for this Python."""
    pattern = re.compile(rf"^\.venv/bin/python -m {re.escape(module)} .*$", re.M)
    lines = pattern.findall((ROOT / "README.md").read_text())
    assert len(lines) == 1, f"expected one README line running {module}, found {lines}"
    argv = shlex.split(lines[0].split("#")[0])
    return [sys.executable, *argv[1:]]


def test_the_readme_client_example_runs_as_written(server: RunningServer, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    make_samples = readme_command("model.data.samples")
    made = subprocess.run(
        make_samples, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert made.returncode == 0, made.stderr
    classify = [*readme_command("service.client"), "--target", server.target]
    result = subprocess.run(
        classify, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    images = [a for a in classify[3:] if a.endswith((".png", ".jpg")) and a != "missing.png"]
    assert images, "the example classifies no sample image"
    # As the README says: each sample answered, the missing file an error, exit status 1.
    assert result.returncode == 1, result.stderr
    for image in images:
        assert f"{image}  (model tiny v2)" in result.stdout
    assert "missing.png: error: cannot read file: No such file or directory" in result.stderr
