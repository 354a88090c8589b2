"""Client-side tools: the gRPC client, the batch job over folders, the health probe.

    client/, explain.py   the library (Client, results, image messages, Explain)
    cli/                  the command lines (`python -m vggclient.client`, `.healthcheck`)
    batch/                the batch tool (`python -m vggclient.batch`), engines and all

Apart from the server package (service/): nothing here imports it, except the
batch tool's in-process engines (vggclient.batch.local and .ray), each in one
function, lazily.
"""
