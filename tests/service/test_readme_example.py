"""The README's client example, run as written, against a real server."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.helpers import readme_commands
from tests.service.helpers import RunningServer

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_client_example_runs_as_written(server: RunningServer, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    (make_samples,) = readme_commands("model.data.samples")
    made = subprocess.run(
        make_samples, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert made.returncode == 0, made.stderr
    # The quick start's example and the Clients section's.
    for command in readme_commands("vggclient.client"):
        classify = [*command, "--target", server.target]
        result = subprocess.run(
            classify, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        images = [a for a in classify[3:] if a.endswith((".png", ".jpg")) and a != "missing.png"]
        assert images, f"{command} classifies no sample image"
        for image in images:
            assert f"{image}  (model tiny v2)" in result.stdout
        # As the README says: each sample answered, a missing file an error, exit status 1.
        if "missing.png" in classify:
            assert result.returncode == 1, result.stderr
            assert "missing.png: error: cannot read file: No such file or directory" in (
                result.stderr
            )
        else:
            assert result.returncode == 0, result.stderr
