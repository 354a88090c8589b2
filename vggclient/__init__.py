"""Client-side tools: the gRPC client, the batch job over folders, the health probe.

Apart from the server package (service/): nothing here loads a model for serving.
"""
