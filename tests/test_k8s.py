"""deploy/k8s/, checked offline: no cluster and no container runtime run here.

- Every manifest passes `kubernetes-validate --strict` (bundled OpenAPI
  schemas; misspelled or misplaced fields fail) for three Kubernetes versions.
- What the manifests say about the server agrees with the server: probes name
  its health service, every VGGSERVE_* variable and flag parses with
  service/settings.py, ports match, and the commands exist in the image the
  Dockerfile builds.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from model.distributed import tf_config_from_env
from model.train import parse_args as train_args
from service.server import SERVICE_NAME
from service.settings import ENV_PREFIX, Settings
from tests.helpers import DOCKERFILE, VALIDATE, VERSIONS, env_of, require_tool, stage

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
FILES = sorted(K8S.glob("*.yaml")) + sorted((K8S / "gpu").glob("*.yaml"))


def load(kind: str) -> list[dict[str, Any]]:
    docs = [doc for path in FILES for doc in yaml.safe_load_all(path.read_text()) if doc]
    return [doc for doc in docs if doc["kind"] == kind]


def one(kind: str, name: str) -> dict[str, Any]:
    (doc,) = [doc for doc in load(kind) if doc["metadata"]["name"] == name]
    return doc


DEPLOYMENTS = ["vggserve", "vggserve-gpu"]


def server(name: str) -> dict[str, Any]:
    (container,) = one("Deployment", name)["spec"]["template"]["spec"]["containers"]
    return container


def settings_of(container: dict[str, Any]) -> Settings:
    """The settings the server would run with: the container's flags over its env."""
    return Settings.parse(container["args"], env=env_of(container))


