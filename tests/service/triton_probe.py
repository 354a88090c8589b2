"""Drives a live server with tritonclient, unmodified; prints what it saw as JSON.

Run in a subprocess by the tests: tritonclient registers its own copy of the
`inference` proto package, and a process that has also loaded the vendored
stubs (protos.inference) fails with "duplicate symbol". So this script
imports nothing of the project.

    python tests/service/triton_probe.py --protocol grpc --url 127.0.0.1:8500 \
        --model tiny --encoded a.png b.jpg --pixels p.npy --classes 3 --bad junk.bin
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def _client(args: argparse.Namespace) -> Any:
    if args.protocol == "grpc":
        import tritonclient.grpc as triton

        if args.ca:
            return triton, triton.InferenceServerClient(
                args.url, ssl=True, root_certificates=args.ca
            )
        return triton, triton.InferenceServerClient(args.url)
    import tritonclient.http as triton

    return triton, triton.InferenceServerClient(args.url)


def _shape(tensor: dict[str, Any]) -> list[Any]:
    return [tensor["name"], tensor["datatype"], [int(d) for d in tensor["shape"]]]


def probe(args: argparse.Namespace) -> dict[str, Any]:
    triton, client = _client(args)
    headers = {"authorization": f"Bearer {args.token}"} if args.token else None
    out: dict[str, Any] = {}

    def infer(inputs: list[Any], outputs: list[Any] | None = None) -> Any:
        return client.infer(args.model, inputs, outputs=outputs, headers=headers)

    def encoded_input(images: list[bytes], binary: bool = True) -> Any:
        tensor = triton.InferInput("images", [len(images)], "BYTES")
        if args.protocol == "http":
            tensor.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=binary)
        else:
            tensor.set_data_from_numpy(np.array(images, dtype=np.object_))
        return tensor

    try:
        out["live"] = client.is_server_live(headers=headers)
        out["ready"] = client.is_server_ready(headers=headers)
        out["model_ready"] = client.is_model_ready(args.model, headers=headers)
        out["other_model_ready"] = client.is_model_ready("no-such-model", headers=headers)
        kwargs = {"as_json": True} if args.protocol == "grpc" else {}
        server = client.get_server_metadata(headers=headers, **kwargs)
        out["server"] = {"name": server["name"], "extensions": server.get("extensions", [])}
        model = client.get_model_metadata(args.model, headers=headers, **kwargs)
        out["model"] = {
            "name": model["name"],
            "versions": model.get("versions", []),
            "platform": model["platform"],
            "inputs": [_shape(t) for t in model["inputs"]],
            "outputs": [_shape(t) for t in model["outputs"]],
        }
        images = [Path(p).read_bytes() for p in args.encoded]
        result = infer([encoded_input(images)])
        out["encoded"] = result.as_numpy("probabilities").tolist()
        out["model_version"] = result.get_response(**kwargs)["model_version"]
        if args.protocol == "http":
            # JSON instead of binary data: BYTES elements as base64 strings.
            b64 = [base64.b64encode(image) for image in images]
            want = [triton.InferRequestedOutput("probabilities", binary_data=False)]
            out["encoded_json"] = (
                infer([encoded_input(b64, binary=False)], want).as_numpy("probabilities").tolist()
            )
        if args.pixels:
            pixels = np.load(args.pixels)
            tensor = triton.InferInput("pixels", list(pixels.shape), "UINT8")
            tensor.set_data_from_numpy(pixels)
            out["pixels"] = infer([tensor]).as_numpy("probabilities").tolist()
        if args.classes:
            want = [triton.InferRequestedOutput("probabilities", class_count=args.classes)]
            strings = infer([encoded_input(images)], want).as_numpy("probabilities")
            out["classification"] = [[s.decode() for s in row] for row in strings]
        out["bad"] = []
        for path in args.bad:
            try:
                infer([encoded_input([Path(path).read_bytes()])])
                out["bad"].append({"status": "OK", "message": ""})
            except triton.InferenceServerException as exc:
                out["bad"].append({"status": str(exc.status()), "message": exc.message()})
    except triton.InferenceServerException as exc:
        out["error"] = {"status": str(exc.status()), "message": exc.message()}
    finally:
        client.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--protocol", choices=["grpc", "http"], required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--token", default="")
    parser.add_argument("--ca", default="", help="TLS: the CA file that signed the server")
    parser.add_argument("--encoded", nargs="+", default=[], help="encoded image files")
    parser.add_argument("--pixels", default="", help="a .npy uint8 array [N, H, W, C]")
    parser.add_argument("--classes", type=int, default=0, help="classification top-k")
    parser.add_argument("--bad", nargs="*", default=[], help="files each sent as one image")
    json.dump(probe(parser.parse_args()), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
