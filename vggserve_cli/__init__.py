"""The `vggserve` console command: one entry point for every tool.

    vggserve [--verbose] COMMAND [ARGS...]

entry.py dispatches to the module each `python -m` form runs, imported only
when its command runs; quiet.py hides TensorFlow's start-up lines. Nothing
here imports TensorFlow, gRPC or the server.
"""
