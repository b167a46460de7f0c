"""The Kubernetes deployment (deploy/k8s), rendered by the real ``kubectl kustomize`` and checked offline.

No cluster exists here: every rendered object is validated against the Kubernetes 1.32 OpenAPI schemas that
``kubernetes-validate`` carries (strict: unknown fields fail), except prometheus-operator's PodMonitor, a custom
resource those schemas lack, which is checked field by field against the Deployment it scrapes.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from toolkit.deploy import K8sParameters, render
from toolkit.deploy.cli import main as cli
from toolkit.errors import BadInputError
from toolkit.serving.server import DOCKER_IMAGE, DOCKER_PIP_PACKAGES

KUBERNETES_VERSION = "1.32.0"  # the kubectl installed here; schemas from kubernetes-validate (requirements-dev.txt)
ROOT = Path(__file__).resolve().parents[2]
ADMIN_HEADER = "admin-key"  # the header the restricted APIs ask for (README, "Kubernetes")

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="rendering needs kubectl with kustomize (not installed)")


def _objects(manifests: Path) -> dict[str, dict[str, Any]]:
    docs = [doc for doc in yaml.safe_load_all(manifests.read_text()) if doc]
    by_kind = {doc["kind"]: doc for doc in docs}
    assert len(by_kind) == len(docs), "one object of each kind expected"
    return by_kind


def _schema_errors(objects: dict[str, dict[str, Any]]) -> list[str]:
    errors = []
    for kind, obj in objects.items():
        if kind == "PodMonitor":
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            errors.append(f"{kind}: {error.message} at {list(error.path)}")
    return errors


def _pod_monitor_errors(monitor: dict[str, Any], deployment: dict[str, Any]) -> list[str]:
    """The PodMonitor fields prometheus-operator (monitoring.coreos.com/v1) needs, checked against the pods it selects."""
    pod = deployment["spec"]["template"]
    port_names = {port["name"] for container in pod["spec"]["containers"] for port in container["ports"]}
    selector = monitor["spec"]["selector"]["matchLabels"]
    errors = []
    if monitor["apiVersion"] != "monitoring.coreos.com/v1":
        errors.append(f"apiVersion {monitor['apiVersion']}")
    if not selector or any(pod["metadata"]["labels"].get(key) != value for key, value in selector.items()):
        errors.append(f"selector {selector} does not select the pods {pod['metadata']['labels']}")
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        if endpoint.get("port") not in port_names or endpoint.get("path") != "/metrics":
            errors.append(f"endpoint {endpoint} is not the pods' metrics port")
        if not re.fullmatch(r"\d+(ms|s|m)", endpoint.get("interval", "30s")):
            errors.append(f"interval {endpoint['interval']}")
    if set(monitor) - {"apiVersion", "kind", "metadata", "spec"} or set(monitor["spec"]) - {"selector", "podMetricsEndpoints"}:
        errors.append(f"unexpected fields {sorted(monitor)} / {sorted(monitor['spec'])}")
    return errors


EVERY_OPTION = K8sParameters(
    "s3://minio.storage:9000/models/repo", "24.12-py3", replicas=3, max_replicas=8, image="registry.example/triton-tokenizers",
    namespace="inference", pod_monitor=True, hpa_metric="queue-time",
)  # fmt: skip


@pytest.mark.parametrize(
    "parameters", [K8sParameters("s3://models-bucket/model_repository", replicas=2), EVERY_OPTION], ids=["defaults", "every-option"]
)
def test_render_writes_objects_valid_against_kubernetes_schemas_when_parameters_are_given(
    tmp_path: Path, parameters: K8sParameters
) -> None:
    objects = _objects(render(parameters, tmp_path / "k8s"))
    expected = {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler"} | ({"PodMonitor"} if parameters.pod_monitor else set())
    assert set(objects) == expected
    errors = _schema_errors(objects)
    if parameters.pod_monitor:
        errors += [f"PodMonitor: {e}" for e in _pod_monitor_errors(objects["PodMonitor"], objects["Deployment"])]
    assert not errors, "\n".join(errors)

    deployment, hpa = objects["Deployment"], objects["HorizontalPodAutoscaler"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert deployment["spec"]["replicas"] == parameters.replicas
    assert container["image"] == f"{parameters.image}:{parameters.image_tag}"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (parameters.replicas, parameters.hpa_max_replicas)
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["metrics"][0]["type"] == ("Resource" if parameters.hpa_metric == "cpu" else "Pods")
    # The repository URL reaches the container through the generated (hash-named) ConfigMap.
    env = {item["name"]: item for item in container["env"]}
    config_map = objects["ConfigMap"]
    assert env["REPOSITORY"]["valueFrom"]["configMapKeyRef"]["name"] == config_map["metadata"]["name"]
    assert config_map["data"]["REPOSITORY"] == parameters.repository
    for obj in objects.values():
        assert obj["metadata"].get("namespace") == parameters.namespace


def test_deployment_serves_gpus_with_probes_ports_secrets_and_shm_when_rendered(tmp_path: Path) -> None:
    objects = _objects(render(K8sParameters("s3://bucket/path"), tmp_path / "k8s"))
    pod = objects["Deployment"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["resources"]["requests"]["nvidia.com/gpu"] == container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert {p["name"]: p["port"] for p in objects["Service"]["spec"]["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert objects["Service"]["spec"]["selector"] == objects["Deployment"]["spec"]["selector"]["matchLabels"]
    probes = {
        name: (container[name]["httpGet"]["path"], container[name]["httpGet"]["port"]) for name in ("readinessProbe", "livenessProbe")
    }
    assert probes == {"readinessProbe": ("/v2/health/ready", "http"), "livenessProbe": ("/v2/health/live", "http")}
    secrets = {
        item["name"]: item["valueFrom"]["secretKeyRef"]["name"] for item in container["env"] if "secretKeyRef" in item.get("valueFrom", {})
    }
    assert set(secrets) >= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "TRITON_ADMIN_KEY"}
    assert set(secrets.values()) == {"triton-credentials"}
    (shm,) = [mount for mount in container["volumeMounts"] if mount["mountPath"] == "/dev/shm"]
    (volume,) = [volume for volume in pod["spec"]["volumes"] if volume["name"] == shm["name"]]
    assert volume["emptyDir"]["medium"] == "Memory"
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "8002"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_container_command_matches_the_docker_command_and_restricts_admin_apis_when_rendered(tmp_path: Path) -> None:
    objects = _objects(render(K8sParameters("s3://bucket/path"), tmp_path / "k8s"))
    (container,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == DOCKER_IMAGE
    script = container["args"][0]
    assert f"pip install --no-cache-dir --quiet {shlex.join(DOCKER_PIP_PACKAGES)}" in script
    arguments = shlex.split(script.split("exec ", 1)[1].replace("\\\n", " "))
    assert arguments[0] == "tritonserver"
    assert "--model-repository=$REPOSITORY" in arguments
    restricted = "model-repository,shared-memory:" + ADMIN_HEADER + "=$TRITON_ADMIN_KEY"
    assert f"--http-restricted-api={restricted}" in arguments
    assert f"--grpc-restricted-protocol={restricted}" in arguments
    # kubelet would expand $(NAME) itself: the script leaves every variable to bash.
    assert "$(" not in script


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"repository": "model_repository"}, "REPOSITORY=s3://"),
        ({"repository": "gs://bucket/path"}, "REPOSITORY=s3://"),
        ({"image_tag": "24.10 py3"}, "IMAGE_TAG="),
        ({"replicas": 0}, "REPLICAS="),
        ({"replicas": 4, "max_replicas": 2}, "MAX_REPLICAS="),
        ({"namespace": "Inference"}, "NAMESPACE="),
        ({"hpa_metric": "gpu"}, "HPA_METRIC="),
    ],
)
def test_k8s_parameters_rejects_value_naming_the_make_variable_when_invalid(change: dict[str, Any], message: str) -> None:
    with pytest.raises(BadInputError, match=re.escape(message)):
        K8sParameters(**{"repository": "s3://bucket/path", **change})


def test_cli_writes_overlay_that_kubectl_apply_k_deploys_when_run(tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    result = CliRunner().invoke(cli, ["k8s", "--repository", "s3://b/p", "--replicas", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"kubectl apply -k {out}" in result.output
    # `kubectl apply -k` renders the overlay itself: the folder alone must reproduce the manifests.
    again = subprocess.run(["kubectl", "kustomize", str(out)], capture_output=True, text=True, check=True).stdout
    assert again == (out / "manifests.yaml").read_text()
    bad = CliRunner().invoke(cli, ["k8s", "--repository", "model_repository", "--out", str(out)])
    assert bad.exit_code == 2 and "REPOSITORY=s3://" in bad.output


def test_readme_make_k8s_example_calls_the_renderer_with_its_parameters() -> None:
    readme = (ROOT / "README.md").read_text()
    (example,) = re.findall(r"^make k8s (.+)$", readme, flags=re.M)
    # Dry run: prints the recipe without running it (nor the setup it depends on).
    output = subprocess.run(["make", "-n", "k8s", *shlex.split(example)], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    values = dict(item.split("=", 1) for item in shlex.split(example))
    line = " ".join(output.replace("\\\n", " ").split())
    assert f"-m toolkit.deploy k8s --repository '{values['REPOSITORY']}' --replicas {values['REPLICAS']}" in line
    assert f"--image-tag '{values['IMAGE_TAG']}'" in line
