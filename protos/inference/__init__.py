"""The Open Inference Protocol (KServe V2) gRPC API, vendored unchanged.

open_inference_grpc.proto is kserve/open-inference-protocol's
specification/protocol/open_inference_grpc.proto at commit eeb043e2c95c
(Apache License 2.0, header kept). Its package `inference` is the wire name
clients call (`/inference.GRPCInferenceService/ModelInfer`), so it cannot be
renamed; the folder mirrors it and `scripts/gen_protos.py` generates the code.
"""
