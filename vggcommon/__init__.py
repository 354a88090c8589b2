"""Small pieces both the server (service/) and the client tools (vggclient/) use.

Kept apart so that neither imports the other for them: command-line parsing
with one-line errors, and the reader of token files. Nothing here needs
TensorFlow or gRPC.
"""
