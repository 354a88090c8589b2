"""The load client speaks every protocol correctly (loadtest.callers, loadtest.closed_loop).

Behaviour only, against a real server and the real tiny export: each
protocol's requests get the SavedModel's own answer, a wrong model name is
counted as an error rather than a crash, and the v2-rest body is byte for byte
what tritonclient.http sends. No timing is asserted.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from loadtest import callers, closed_loop, corpus, protocol_bench
from tests.helpers import in_process, require_tool
from tests.service.helpers import RunningServer, settings_for

NAME = "tiny"  # the model folder's name (tests/conftest.py: model_dir)
IMAGES = corpus.fixed(count=4, size=24, fmt="JPEG", seed=3)


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[RunningServer]:
    running = RunningServer(settings_for(model_dir, versions="latest:2"))
    running.load()
    yield running
    running.stop()


def classify_all(server: RunningServer, protocol: str, model: str = NAME) -> list[int]:
    async def run() -> list[int]:
        async with callers.caller(
            protocol, IMAGES, target=server.target, rest_url=server.rest_url, model=model
        ) as call:
            return [await call(i) for i in range(len(IMAGES))]

    return asyncio.run(run())


@pytest.mark.parametrize("protocol", callers.PROTOCOLS)
def test_every_protocol_gets_the_savedmodels_answer(
    server: RunningServer, model_dir: Path, protocol: str
) -> None:
    expected = in_process(model_dir, IMAGES)
    answers = classify_all(server, protocol)
    # The top class, or one tied with it (batched float sums may differ in the last bits).
    for probabilities, answer in zip(expected, answers, strict=True):
        assert probabilities[answer] == pytest.approx(probabilities.max(), abs=1e-5)


@pytest.mark.parametrize(
    ("protocol", "failure"),
    [
        ("tfserving-grpc", grpc.aio.AioRpcError),
        ("v2-grpc", grpc.aio.AioRpcError),
        ("tfserving-rest", callers.CallFailed),
        ("v2-rest", callers.CallFailed),
    ],
)
def test_an_error_answer_raises(
    server: RunningServer, protocol: str, failure: type[Exception]
) -> None:
    with pytest.raises(failure, match="no-such-model"):
        classify_all(server, protocol, model="no-such-model")


def test_closed_loop_counts_answers_and_errors_per_protocol(
    server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for i, data in enumerate(IMAGES):
        (tmp_path / f"{i}.jpg").write_bytes(data)

    def run(protocol: str, model: str) -> dict[str, object]:
        args = ["--protocol", protocol, "--model", model, "--corpus", str(tmp_path)]
        args += ["--target", server.target, "--rest-url", server.rest_url]
        args += ["--concurrency", "2", "--window", "0.2", "--warmup", "0.1"]
        args += ["--max-seconds", "0.6"]
        assert closed_loop.main(args) == 0
        result: dict[str, object] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        return result

    good = run("v2-rest", NAME)
    assert good["protocol"] == "v2-rest" and good["errors"] == 0
    assert isinstance(good["images_per_s"], float) and good["images_per_s"] > 0
    bad = run("tfserving-grpc", "no-such-model")
    assert isinstance(bad["errors"], int) and bad["errors"] > 0 and bad["images_per_s"] == 0


def test_closed_loop_refuses_a_rest_protocol_without_its_url(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        closed_loop.main(["--protocol", "v2-rest", "--model", NAME, "--corpus", str(tmp_path)])


def test_v2_rest_body_is_what_tritonclient_sends() -> None:
    require_tool(
        "tritonclient" if importlib.util.find_spec("tritonclient") else None,
        "tritonclient is not installed (`make venv` installs it)",
    )
    # In a child: tritonclient and the vendored OIP stubs clash in one process.
    script = (
        "import sys, numpy as np, tritonclient.http as h\n"
        "x = h.InferInput('images', [1], 'BYTES')\n"
        "x.set_data_from_numpy(np.array([sys.stdin.buffer.read()], dtype=np.object_))\n"
        "body, length = h.InferenceServerClient.generate_request_body([x])\n"
        "sys.stdout.buffer.write(str(length).encode() + b'\\n' + body)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], input=IMAGES[0], capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()
    length, body = done.stdout.split(b"\n", 1)
    assert callers.v2_binary_body(IMAGES[0]) == (body, int(length))
    assert np.frombuffer(body[int(length) : int(length) + 4], "<u4")[0] == len(IMAGES[0])


def test_protocols_are_judged_against_their_own_rounds_native_run() -> None:
    # Round 0 is a slow round for everyone, round 1 a fast one: the ratios hold,
    # and so does each round's overhead over its own in-process time.
    speed = {("native", 0): 500.0, ("v2-rest", 0): 480.0, ("native", 1): 1000.0}
    speed |= {("v2-rest", 1): 950.0, ("tfserving-grpc", 0): 400.0, ("tfserving-grpc", 1): 800.0}
    p50 = {("native", 0): 6.0, ("v2-rest", 0): 6.5, ("tfserving-grpc", 0): 7.5}
    p50 |= {("native", 1): 3.0, ("v2-rest", 1): 3.5, ("tfserving-grpc", 1): 4.5}
    in_process = [5.5, 2.5]  # ms of one in-process call, by round
    calls: list[tuple[str, int]] = []
    batch1_calls: list[int] = []

    def measure(protocol: str, concurrency: int) -> dict[str, object]:
        number = sum(1 for p, c in calls if p == protocol and c == concurrency)
        calls.append((protocol, concurrency))
        return {
            "protocol": protocol,
            "concurrency": concurrency,
            "images_per_s": speed[protocol, number],
            "p50_ms": p50[protocol, number],
            "errors": 0,
            "server_cpu_ms_per_image": 1.0,
            "client_cpu_ms_per_image": 0.2,
        }

    def batch1_ms() -> float:
        # Timed once a round, after the round's high-concurrency runs, before its c=1 runs.
        batch1_calls.append(len(calls))
        return in_process[len(batch1_calls) - 1]

    result = protocol_bench.compare(
        measure,
        protocol_bench.parse("v2-rest,tfserving-grpc,native"),
        high=32,
        rounds=2,
        batch1_ms=batch1_ms,
        progress=lambda line: None,
    )
    assert batch1_calls == [3, 9]
    assert result["in_process_batch1_ms"] == in_process
    rows = {r["protocol"]: r for r in result["summary"]}
    assert list(rows) == ["native", "v2-rest", "tfserving-grpc"]
    assert rows["v2-rest"]["throughput_vs_native_each_round"] == [0.96, 0.95]
    assert rows["v2-rest"]["p50_c1_minus_native_each_round_ms"] == [0.5, 0.5]
    assert rows["v2-rest"]["meets_bar"]
    assert rows["tfserving-grpc"]["throughput_vs_native"] == pytest.approx(0.8)
    assert rows["tfserving-grpc"]["p50_c1_minus_native_ms"] == pytest.approx(1.5)
    assert not rows["tfserving-grpc"]["meets_bar"]
    # Overhead: each round's p50 at one caller minus that round's in-process call.
    assert rows["native"]["overhead_each_round_ms"] == [0.5, 0.5]
    assert rows["v2-rest"]["overhead_each_round_ms"] == [1.0, 1.0]
    assert rows["tfserving-grpc"]["overhead_ms"] == pytest.approx(2.0)
    # Native keeps its own figures but is not compared with itself.
    assert rows["native"]["images_per_s"] == 750.0 and rows["native"]["p50_c1_ms"] == 4.5
    assert not {"throughput_vs_native", "p50_c1_minus_native_ms", "meets_bar"} & set(rows["native"])
    lines = protocol_bench.table(result).splitlines()
    native = next(line.split() for line in lines if line.split()[:1] == ["native"])
    assert native == ["native", "750.0", "-", "4.50", "-", "+0.50", "1.000", "0.200", "0", "-"]
    tfserving = next(line.split() for line in lines if line.split()[:1] == ["tfserving-grpc"])
    assert tfserving[-1] == "MISSED" and tfserving[5] == "+2.00"
    assert "5.50, 2.50 ms" in lines[-1]
    with pytest.raises(ValueError, match="unknown protocol"):
        protocol_bench.parse("v2-rest,soap")
