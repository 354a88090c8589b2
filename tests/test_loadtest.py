"""The load test and the benchmark run for real, briefly, against tiny models."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import pytest

from loadtest import bench, protocol_bench
from loadtest.__main__ import main as loadtest_main
from loadtest.serverproc import bare_server


@pytest.mark.slow
def test_locust_run_records_successful_requests_and_no_failures(
    model_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    code = loadtest_main(
        [
            "--model-dir",
            str(model_dir),
            "--users",
            "4",
            "--spawn-rate",
            "4",
            "--run-time",
            "4s",
            "--results",
            str(results),
        ]
    )
    assert code == 0
    # The summary comes from locust's statistics in memory (its CSV may lag).
    summary = re.search(r"^(\d+) requests, (\d+) failed", capfd.readouterr().err, re.M)
    assert summary is not None
    assert int(summary.group(1)) > 0 and int(summary.group(2)) == 0
    with (results / "locust_stats.csv").open(newline="") as handle:
        names = {row["Name"] for row in csv.DictReader(handle)}
    assert "Aggregated" in names
    assert (results / "report.html").stat().st_size > 0


@pytest.mark.slow
def test_locust_run_fails_when_p95_exceeds_its_bound(model_dir: Path, tmp_path: Path) -> None:
    code = loadtest_main(
        [
            "--model-dir",
            str(model_dir),
            "--users",
            "2",
            "--run-time",
            "2s",
            "--results",
            str(tmp_path),
            "--max-p95-ms",
            "0.001",
        ]
    )
    assert code == 1


@pytest.mark.slow
def test_benchmark_writes_table_json_and_plot(model_dir: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    args = [
        "--model-dir",
        str(model_dir),
        "--levels",
        "1,4",
        "--seconds",
        "0.3",
        "--window",
        "0.5",
        "--max-seconds",
        "2",
        "--image-size",
        "32",
        "--max-batch-size",
        "8",
        "--protocols",
        "v2-rest",
        "--protocol-rounds",
        "1",
        "--protocol-max-seconds",
        "1",
        "--results",
        str(tmp_path),
    ]
    assert bench.main(args) == 0
    result = json.loads((tmp_path / "bench.json").read_text())
    assert [r["batch"] for r in result["in_process"]] == [1, 8, 32]
    assert [r["concurrency"] for r in result["served"]] == [1, 4]
    assert all(r["errors"] == 0 and r["images_per_s"] > 0 for r in result["served"])
    assert result["ratios"]["trivial_vs_bare"] > 0
    assert result["device"].startswith("CPU")
    assert (tmp_path / "bench.png").stat().st_size > 0
    protocols = result["protocols"]
    rows = {r["protocol"]: r for r in protocols["summary"]}
    assert list(rows) == ["native", "v2-rest"]
    assert rows["v2-rest"]["errors"] == 0 and rows["v2-rest"]["server_cpu_ms_per_image"] > 0
    assert_protocol_summary(protocols)
    out = capsys.readouterr().out
    assert "best served Classify / best in-process" in out
    assert "v2-rest" in out and "vs native" in out and "overhead" in out


def assert_protocol_summary(protocols: dict[str, Any]) -> None:
    """One round's summary holds that round's own runs: ratios, deltas and overheads."""
    assert protocols["rounds"] == 1
    (batch1,) = protocols["in_process_batch1_ms"]
    assert batch1 > 0
    rows = {r["protocol"]: r for r in protocols["summary"]}
    native = rows.pop("native")
    # Native is the reference: its own figures, no ratio to itself.
    assert native["errors"] == 0 and native["images_per_s"] > 0
    assert "throughput_vs_native" not in native and "meets_bar" not in native
    assert rows, "no protocol was compared with native"
    for row in [native, *rows.values()]:
        assert row["overhead_ms"] == pytest.approx(row["p50_c1_ms"] - batch1)
    for row in rows.values():
        assert row["throughput_vs_native"] == pytest.approx(
            row["images_per_s"] / native["images_per_s"]
        )
        assert row["p50_c1_minus_native_ms"] == pytest.approx(
            row["p50_c1_ms"] - native["p50_c1_ms"]
        )


@pytest.mark.slow
def test_protocol_bench_alone_writes_ratios_and_overheads(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--model-dir", str(model_dir), "--image-size", "32", "--protocols", "v2-grpc"]
    args += ["--rounds", "1", "--window", "0.4", "--max-seconds", "1", "--results", str(tmp_path)]
    assert protocol_bench.main(args) == 0
    result = json.loads((tmp_path / "protocols.json").read_text())
    assert [r["protocol"] for r in result["summary"]] == ["native", "v2-grpc"]
    assert result["summary"][1]["errors"] == 0
    assert_protocol_summary(result)
    # Two levels for each protocol, each named in the raw runs.
    assert sorted((r["protocol"], r["concurrency"]) for r in result["runs"]) == [
        ("native", 1),
        ("native", 32),
        ("v2-grpc", 1),
        ("v2-grpc", 32),
    ]
    out = capsys.readouterr().out
    assert "overhead: c=1 p50 - in-process call on one image" in out


def test_protocol_bench_names_a_folder_without_a_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        protocol_bench.main(["--model-dir", str(tmp_path), "--results", str(tmp_path / "out")])
    assert exited.value.code == 2
    assert f"--model-dir: no exported version under {tmp_path}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_crashed_locust_run_fails_whatever_a_previous_run_left(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A previous run's report, as good as it gets.
    stale = tmp_path / "locust_stats.csv"
    stale.write_text(
        "Type,Name,Request Count,Failure Count,Requests/s,50%,95%\n"
        "grpc,Aggregated,1000,0,100.0,5,9\n"
    )
    # An invalid --run-time: locust stops before sending anything.
    code = loadtest_main(
        ["--target", "127.0.0.1:9", "--run-time", "soon", "--results", str(tmp_path)]
    )
    assert code != 0
    assert not stale.exists()
    assert "FAIL: locust exited with code" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize(("max_p95_ms", "expected"), [("0.001", 1), ("60000", 0)])
def test_locust_applies_the_thresholds_itself(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], max_p95_ms: str, expected: int
) -> None:
    # The constant-reply server answers Classify only: ClassifyBatch calls fail,
    # so the failure bound is lifted to see the p95 bound alone decide.
    with bare_server() as child:
        code = loadtest_main(
            [
                "--target",
                child.target,
                "--users",
                "2",
                "--spawn-rate",
                "2",
                "--run-time",
                "2s",
                "--results",
                str(tmp_path),
                "--max-failure-ratio",
                "1",
                "--max-p95-ms",
                max_p95_ms,
            ]
        )
    assert code == expected
    err = capfd.readouterr().err
    assert ("FAIL: p95" in err) == (expected == 1)
