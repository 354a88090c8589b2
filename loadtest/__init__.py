"""Load tests (locust) and the benchmark harness for vggserve."""
