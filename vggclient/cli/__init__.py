"""The client tools' command lines, apart from the library they drive.

    python -m vggclient.client IMAGE...      classify.py (and --explain: explain.py)
    python -m vggclient.healthcheck          healthcheck.py
    python -m vggclient.batch INPUT...       the batch tool, vggclient.batch (its own CLI)

connection.py holds the flags every tool shares (token, TLS) and builds a
Client from them.
"""
