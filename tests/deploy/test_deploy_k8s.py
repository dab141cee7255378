"""k8s/: every overlay rendered with the pinned kubectl (kustomize), its wiring checked object by object,
schema-validated and scanned by tests/deploy/check_k8s.sh; each validator shown to fail on a broken copy."""

from __future__ import annotations

import copy
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .checks import (
    GATEWAY,
    GKE_ACCELERATOR_LABEL,
    TRITON,
    adapter_rule_problems,
    deployment_env,
    hpa_pod_metrics,
    k8s_objects,
    k8s_problems,
)
from .helpers import REPO, run

K8S = REPO / "k8s"
OVERLAYS = {"l4": K8S / "overlays" / "l4", "h100": K8S / "overlays" / "h100", "site": K8S / "site-example"}
CHECK_K8S = REPO / "tests" / "deploy" / "check_k8s.sh"
ADAPTER_VALUES = K8S / "prometheus-adapter" / "values.yaml"
ACCELERATORS = {"l4": "nvidia-l4", "h100": "nvidia-h100-80gb"}


def published_metrics(path: Path, pattern: str) -> set[str]:
    return set(re.findall(pattern, path.read_text()))


# The names as the code defines them, so a renamed metric fails here before an HPA goes blind.
ENGINE_METRICS = published_metrics(
    REPO / "src" / "qwen3_tts_serving" / "triton_adapter.py", r'metric\(\s*"(qwen3_tts_[a-z_]+)"'
)
GATEWAY_METRICS = {
    f"qwen3_tts_gateway_{name}"
    for name in published_metrics(
        REPO / "gateway" / "qwen3_tts_gateway" / "metrics.py", r'f"\{_PREFIX\}_([a-z_]+)"'
    )
}


def kubernetes_version() -> str:
    match = re.search(r"^K8S_VERSION \?= (\d+\.\d+\.\d+)$", (REPO / "mk" / "deploy.mk").read_text(), re.M)
    assert match, "mk/deploy.mk pins no K8S_VERSION"
    return match.group(1)


def comparable(deployment: dict[str, Any], drop_image: bool = False) -> dict[str, Any]:
    """A Deployment without what a layer may legitimately change: the generated ConfigMap hash, the image."""
    result = copy.deepcopy(deployment)
    for container in result["spec"]["template"]["spec"]["containers"]:
        if drop_image:
            container.pop("image")
        for source in container.get("envFrom", []):
            source["configMapRef"]["name"] = source["configMapRef"]["name"].rsplit("-", 1)[0]
    return result


@pytest.fixture(scope="module")
def render(tool, parse, tmp_path_factory) -> Callable[[Path], list[dict[str, Any]]]:
    out = tmp_path_factory.mktemp("rendered")

    def build(kustomization: Path) -> list[dict[str, Any]]:
        proc = run([tool("kubectl"), "kustomize", str(kustomization)], timeout=60)
        assert proc.returncode == 0, proc.stderr
        path = out / f"{kustomization.name}.yaml"
        path.write_text(proc.stdout)
        return parse("yaml-all", path)[path]

    return build


@pytest.fixture(scope="module")
def rendered(render) -> dict[str, list[dict[str, Any]]]:
    return {name: render(path) for name, path in OVERLAYS.items()}


def test_the_code_publishes_the_metrics_the_autoscalers_use() -> None:
    assert {"qwen3_tts_active_streams", "qwen3_tts_queued_streams"} <= ENGINE_METRICS
    assert "qwen3_tts_gateway_active_streams" in GATEWAY_METRICS


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_wiring(rendered, overlay: str) -> None:
    assert k8s_problems(rendered[overlay], ENGINE_METRICS, GATEWAY_METRICS) == []


