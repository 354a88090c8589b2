"""The one way the gRPC Python code is made: `make protos` runs this.

Generates *_pb2.py, *_pb2.pyi and *_pb2_grpc.py beside every .proto under
protos/ (ours in protos/vggserve/v1, the vendored Open Inference Protocol in
protos/inference) with grpcio-tools. The proto include root is the repository
root and each .proto's path mirrors its Python package, so the generated
imports (`from protos.vggserve.v1 import classifier_pb2`) resolve wherever the
project is installed. `--check` regenerates into a temporary folder and fails when the
checked-in files differ (tests run it).
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = sorted((ROOT / "protos").rglob("*.proto"))


def generate(out: Path) -> list[Path]:
    """Writes the generated code under `out`; returns the files written."""
    include = Path(protoc.__file__).parent / "_proto"
    for proto in PROTOS:
        rel = proto.relative_to(ROOT)
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{ROOT}",
                f"-I{include}",
                f"--python_out={out}",
                f"--pyi_out={out}",
                f"--grpc_python_out={out}",
                str(rel),
            ]
        )
        if code != 0:
            raise SystemExit(f"protoc failed on {rel} (exit {code})")
    return sorted(p for p in out.rglob("*_pb2*.py*"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if checked-in code is stale")
    args = parser.parse_args(argv)
    if not args.check:
        for path in generate(ROOT):
            print(f"wrote {path.relative_to(ROOT)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        stale = [
            str(path.relative_to(tmp))
            for path in generate(Path(tmp))
            if not (ROOT / path.relative_to(tmp)).exists()
            or not filecmp.cmp(path, ROOT / path.relative_to(tmp), shallow=False)
        ]
    if stale:
        print("generated code is stale, run `make protos`: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
