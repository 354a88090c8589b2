"""Client-side tools: the gRPC client, the batch job over folders, the health probe.

    client/, explain.py     the library (Client, results, image messages, Explain)
    cli/                    the command lines (`python -m vggclient.client`, `.healthcheck`)
    batch.py, batch_ray.py  the batch tool (`python -m vggclient.batch`)

Apart from the server package (service/): nothing here loads a model for serving.
"""
