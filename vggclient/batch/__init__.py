"""The batch tool: `python -m vggclient.batch INPUT... --out FILE` (vggclient.batch.cli).

    rows.py      one row per image: its fields, how an answer becomes one,
                 which errors only say "not now"
    files.py     the images to classify: folders listed, a file's bytes or why not
    output.py    the resumable output file (CSV or JSONL), appended and flushed per row
    engine.py    what an engine is, its error, and in-process answers as the client's
    server.py    engine "server": streams to a server over gRPC, resending "not now"s
    local.py     engine "local": the SavedModel in this process, the server's batching
    ray.py       engine "ray": Ray Data feeding model actors, here or on a cluster
    overlays.py  --explain-dir: a Grad-CAM overlay per answered image
    cli.py       the flags, the run, its summary and exit status (__main__.py runs it)

Only local.py and ray.py touch the server's code, each in one function.
"""
