"""The client lines of the README's tour and the docs, run as written, against a real server.

The pages show the same example (README "A five-minute tour", docs "Getting
started") and one line of "Clients"; each page's lines run here, so a page
that drifts from the others still has its own commands tested. Lines with
`--explain` write overlays instead of classes: test_readme_tour.py runs them.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT, doc_commands
from tests.service.helpers import RunningServer

PAGES = ["README.md", "docs/getting-started.md", "docs/apis/clients.md"]


@pytest.mark.parametrize("page", PAGES)
def test_the_client_example_runs_as_written(
    page: str, server: RunningServer, tmp_path: Path
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    (make_samples,) = doc_commands("model.data.samples", "README.md")
    made = subprocess.run(
        make_samples, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert made.returncode == 0, made.stderr
    commands = [c for c in doc_commands("vggclient.client", page) if "--explain" not in c]
    assert commands, f"{page} shows no client line that classifies"
    for command in commands:
        classify = [*command, "--target", server.target]
        result = subprocess.run(
            classify, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        images = [a for a in classify[3:] if a.endswith((".png", ".jpg")) and a != "missing.png"]
        assert images, f"{command} classifies no sample image"
        for image in images:
            assert f"{image}  (model tiny v2)" in result.stdout
        # As the pages say: each sample answered, a missing file an error, exit status 1.
        if "missing.png" in classify:
            assert result.returncode == 1, result.stderr
            assert "missing.png: error: cannot read file: No such file or directory" in (
                result.stderr
            )
        else:
            assert result.returncode == 0, result.stderr


def test_getting_started_makes_the_samples_the_readme_makes() -> None:
    # The tests make the samples with the README's line; the docs must show the same one.
    shown = doc_commands("model.data.samples", "docs/getting-started.md")
    assert shown == doc_commands("model.data.samples", "README.md")