def test_gpu_overlays_change_what_they_should(rendered) -> None:
    triton = {name: k8s_objects(rendered[name], "Deployment")[TRITON] for name in ACCELERATORS}
    hpas = {name: k8s_objects(rendered[name], "HorizontalPodAutoscaler")[TRITON] for name in ACCELERATORS}
    for name, accelerator in ACCELERATORS.items():
        pod = triton[name]["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {GKE_ACCELERATOR_LABEL: accelerator}
        batch = int(deployment_env(rendered[name], TRITON, "triton")["QWEN3_TTS_MAX_ACTIVE_STREAMS"])
        # The HPA asks for another GPU before a pod's batch is full.
        target = int(hpa_pod_metrics(hpas[name])["qwen3_tts_active_streams"]["averageValue"])
        assert 0 < target < batch, (name, target, batch)
        graphs = deployment_env(rendered[name], TRITON, "triton")["QWEN3_TTS_CUDA_GRAPH_BATCH_SIZES"]
        assert max(map(int, graphs.split(","))) == batch  # one captured graph fits the whole batch
    batches = {
        n: deployment_env(rendered[n], TRITON, "triton")["QWEN3_TTS_MAX_ACTIVE_STREAMS"] for n in ACCELERATORS
    }
    assert int(batches["h100"]) > int(batches["l4"])
    resources = {n: triton[n]["spec"]["template"]["spec"]["containers"][0]["resources"] for n in ACCELERATORS}
    assert resources["h100"]["requests"]["memory"] != resources["l4"]["requests"]["memory"]
    assert hpas["l4"]["spec"]["maxReplicas"] != hpas["h100"]["spec"]["maxReplicas"]
    # The gateway tier is the same whatever the GPU.
    gateways = [comparable(k8s_objects(rendered[n], "Deployment")[GATEWAY]) for n in ACCELERATORS]
    assert gateways[0] == gateways[1]


def test_site_layer_adds_only_project_values(rendered) -> None:
    site, h100 = rendered["site"], rendered["h100"]
    env = deployment_env(site, TRITON, "triton")
    assert env["QWEN3_TTS_GCS_MODEL_BUCKET"].startswith("gs://")
    assert "QWEN3_TTS_GCS_MODEL_BUCKET" not in deployment_env(h100, TRITON, "triton")
    account = k8s_objects(site, "ServiceAccount")[TRITON]["metadata"]["annotations"]
    assert account["iam.gke.io/gcp-service-account"].endswith(".iam.gserviceaccount.com")
    images = {
        c["name"]: c["image"]
        for d in k8s_objects(site, "Deployment").values()
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert all(
        re.fullmatch(r"[a-z0-9.-]+-docker\.pkg\.dev/[^:@]+:[0-9][0-9A-Za-z.-]*", i) for i in images.values()
    )
    for name in (TRITON, GATEWAY):
        mine, base = (comparable(k8s_objects(r, "Deployment")[name], drop_image=True) for r in (site, h100))
        assert mine == base


def test_the_wiring_checker_catches_mistakes(rendered) -> None:
    good = rendered["h100"]
    bad = copy.deepcopy(good)
    deployments = k8s_objects(bad, "Deployment")
    triton = deployments[TRITON]["spec"]["template"]["spec"]
    gateway = deployments[GATEWAY]["spec"]["template"]["spec"]
    triton["containers"][0]["readinessProbe"]["httpGet"]["path"] = "/v2/health/live"
    triton["containers"][0]["resources"]["limits"].pop("nvidia.com/gpu")
    triton["nodeSelector"] = {}
    gateway["containers"][0]["env"] = [
        {"name": "QWEN3_TTS_VOICE_DB_URL", "value": "postgresql+asyncpg://u:p@h/db"},
        {"name": "QWEN3_TTS_API_KEYS", "valueFrom": {"secretKeyRef": {"name": "other", "key": "api-keys"}}},
    ]
    gateway["terminationGracePeriodSeconds"] = 5
    triton["containers"][0]["args"] = ["--exit-timeout-secs=140"]  # as long as the drain: no time to unload
    hpa = k8s_objects(bad, "HorizontalPodAutoscaler")[TRITON]
    hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] = "qwen3_tts_queue_length"
    bad = [o for o in bad if not (o["kind"] == "PodDisruptionBudget" and o["metadata"]["name"] == GATEWAY)]
    bad.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "qwen3-tts"}, "data": {"a": "b"}})
    k8s_objects(bad, "Service")["qwen3-tts-triton-pods"]["spec"].pop("clusterIP")  # one connection, one pod
    problems = "\n".join(k8s_problems(bad, ENGINE_METRICS, GATEWAY_METRICS))
    for expected in (
        "readinessProbe is ('/v2/health/live', 8000)",
        "nvidia.com/gpu limits must be 1",
        "nodeSelector cloud.google.com/gke-accelerator",
        "QWEN3_TTS_VOICE_DB_URL must come from Secret qwen3-tts key voice-db-url",
        "QWEN3_TTS_API_KEYS from Secret other",
        "terminationGracePeriodSeconds 5 too short",
        "--exit-timeout-secs 140 leaves the models no time to unload after their 140 s drain",
        "metric qwen3_tts_queue_length is not one the engine publishes",
        "no Pods metric qwen3_tts_queued_streams",
        f"{GATEWAY}: no PodDisruptionBudget",
        "kind not in K8S_KINDS",
        "secret values must not be in the manifests",
        "must be a headless Service",
    ):
        assert expected in problems, expected
    assert k8s_problems(good, ENGINE_METRICS, GATEWAY_METRICS) == []


