"""`python -m loadtest.bench`: served vs in-process throughput, in one run.

    python -m loadtest.bench --model-dir models/vgg-mini          # ~9 minutes on 2 cores

Measures on this machine, with the same SavedModel and the same images:

1. in-process: the `serving_default` signature called directly, at batch
   sizes 1, 8, 32 and the server's max batch size;
2. served: a closed-loop grpc.aio client (its own process) keeping C requests
   in flight, C = 1, 2, 4, ... 64; each level measured over windows until
   three agree within 10%; plus the batch-job paths (ClassifyBatch,
   ClassifyStream);
3. every protocol against native Classify on the same server, at
   concurrency 32 and 1, in rounds, and each protocol's per-call overhead
   (p50 at concurrency 1 minus an in-process single-image call)
   (loadtest.protocol_bench; `--protocols`);
4. batching off vs on at the highest concurrency;
5. serving overhead: a model with negligible compute against a bare grpc.aio
   server that answers a constant, with the same client.

Prints a table, writes JSON and a PNG plot (throughput vs p99 latency per
concurrency, in-process best as a reference line) to --results. Ratios are
the figures to compare across machines; absolute numbers are this machine's.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from loadtest import corpus, inprocess, protocol_bench, runner
from loadtest.callers import PROTOCOLS
from loadtest.serverproc import bare_server, local_server

LEVELS = (1, 2, 4, 8, 16, 32, 64)


def device_description(kind: str) -> str:
    from model import device

    described = device.describe()
    if kind == "gpu" and not described.startswith("GPU"):
        raise SystemExit("--device gpu: TensorFlow sees no GPU here")
    return described


def trivial_model(folder: Path) -> Path:
    """A model with negligible compute (8x8 input, one 1-filter block)."""
    from model.architecture import VGGConfig, build_vgg
    from model.export import export_model
    from model.preprocessing import PreprocessConfig

    config = VGGConfig(
        blocks=(1,), base_filters=1, dense_units=(), input_size=(8, 8), num_classes=5, dropout=0.0
    )
    export_model(
        build_vgg(config), PreprocessConfig(8, 8), [f"c{i}" for i in range(5)], folder / "trivial"
    )
    return folder / "trivial"


def table(result: dict[str, Any]) -> str:
    lines = [
        f"device: {result['device']}   tensorflow {result['tensorflow']}   "
        f"server: max batch {result['max_batch_size']}, "
        f"timeout {result['batch_timeout_ms']} ms",
        "",
        "in-process (serving_default, same images):",
        "  batch   images/s   ms/batch",
    ]
    for row in result["in_process"]:
        lines.append(f"  {row['batch']:5d} {row['images_per_s']:10.1f} {row['ms_per_batch']:10.2f}")
    best = result["in_process_best"]
    lines += [
        "",
        "served (closed loop, Classify: one image per request):",
        "   conc   images/s  of in-proc   p50 ms   p90 ms   p99 ms  errors  client cpu",
    ]
    for row in result["served"]:
        lines.append(
            f"  {row['concurrency']:5d} {row['images_per_s']:10.1f} "
            f"{row['images_per_s'] / best:10.0%} {row['p50_ms']:8.2f} {row['p90_ms']:8.2f} "
            f"{row['p99_ms']:8.2f} {row['errors']:7d} {row['client_cpu_share']:10.0%}"
        )
    for key, label in (("batch_path", "ClassifyBatch"), ("stream_path", "ClassifyStream")):
        row = result[key]
        lines.append(
            f"  {label}: {row['images_per_s']:.1f} images/s "
            f"= {row['images_per_s'] / best:.0%} of in-process"
        )
    if result.get("protocols"):
        lines += ["", protocol_bench.table(result["protocols"])]
    r = result["ratios"]
    lines += [
        "",
        "ratios:",
        f"  best served Classify / best in-process      {r['served_vs_in_process']:.0%}",
        f"  batch-job path / best in-process            {r['batch_path_vs_in_process']:.0%}",
        f"  p50 at concurrency 1 - in-process batch 1   {r['p50_c1_minus_batch1_ms']:+.2f} ms",
        f"  batching on / off at concurrency {LEVELS[-1]:<11d}{r['batching_on_vs_off']:.2f}x",
        f"  trivial model / bare grpc.aio server        {r['trivial_vs_bare']:.0%} "
        f"({result['overhead']['trivial']['requests_per_s']:.0f} vs "
        f"{result['overhead']['bare']['requests_per_s']:.0f} req/s)",
    ]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    served = result["served"]
    xs = [r["images_per_s"] for r in served]
    ys = [r["p99_ms"] for r in served]
    ax.plot(xs, ys, "o-", label="served, batching on")
    for row in served:
        ax.annotate(
            f"c={row['concurrency']}",
            (row["images_per_s"], row["p99_ms"]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=8,
        )
    off = result["batching_off"]
    ax.plot([off["images_per_s"]], [off["p99_ms"]], "s", label=f"batching off, c={LEVELS[-1]}")
    ax.axvline(result["in_process_best"], color="grey", linestyle="--", label="in-process best")
    ax.set_xlabel("images/s")
    ax.set_ylabel("p99 latency (ms)")
    ax.set_yscale("log")
    ax.set_title(f"vggserve: {result['model']} on {result['device']}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model-dir", default="models/vgg-mini")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--image-size", type=int, default=128, help="square JPEG side (default: 128)")
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--batch-timeout-ms", type=float, default=2.0)
    p.add_argument("--levels", default=",".join(map(str, LEVELS)), help="concurrency levels")
    p.add_argument("--seconds", type=float, default=3.0, help="in-process time per batch size")
    p.add_argument("--window", type=float, default=2.0, help="seconds per measuring window")
    p.add_argument("--max-seconds", type=float, default=20.0, help="cap per served level")
    p.add_argument(
        "--protocols",
        default=",".join(protocol_bench.DEFAULT),
        help=f"protocols measured against native Classify at concurrency {runner.PROTOCOL_LEVEL} "
        f"and {runner.ONE_CALLER} (comma list of {', '.join(PROTOCOLS)}; 'none': skip; "
        f"default: {','.join(protocol_bench.DEFAULT)})",
    )
    p.add_argument("--protocol-rounds", type=int, default=2, help="rounds of the protocol runs")
    p.add_argument("--protocol-max-seconds", type=float, default=10.0, help="cap per protocol run")
    p.add_argument("--results", default="results/bench")
    args = p.parse_args(argv)
    try:
        protocols = protocol_bench.parse(args.protocols)
    except ValueError as exc:
        p.error(f"--protocols: {exc}")
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # children inherit it too
    levels = [int(x) for x in args.levels.split(",")]
    # Every closed-loop run measures with the same window and cap.
    measure = functools.partial(
        runner.closed_loop, window=args.window, max_seconds=args.max_seconds
    )
    device_text = device_description(args.device)  # fails early when --device gpu has none
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    from model import layout

    model_dir = Path(args.model_dir)
    versions = layout.list_versions(model_dir)
    if not versions:
        raise SystemExit(f"no exported version under {model_dir}: run `make train` first")
    version_dir = model_dir / str(versions[-1])
    import tensorflow as tf

    images = corpus.fixed(64, args.image_size, "JPEG")
    server_args = [
        "--max-batch-size",
        str(args.max_batch_size),
        "--batch-timeout-ms",
        str(args.batch_timeout_ms),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        corpus_dir = Path(tmp) / "corpus"
        corpus_dir.mkdir()
        for i, data in enumerate(images):
            (corpus_dir / f"{i:03d}.jpg").write_bytes(data)
        tiny_dir = Path(tmp) / "tiny"
        tiny_dir.mkdir()
        (tiny_dir / "000.png").write_bytes(corpus.fixed(1, 8, "PNG")[0])
        print("in-process ...", flush=True)
        sizes = sorted({1, 8, 32, args.max_batch_size})
        signature = inprocess.load(version_dir)
        in_proc = inprocess.throughput(signature, images, sizes, args.seconds)
        best = max(r["images_per_s"] for r in in_proc)
        served = []
        with local_server(model_dir, server_args, log_path=results / "server.log") as child:
            target = child.target
            for level in levels:
                print(f"served, concurrency {level} ...", flush=True)
                served.append(measure(target, corpus_dir, level))
            print("batch-job paths ...", flush=True)
            batch_path = measure(target, corpus_dir, 2, "batch", args.max_batch_size)
            stream_path = measure(target, corpus_dir, 2 * args.max_batch_size, "stream")
            by_protocol = None
            if protocols:
                by_protocol = protocol_bench.compare(
                    runner.protocol_measure(
                        child,
                        corpus_dir,
                        model_dir.name,
                        window=args.window,
                        max_seconds=args.protocol_max_seconds,
                    ),
                    protocols,
                    high=runner.PROTOCOL_LEVEL,
                    rounds=args.protocol_rounds,
                    batch1_ms=lambda: inprocess.batch1_ms(signature, images),
                )
        print("batching off ...", flush=True)
        with local_server(model_dir, [*server_args, "--no-batching"]) as child:
            off = measure(child.target, corpus_dir, levels[-1])
        print("serving overhead ...", flush=True)
        trivial = trivial_model(Path(tmp))
        with local_server(trivial, server_args) as child:
            trivial_run = measure(child.target, tiny_dir, levels[-1])
        with bare_server() as child:
            bare_run = measure(child.target, tiny_dir, levels[-1])
    best_served = max(served, key=lambda r: r["images_per_s"])
    batch1 = next(r for r in in_proc if r["batch"] == 1)
    at_top = next(r for r in served if r["concurrency"] == levels[-1])
    result: dict[str, Any] = {
        "model": f"{model_dir.name} v{versions[-1]}",
        "device": device_text,
        "tensorflow": tf.__version__,
        "image": f"{args.image_size}x{args.image_size} JPEG",
        "max_batch_size": args.max_batch_size,
        "batch_timeout_ms": args.batch_timeout_ms,
        "in_process": in_proc,
        "in_process_best": best,
        "served": served,
        "batch_path": batch_path,
        "stream_path": stream_path,
        "batching_off": off,
        "protocols": by_protocol,
        "overhead": {"trivial": trivial_run, "bare": bare_run},
        "ratios": {
            "served_vs_in_process": best_served["images_per_s"] / best,
            "batch_path_vs_in_process": max(batch_path["images_per_s"], stream_path["images_per_s"])
            / best,
            "p50_c1_minus_batch1_ms": served[0]["p50_ms"] - batch1["ms_per_batch"],
            "batching_on_vs_off": at_top["images_per_s"] / off["images_per_s"],
            "trivial_vs_bare": trivial_run["requests_per_s"] / bare_run["requests_per_s"],
        },
        "command": "python -m loadtest.bench " + " ".join(argv or sys.argv[1:]),
    }
    (results / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, results / "bench.png")
    print()
    print(table(result))
    print(f"\nwrote {results / 'bench.json'} and {results / 'bench.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
