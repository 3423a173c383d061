"""deploy/kubernetes: valid against the Kubernetes schemas, and true to palm.yaml.

``kubernetes-validate`` checks every manifest of the kustomize base (and of
metrics/) strictly against the schemas of one Kubernetes version, without a
cluster. The rest checks what a schema cannot: the masters' ports are those
palm.yaml fixes, each worker Deployment connects to its master's db endpoint,
every palm container has probes on palm's own health checks, and the worker
Deployment of ``demo`` scales on palm's backlog metric.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from palm.ops.config import ENDPOINTS, load_deployment

kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "kubernetes"
VERSION = "1.30.0"  # the oldest Kubernetes the manifests are meant for


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def base_resources() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    out: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        out += documents(BASE / name)
    return out


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in base_resources() if d["kind"] == kind}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_every_manifest_is_valid_against_the_kubernetes_schemas() -> None:
    files = sorted(BASE.rglob("*.yaml"))
    listed = set(yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"])
    top = {p.name for p in files if p.parent == BASE} - {"kustomization.yaml"}
    assert top == listed, "every manifest of the base is in kustomization.yaml"
    checked = 0
    for path in files:
        for doc in documents(path):
            if doc["kind"] == "Kustomization":
                continue
            kubernetes_validate.validate(doc, VERSION, strict=True)
            checked += 1
    assert checked >= 12


def test_the_validator_rejects_a_broken_manifest() -> None:
    deployment = by_kind("Deployment")["masters"]
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    container(broken)["readinesProbe"] = container(broken).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSION, strict=True)


def test_the_masters_open_the_ports_palm_yaml_fixes_and_workers_reach_their_db() -> None:
    config = load_deployment(ROOT / "palm.yaml")
    deployments = by_kind("Deployment")
    service_ports = {p["port"] for p in by_kind("Service")["masters"]["spec"]["ports"]}
    container_ports = {p["containerPort"] for p in container(deployments["masters"])["ports"]}
    assert service_ports == container_ports
    for name in ("demo", "maths"):
        service = config.services[name]
        ports = {service.port + i for i in range(len(ENDPOINTS))}
        assert ports <= service_ports, name
        command = container(deployments[f"workers-{name}"])["command"]
        db = f"tcp://masters:{service.port + ENDPOINTS.index('db')}"
        assert command[command.index("--connect") + 1] == db
    assert config.services["echo"].port in service_ports


def test_every_palm_container_has_probes_on_palm_health_checks() -> None:
    deployments = by_kind("Deployment")
    assert set(deployments) >= {
        "redis",
        "masters",
        "workers-demo",
        "workers-maths",
        "gateway",
        "envoy",
    }
    for name, deployment in deployments.items():
        c = container(deployment)
        assert "readinessProbe" in c and "livenessProbe" in c, name
    masters = container(deployments["masters"])
    assert masters["livenessProbe"]["exec"]["command"][:2] == ["palm", "health"]
    for name in ("workers-demo", "workers-maths"):
        probe = container(deployments[name])["livenessProbe"]["exec"]["command"]
        assert probe[:3] == ["palm", "health", "--listed"], name
    gateway = container(deployments["gateway"])
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/healthz"


def test_the_demo_workers_scale_on_palm_backlog() -> None:
    hpa = by_kind("HorizontalPodAutoscaler")["workers-demo"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "workers-demo"
    assert hpa["spec"]["scaleTargetRef"]["name"] in by_kind("Deployment")
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"]["name"] == "palm_backlog"
    assert metric["external"]["metric"]["selector"]["matchLabels"] == {"server": "demo"}
    assert metric["external"]["target"]["type"] == "AverageValue"
