"""The service core: validation, model versions, batching, the model runtime, metrics.

Nothing here knows a wire protocol: the adapters (service/adapters/) translate
gRPC and HTTP requests into `classify.Core` calls and its errors back.
"""
