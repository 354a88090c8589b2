"""The protocols the server speaks, as the `protocol` label of its metrics.

One value per protocol and transport, so a dashboard can tell a TF Serving
client's traffic from a tritonclient's or a curl user's. The gRPC ones are
found from the called method's service name (interceptors see only that).
"""

from __future__ import annotations

NATIVE_GRPC = "native-grpc"
TFSERVING_GRPC = "tfserving-grpc"
TFSERVING_REST = "tfserving-rest"
V2_GRPC = "v2-grpc"
V2_REST = "v2-rest"
# The batch tool's --local mode: the core called in the same process, no wire.
IN_PROCESS = "in-process"

_GRPC_SERVICES = {
    "vggserve.v1.ImageClassifier": NATIVE_GRPC,
    "tensorflow.serving.PredictionService": TFSERVING_GRPC,
    "tensorflow.serving.ModelService": TFSERVING_GRPC,
    "inference.GRPCInferenceService": V2_GRPC,
}


def of_grpc_method(full_method: str) -> str:
    """The protocol of a gRPC method path such as `/pkg.Service/Method`."""
    service = full_method.lstrip("/").split("/", 1)[0]
    return _GRPC_SERVICES.get(service, "other-grpc")
