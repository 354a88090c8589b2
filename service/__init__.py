"""The vggserve gRPC service: batching, model runtime, validation, client."""
