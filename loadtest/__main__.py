"""`python -m loadtest`: a headless locust run that can fail.

Runs locust against --target, or, without one, against a local server it
starts on a free port with --model-dir (and stops after). Writes locust's CSV
and HTML reports to --results and prints a summary. Locust itself judges the
run (see the thresholds in loadtest/locustfile.py) and its exit code is this
command's: non-zero when the failure ratio or the p95 latency passes its
bound, or when locust could not run at all.
"""

from __future__ import annotations

import argparse
import contextlib
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
        "--explain-share",
        type=float,
        default=0.0,
        help="share of single-image calls sent as Explain (Grad-CAM) instead of Classify",
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


REPORTS = (
    "locust_stats.csv",
    "locust_stats_history.csv",
    "locust_failures.csv",
    "locust_exceptions.csv",
    "report.html",
)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    # A previous run's reports must not pass for this run's.
    for name in REPORTS:
        (results / name).unlink(missing_ok=True)
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
            "--max-failure-ratio",
            str(args.max_failure_ratio),
            "--max-p95-ms",
            str(args.max_p95_ms),
            "--explain-share",
            str(args.explain_share),
        ]
        print(f"locust: {args.users} users against {target} for {args.run_time}", flush=True)
        code = subprocess.run(command, check=False).returncode
    print(f"reports in {results}/")
    if code != 0:
        print(f"FAIL: locust exited with code {code}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