def test_the_expected_manifests_are_there() -> None:
    assert {
        (d["kind"], d["metadata"]["name"])
        for path in FILES
        for d in yaml.safe_load_all(path.read_text())
    } == {
        ("Deployment", "vggserve"),
        ("Deployment", "vggserve-gpu"),
        ("Service", "vggserve"),
        ("Service", "vggserve-headless"),
        ("HorizontalPodAutoscaler", "vggserve"),
        ("PodDisruptionBudget", "vggserve"),
        ("PersistentVolumeClaim", "vggserve-models"),
        ("Job", "vggserve-train"),
        ("Job", "vggserve-train-multi"),
        ("Service", "vggserve-train-multi"),
    }


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_passes_strict_schema_validation(version: str) -> None:
    validate = require_tool(VALIDATE, "kubernetes-validate is not installed (requirements-dev.txt)")
    result = subprocess.run(
        [validate, "--strict", "--quiet", "-k", version, *map(str, FILES)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_strict_validation_catches_a_misspelled_field(tmp_path: Path) -> None:
    validate = require_tool(VALIDATE, "kubernetes-validate is not installed (requirements-dev.txt)")
    bad = tmp_path / "bad.yaml"
    text = (K8S / "deployment.yaml").read_text()
    bad.write_text(text.replace("readOnlyRootFilesystem", "readOnlyRootFileSystem"))
    result = subprocess.run(
        [validate, "--strict", "--quiet", "-k", VERSIONS[0], str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "readOnlyRootFileSystem" in result.stdout + result.stderr


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_probes_are_native_grpc_on_the_servers_health_service(name: str) -> None:
    container = server(name)
    settings = settings_of(container)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": settings.port, "service": SERVICE_NAME}, probe


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_env_names_flags_and_ports_match_the_settings(name: str) -> None:
    container = server(name)
    fields = {f.upper() for f in Settings.__dataclass_fields__}
    for var in env_of(container):
        assert var.startswith(ENV_PREFIX) and var.removeprefix(ENV_PREFIX) in fields, var
    settings = settings_of(container)  # exits (SystemExit) on any unknown flag or bad value
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    # REST and /metrics share the http port (no separate metrics port).
    assert ports == {"grpc": settings.port, "http": settings.rest_port}
    assert settings.metrics_port == -1
    annotations = one("Deployment", name)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(settings.rest_port)
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_termination_grace_covers_prestop_and_the_servers_drain(name: str) -> None:
    pod = one("Deployment", name)["spec"]["template"]["spec"]
    container = server(name)
    settings = settings_of(container)
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    needed = pre_stop + settings.drain_grace_s + settings.drain_timeout_s
    # Enough for the whole drain, and not much more (a dead pod is not kept long).
    assert needed < pod["terminationGracePeriodSeconds"] <= needed + 10
    # A pod going away is out of the endpoints well inside its grace.
    readiness = container["readinessProbe"]
    assert readiness["periodSeconds"] * readiness["failureThreshold"] <= settings.drain_grace_s


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        *(("Deployment", n) for n in DEPLOYMENTS),
        ("Job", "vggserve-train"),
        ("Job", "vggserve-train-multi"),
    ],
)
def test_pods_run_locked_down_with_resources(kind: str, name: str) -> None:
    pod = one(kind, name)["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    # The image's user: a uid the Dockerfile creates.
    assert f"--uid {pod['securityContext']['runAsUser']} " in DOCKERFILE
    for container in pod["containers"]:
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        resources = container["resources"]
        assert set(resources["requests"]) >= {"cpu", "memory"}
        assert set(resources["limits"]) >= {"cpu", "memory"}


def test_the_server_command_is_the_images_entrypoint() -> None:
    for name in DEPLOYMENTS:
        # No `command`: the image's ENTRYPOINT runs, with the manifest's args.
        assert "command" not in server(name)
    assert re.search(r'^ENTRYPOINT \["python", "-m", "service"\]$', stage("app"), re.M)
    assert "COPY service/ service/" in stage("app")
    for target in ("runtime", "gpu"):
        # The images the Deployments name are built on `app` and keep its entrypoint.
        assert f"FROM app AS {target}\n" in DOCKERFILE
        assert "ENTRYPOINT" not in stage(target), target
    assert server("vggserve")["image"].endswith(":latest")
    assert server("vggserve-gpu")["image"].endswith(":gpu")


def test_the_training_job_writes_the_volume_the_servers_read() -> None:
    job = one("Job", "vggserve-train")["spec"]["template"]["spec"]
    (train,) = job["containers"]
    python, flag, module = train["command"]
    assert (python, flag) == ("python", "-m")
    # The module is in the image: the Dockerfile copies its package.
    assert f"COPY {module.split('.')[0]}/ " in stage("app")
    options = train_args(train["args"])
    claims = {
        v["name"]: v["persistentVolumeClaim"]
        for v in job["volumes"]
        if "persistentVolumeClaim" in v
    }
    (mount,) = [m for m in train["volumeMounts"] if m["name"] in claims]
    assert not mount.get("readOnly") and options.output == mount["mountPath"]
    for name in DEPLOYMENTS:
        pod = one("Deployment", name)["spec"]["template"]["spec"]
        served = {
            v["name"]: v["persistentVolumeClaim"]
            for v in pod["volumes"]
            if "persistentVolumeClaim" in v
        }
        (serve_mount,) = [m for m in server(name)["volumeMounts"] if m["name"] in served]
        assert served[serve_mount["name"]]["claimName"] == claims[mount["name"]]["claimName"]
        assert serve_mount["readOnly"] is True
        # The server's model folder is the one the job exports to.
        model_dir = Path(settings_of(server(name)).model_dir)
        assert model_dir == Path(serve_mount["mountPath"]) / options.name
    assert one("PersistentVolumeClaim", "vggserve-models")["spec"]["accessModes"] == [
        "ReadWriteMany"
    ]


def test_services_speak_h2c_to_every_server_pod() -> None:
    for name in ("vggserve", "vggserve-headless"):
        service = one("Service", name)["spec"]
        grpc_port = next(p for p in service["ports"] if p["name"] == "grpc")
        assert grpc_port["appProtocol"] == "kubernetes.io/h2c"
        assert grpc_port["targetPort"] == "grpc"
        for deployment in DEPLOYMENTS:
            labels = one("Deployment", deployment)["spec"]["template"]["metadata"]["labels"]
            assert service["selector"].items() <= labels.items(), (name, deployment)
    assert one("Service", "vggserve-headless")["spec"]["clusterIP"] == "None"


def test_deployments_do_not_share_pods_and_the_pdb_covers_both() -> None:
    selectors = [one("Deployment", n)["spec"]["selector"]["matchLabels"] for n in DEPLOYMENTS]
    assert selectors[0] != selectors[1]
    pdb = one("PodDisruptionBudget", "vggserve")["spec"]
    for name in DEPLOYMENTS:
        labels = one("Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert pdb["selector"]["matchLabels"].items() <= labels.items()
    hpa = one("HorizontalPodAutoscaler", "vggserve")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "vggserve",
    }
    assert hpa["minReplicas"] >= 2  # with the PDB's maxUnavailable 1, a drain keeps one serving


def test_the_gpu_overlay_asks_for_a_gpu() -> None:
    resources = server("vggserve-gpu")["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in server("vggserve")["resources"]["limits"]


def test_the_multi_worker_job_gives_each_indexed_pod_its_place_in_the_cluster() -> None:
    job = one("Job", "vggserve-train-multi")
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    (train,) = pod["containers"]
    options = train_args(train["args"])
    assert options.distributed and options.output == "/models"
    assert spec["completionMode"] == "Indexed"
    workers = spec["completions"]
    assert spec["parallelism"] == workers  # every worker runs at once, or none trains
    # Each pod's DNS name: <job>-<index>.<subdomain>, through the headless Service.
    service = one("Service", "vggserve-train-multi")["spec"]
    assert service["clusterIP"] == "None" and pod["subdomain"] == "vggserve-train-multi"
    assert service["selector"] == {"batch.kubernetes.io/job-name": "vggserve-train-multi"}
    (port,) = service["ports"]
    assert {p["containerPort"] for p in train["ports"]} == {port["targetPort"]}
    env = env_of(train)
    for index in range(workers):
        # What model/distributed.py builds in pod <index> (Kubernetes sets the index).
        config = json.loads(tf_config_from_env({**env, "JOB_COMPLETION_INDEX": str(index)}) or "")
        assert config["task"] == {"type": "worker", "index": index}
        assert config["cluster"]["worker"] == [
            f"vggserve-train-multi-{i}.vggserve-train-multi:{port['port']}" for i in range(workers)
        ]
    # It writes the volume the servers read, like the one-worker job.
    (claim,) = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert claim["persistentVolumeClaim"]["claimName"] == "vggserve-models"
