"""`python -m loadtest`: a headless locust run that can fail.

Runs locust against --target, or, without one, against a local server it
starts on a free port with --model-dir (and stops after). Writes locust's CSV
and HTML reports to --results, prints a summary, and exits non-zero when the
failure ratio or the p95 latency passes its bound.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from loadtest.serverproc import local_server

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m loadtest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--target", help="host:port of a running server (default: start one)")
    p.add_argument("--model-dir", default="models/vgg-mini", help="model for the local server")
    p.add_argument("--users", type=int, default=16, help="simulated users (default: 16)")
    p.add_argument("--spawn-rate", type=float, default=16, help="users started per second")
    p.add_argument("--run-time", default="30s", help="e.g. 30s, 2m (default: 30s)")
    p.add_argument("--results", default="results/loadtest", help="folder for CSV and HTML")
    p.add_argument(
        "--max-failure-ratio",
        type=float,
        default=0.01,
        help="fail above this share of failed requests (default: 0.01)",
    )
    p.add_argument(
        "--max-p95-ms",
        type=float,
        default=2000.0,
        help="fail when the aggregated p95 latency is above this (default: 2000)",
    )
    p.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra flag for the local server, e.g. --server-arg=--no-batching",
    )
    return p.parse_args(argv)


@contextlib.contextmanager
def target_for(args: argparse.Namespace, results: Path) -> Iterator[str]:
    if args.target:
        yield args.target
        return
    with local_server(args.model_dir, args.server_arg, log_path=results / "server.log") as child:
        yield child.target


def aggregated(stats_csv: Path) -> dict[str, str]:
    with stats_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["Name"] == "Aggregated":
                return row
    raise RuntimeError(f"{stats_csv} has no Aggregated row")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    with target_for(args, results) as target:
        command = [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(LOCUSTFILE),
            "--headless",
            "--host",
            target,
            "--users",
            str(args.users),
            "--spawn-rate",
            str(args.spawn_rate),
            "--run-time",
            args.run_time,
            "--stop-timeout",
            "10",
            "--csv",
            str(results / "locust"),
            "--html",
            str(results / "report.html"),
            "--only-summary",
            "--loglevel",
            "WARNING",
        ]
        print(f"locust: {args.users} users against {target} for {args.run_time}", flush=True)
        subprocess.run(command, check=False)
    row = aggregated(results / "locust_stats.csv")
    requests, failures = int(row["Request Count"]), int(row["Failure Count"])
    ratio = failures / requests if requests else 1.0
    p95 = float(row["95%"]) if row["95%"] not in ("", "N/A") else float("inf")
    print(
        f"{requests} requests, {failures} failed ({ratio:.2%}), "
        f"{float(row['Requests/s']):.1f} req/s, p50 {row['50%']} ms, p95 {p95:.0f} ms; "
        f"reports in {results}/"
    )
    problems = []
    if requests == 0:
        problems.append("no request completed")
    if ratio > args.max_failure_ratio:
        problems.append(f"failure ratio {ratio:.2%} > {args.max_failure_ratio:.2%}")
    if p95 > args.max_p95_ms:
        problems.append(f"p95 {p95:.0f} ms > {args.max_p95_ms:.0f} ms")
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