def test_the_wiring_checker_catches_a_gateway_drain_longer_than_its_grace_period(rendered) -> None:
    bad = copy.deepcopy(rendered["h100"])
    # 10 s preStop + 136 s drain + 5 s to exit > the gateway's 150 s (Triton's 180 s still covers its own).
    for config in k8s_objects(bad, "ConfigMap").values():
        config["data"]["QWEN3_TTS_GATEWAY_DRAIN_TIMEOUT_S"] = "136"
    assert k8s_problems(bad, ENGINE_METRICS, GATEWAY_METRICS) == [
        f"{GATEWAY}/gateway: terminationGracePeriodSeconds 150 too short for preStop 10 s + the drain"
    ]


def test_prometheus_adapter_exposes_every_autoscaler_metric(rendered, parse) -> None:
    values = parse("yaml", ADAPTER_VALUES)[ADAPTER_VALUES]
    used = {
        m
        for h in k8s_objects(rendered["h100"], "HorizontalPodAutoscaler").values()
        for m in hpa_pod_metrics(h)
    }
    assert used == {
        "qwen3_tts_queued_streams",
        "qwen3_tts_active_streams",
        "qwen3_tts_gateway_active_streams",
    }
    assert adapter_rule_problems(values, used) == []
    broken = copy.deepcopy(values)
    broken["rules"]["custom"][0]["resources"]["overrides"].pop("pod")
    broken["rules"]["custom"][1]["name"]["as"] = "active"
    problems = adapter_rule_problems(broken, used)
    assert problems == [
        "qwen3_tts_active_streams: no adapter rule exposes it",
        "qwen3_tts_queued_streams: the rule does not map the pod and namespace labels",
    ]


def check_k8s(tool, k8s_dir: Path = K8S) -> tuple[int, str]:
    bin_dir = str(Path(tool("kubectl")).parent)
    proc = run(["bash", str(CHECK_K8S), bin_dir, kubernetes_version(), str(k8s_dir)], timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def test_check_k8s_passes(tool) -> None:
    code, out = check_k8s(tool)
    assert code == 0, out
    assert f"3 kustomizations rendered, valid for Kubernetes {kubernetes_version()}" in out


def broken_copy(tmp_path: Path, file: str, old: str, new: str) -> Path:
    shutil.copytree(K8S, tmp_path / "k8s")
    path = tmp_path / "k8s" / file
    text = path.read_text()
    assert old in text, f"{old!r} not in {file}"
    path.write_text(text.replace(old, new, 1))
    return tmp_path / "k8s"


def test_schema_validation_catches_an_unknown_field(tool, tmp_path: Path) -> None:
    code, out = check_k8s(
        tool, broken_copy(tmp_path, "base/triton.yaml", "readinessProbe:", "readinesProbe:")
    )
    assert code != 0 and "'readinesProbe' was unexpected" in out, out


def test_schema_validation_catches_a_wrong_type(tool, tmp_path: Path) -> None:
    code, out = check_k8s(
        tool, broken_copy(tmp_path, "base/autoscalers.yaml", "maxReplicas: 10", "maxReplicas: ten")
    )
    assert code != 0 and "'ten' is not of type 'integer'" in out, out


def test_a_kind_without_a_schema_fails(tool, tmp_path: Path) -> None:
    k8s = broken_copy(
        tmp_path, "base/kustomization.yaml", "  - namespace.yaml\n", "  - namespace.yaml\n  - widget.yaml\n"
    )
    (k8s / "base" / "widget.yaml").write_text("apiVersion: v1\nkind: Widget\nmetadata:\n  name: w\n")
    code, out = check_k8s(tool, k8s)
    assert code != 0 and "without a schema" in out, out


def test_kustomize_catches_a_broken_overlay_patch(tool, tmp_path: Path) -> None:
    # The overlay's JSON-patch test op: the base's metric order changed under the patch.
    k8s = broken_copy(
        tmp_path, "overlays/h100/kustomization.yaml", "value: qwen3_tts_active_streams", "value: x"
    )
    code, out = check_k8s(tool, k8s)
    assert code != 0 and "FAIL: kustomize build" in out, out


def test_checkov_catches_privilege_escalation(tool, tmp_path: Path) -> None:
    k8s = broken_copy(
        tmp_path, "base/gateway.yaml", "allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true"
    )
    code, out = check_k8s(tool, k8s)
    assert code != 0 and "CKV_K8S_20" in out, out


def test_checkov_skips_have_reasons_and_are_documented() -> None:
    skips = {
        match.group(1): match.group(2).strip()
        for path in K8S.rglob("*.yaml")
        for match in re.finditer(r'checkov\.io/skip\d+: "?(CKV2?_K8S_\d+)=([^"\n]*)', path.read_text())
    }
    readme = (K8S / "README.md").read_text()
    documented = set(re.findall(r"`(CKV2?_K8S_\d+)`", readme))
    assert skips and all(skips.values()), skips
    assert set(skips) == documented, f"in manifests {sorted(skips)} vs k8s/README.md {sorted(documented)}"
