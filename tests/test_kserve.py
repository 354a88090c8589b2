"""deploy/kserve/, checked offline: no cluster and no KServe run here.

kubernetes-validate has no schema for KServe's custom resources (it only
warns), so the checks are ours: the ServingRuntime's container is validated
strictly as what it is (a core/v1 Container, inside a Pod), its flags and
VGGSERVE_* variables parse with service/settings.py, the ports are the ones
KServe routes (REST 8080, gRPC h2c 8081) and are the server's, and each
InferenceService names the runtime, a model format and a protocol it offers.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.settings import ENV_PREFIX, Settings
from tests.helpers import DOCKERFILE, VALIDATE, VERSIONS, env_of, require_tool, stage

ROOT = Path(__file__).resolve().parents[1]
KSERVE = ROOT / "deploy" / "kserve"
# Where KServe's storage initializer puts the model named by storageUri.
MODEL_MOUNT = "/mnt/models"


def docs() -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (doc["kind"], doc["metadata"]["name"]): doc
        for path in sorted(KSERVE.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    }


def runtime_container() -> dict[str, Any]:
    (container,) = docs()[("ServingRuntime", "vggserve")]["spec"]["containers"]
    return container


def settings_for_service(name: str) -> Settings:
    """The settings the runtime's container runs with for InferenceService `name`."""
    container = runtime_container()
    # KServe fills the {{.Name}} template with the InferenceService's name.
    args = [arg.replace("{{.Name}}", name) for arg in container["args"]]
    return Settings.parse(args, env=env_of(container))


def test_the_expected_resources_are_there() -> None:
    assert set(docs()) == {
        ("ServingRuntime", "vggserve"),
        ("InferenceService", "vgg-mini"),
        ("InferenceService", "vgg-mini-grpc"),
    }


@pytest.mark.parametrize("version", VERSIONS)
def test_the_runtime_container_passes_strict_schema_validation(
    version: str, tmp_path: Path
) -> None:
    validate = require_tool(VALIDATE, "kubernetes-validate is not installed (requirements-dev.txt)")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "vggserve-runtime-check"},
        "spec": {"containers": [runtime_container()]},
    }
    path = tmp_path / "pod.yaml"
    path.write_text(yaml.safe_dump(pod))
    result = subprocess.run(
        [validate, "--strict", "--quiet", "-k", version, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_runtime_serves_the_mounted_model_under_the_services_name() -> None:
    container = runtime_container()
    assert container["name"] == "kserve-container"  # the name KServe expects
    for var in env_of(container):
        field = var.removeprefix(ENV_PREFIX).lower()
        assert var.startswith(ENV_PREFIX) and field in Settings.__dataclass_fields__, var
    settings = settings_for_service("vgg-mini")  # exits on an unknown flag or a bad value
    assert settings.model_dir == MODEL_MOUNT
    assert settings.model_name == "vgg-mini"
    # KServe's ports: REST 8080 (the container's one port) and gRPC 8081.
    assert (settings.rest_port, settings.port) == (8080, 8081)
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [("http1", 8080)]
    # The image's ENTRYPOINT (python -m service) runs, with these flags.
    assert "command" not in container
    assert 'ENTRYPOINT ["python", "-m", "service"]' in stage("app")
    assert container["image"].endswith(":latest") and "FROM app AS runtime\n" in DOCKERFILE


def test_the_runtime_runs_locked_down_with_resources() -> None:
    container = runtime_container()
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert f"--uid {security['runAsUser']} " in DOCKERFILE
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])


@pytest.mark.parametrize(("name", "protocol"), [("vgg-mini", "v2"), ("vgg-mini-grpc", "grpc-v2")])
def test_each_inference_service_names_the_runtime_and_a_protocol_it_speaks(
    name: str, protocol: str
) -> None:
    runtime = docs()[("ServingRuntime", "vggserve")]
    model = docs()[("InferenceService", name)]["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    formats = {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["modelFormat"]["name"] in formats
    assert model["protocolVersion"] == protocol
    assert protocol in runtime["spec"]["protocolVersions"]
    # The model folder on the training Job's volume (deploy/k8s/models.yaml).
    assert model["storageUri"] == "pvc://vggserve-models/vgg-mini"
    if protocol == "grpc-v2":
        # Knative proxies HTTP/2 cleartext to the port named h2c: the gRPC port.
        (port,) = model["ports"]
        assert port["name"] == "h2c"
        assert port["containerPort"] == settings_for_service(name).port
