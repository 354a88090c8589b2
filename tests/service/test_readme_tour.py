"""The README's five-minute tour, run as written against a real server: the curl
line over REST, the explanation and the batch job (its classify lines run in
test_readme_example.py).

The tour addresses `make serve` (gRPC 127.0.0.1:8500, REST 127.0.0.1:8501, model
`vgg-mini`); here the same lines run against a server on free ports with those
addresses replaced, in a folder holding the samples the tour makes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT, doc_commands, doc_section, read_rows, require_tool, shell_lines
from tests.service.helpers import RunningServer, addressed

TOUR = doc_section("README.md", "A five-minute tour")
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture
def samples(tmp_path: Path) -> Path:
    (make_samples,) = doc_commands("model.data.samples", "README.md")
    subprocess.run(make_samples, cwd=tmp_path, env=ENV, check=True, timeout=120)
    return tmp_path


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=120)


def test_the_tour_shows_each_step() -> None:
    clients = shell_lines(TOUR, ".venv/bin/python -m vggclient.client ")
    assert any("--explain" not in line for line in clients)  # classify
    assert shell_lines(TOUR, "curl ")  # over REST
    assert any("--explain" in line for line in clients)  # an explanation
    assert shell_lines(TOUR, ".venv/bin/python -m vggclient.batch ")  # a batch job


def test_the_curl_line_answers_classes(vgg_mini: RunningServer, samples: Path) -> None:
    require_tool(shutil.which("curl"), "curl is not installed")
    for line in shell_lines(TOUR, "curl "):
        result = subprocess.run(
            ["bash", "-c", addressed(line, vgg_mini)],
            cwd=samples,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        answer = json.loads(result.stdout)
        assert "error" not in answer, answer
        # TF Serving's :classify: every class with its score, most probable first.
        (classes,) = answer["result"]
        assert len(classes) == 12
        scores = [score for _, score in classes]
        assert scores == sorted(scores, reverse=True)


def test_the_explanation_writes_an_overlay_per_image(
    vgg_mini: RunningServer, samples: Path
) -> None:
    (command,) = [c for c in doc_commands("vggclient.client", "README.md") if "--explain" in c]
    result = run([*command, "--target", vgg_mini.target], samples)
    assert result.returncode == 0, result.stderr
    out = samples / command[command.index("--explain") + 1]
    images = [a for a in command if a.endswith(".png")]
    for image in images:
        overlay = out / f"{Path(image).stem}.overlay.png"
        assert overlay.read_bytes().startswith(b"\x89PNG\r\n\x1a\n"), overlay
        assert f"-> {overlay.relative_to(samples)}" in result.stdout
    assert result.stdout.count("(explained: ") == len(images)


def test_the_batch_job_writes_a_row_per_image_and_resumes(
    vgg_mini: RunningServer, samples: Path
) -> None:
    (command,) = doc_commands("vggclient.batch", "README.md")
    command = [addressed(arg, vgg_mini) for arg in command]
    first = run(command, samples)
    assert first.returncode == 0, first.stderr
    rows = read_rows(samples / command[command.index("--out") + 1])
    assert len(rows) == 12 and {row["status"] for row in rows} == {"ok"}
    # As the tour says: run again, and the images already written are skipped.
    again = run(command, samples)
    assert again.returncode == 0, again.stderr
    assert "12 already done" in again.stderr
    assert len(read_rows(samples / command[command.index("--out") + 1])) == 12
