"""docs/apis/clients.md: every snippet, run as written against a real server.

The snippets address `make serve` (gRPC 127.0.0.1:8500, REST 127.0.0.1:8501,
model `vgg-mini`); here the same text runs against a server on free ports,
with those two addresses replaced and nothing else. Python snippets run in
their own process (tritonclient and the server's vendored V2 stubs cannot
share one), curl lines in bash. The bundled client's line is run by
test_readme_example.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, doc_commands, require_tool, shell_lines
from tests.service.helpers import RunningServer, addressed

PAGE = "docs/apis/clients.md"
TEXT = (ROOT / PAGE).read_text()
PYTHON = re.findall(r"```python\n(.*?)```", TEXT, re.S)
CURL = shell_lines(TEXT, "curl ")


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clients")
    (make_samples,) = doc_commands("model.data.samples", "README.md")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(make_samples, cwd=folder, env=env, check=True, timeout=120)
    return folder


def test_the_page_has_every_protocols_snippet() -> None:
    assert len(PYTHON) == 2  # TF Serving stubs, tritonclient grpc (http: the same, see below)
    assert "tensorflow_serving.apis" in PYTHON[0] and "tritonclient.grpc" in PYTHON[1]
    assert {re.search(r"/(v1|v2)/", line).group(1) for line in CURL} == {"v1", "v2"}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "snippet",
    [
        pytest.param(PYTHON[0], id="tfserving-grpc"),
        pytest.param(PYTHON[1], id="v2-grpc"),
        # "the same lines with `import tritonclient.http as triton` and 127.0.0.1:8501"
        pytest.param(
            PYTHON[1]
            .replace("import tritonclient.grpc as triton", "import tritonclient.http as triton")
            .replace("127.0.0.1:8500", "127.0.0.1:8501"),
            id="v2-http",
        ),
    ],
)
def test_python_snippet_runs_and_names_the_class(
    snippet: str, vgg_mini: RunningServer, samples: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", addressed(snippet, vgg_mini)],
        cwd=samples,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip(), "the snippet printed nothing"
    if "tritonclient" in snippet:
        # The top three as b'score:index:label', then the probabilities.
        assert re.search(r"b'[0-9.]+:\d+:\w+'", result.stdout), result.stdout


@pytest.mark.parametrize("line", CURL, ids=[f"curl-{i}" for i in range(len(CURL))])
def test_curl_line_answers_json_without_an_error(
    line: str, vgg_mini: RunningServer, samples: Path
) -> None:
    require_tool(shutil.which("curl"), "curl is not installed")
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
