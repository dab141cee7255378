"""terraform/: parsed with python-hcl2 and checked for the deployment's rules; scanned with checkov.

Three modules: qwen3-tts (weights bucket + Cloud Run), qwen3-tts-gke (cluster, GPU node pools, Workload
Identity), qwen3-tts-voice-db (Cloud SQL PostgreSQL, URL in Secret Manager); one root
(terraform/environments) chooses runtimes, and each environment is that root with its own tfvars and
backend config (dev.tfvars + dev.backend.hcl, prod.tfvars + prod.backend.hcl)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .checks import (
    checkov_skips,
    iam_problems,
    provider_constraint_problems,
    resources,
    variable_problems,
    variables,
)
from .helpers import REPO, run

TF = REPO / "terraform"
MODULE = TF / "modules" / "qwen3-tts"
GKE = TF / "modules" / "qwen3-tts-gke"
VOICE_DB = TF / "modules" / "qwen3-tts-voice-db"
ROOT = TF / "environments"
ENVS = ("dev", "prod")
MUST_VALIDATE = {
    "project_id", "region", "name", "gateway_image", "triton_image", "bucket_name", "gpu_type",
    "min_instances", "max_instances", "concurrency", "request_timeout_seconds", "triton_resources",
    "gateway_resources", "startup_probe", "env", "ingress", "invoker_members",
}  # fmt: skip
GKE_MUST_VALIDATE = {
    "project_id", "region", "zones", "name", "weights_bucket", "k8s_namespace", "gpu_pools", "system_pool",
    "release_channel", "network_ranges", "master_authorized_networks", "images", "labels",
}  # fmt: skip
VOICE_DB_MUST_VALIDATE = {
    "project_id", "region", "name", "network_id", "database_version", "tier", "max_connections",
    "backup_retention_days", "labels",
}  # fmt: skip
K8S = REPO / "k8s"


def tf_paths(root: Path = TF) -> list[Path]:
    return sorted(p for p in root.rglob("*.tf") if ".terraform" not in p.parts)


@pytest.fixture(scope="module")
def tf(parse) -> dict[Path, dict[str, Any]]:
    return parse("hcl", *tf_paths())


def under(tf: dict[Path, dict[str, Any]], folder: Path) -> dict[Path, dict[str, Any]]:
    return {p: d for p, d in tf.items() if folder in p.parents}


def service(tf: dict[Path, dict[str, Any]]) -> dict[str, Any]:
    (found,) = [body for _, _, body in resources(tf, "google_cloud_run_v2_service")]
    return found


@pytest.fixture(scope="module")
def env_files(parse) -> dict[str, dict[str, Any]]:
    """{env: its tfvars values}, and {env + ".backend": its backend config}."""
    paths = {env: ROOT / f"{env}.tfvars" for env in ENVS} | {
        f"{env}.backend": ROOT / f"{env}.backend.hcl" for env in ENVS
    }
    parsed = parse("hcl", *paths.values())
    return {name: _without_comments(parsed[path]) for name, path in paths.items()}


def _without_comments(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_comments(v) for k, v in value.items() if not k.startswith("__")}
    if isinstance(value, list):
        return [_without_comments(v) for v in value]
    return value


def module_calls(tf: dict[Path, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{module name: its arguments} of the root."""
    return {
        name: body
        for d in under(tf, ROOT).values()
        for entry in d.get("module", [])
        for name, body in entry.items()
        if not name.startswith("__")  # python-hcl2's comment entries
    }


def module_call(tf: dict[Path, dict[str, Any]]) -> dict[str, Any]:
    return module_calls(tf)["qwen3_tts"]


def one_resource(tf: dict[Path, dict[str, Any]], rtype: str, name: str) -> dict[str, Any]:
    (found,) = [body for _, n, body in resources(tf, rtype) if n == name]
    return found


def test_layout() -> None:
    for folder in (MODULE, GKE, VOICE_DB, ROOT):
        assert tf_paths(folder), f"no .tf files in {folder}"
    for env in ENVS:
        assert (ROOT / f"{env}.tfvars").is_file() and (ROOT / f"{env}.backend.hcl").is_file(), env
    assert not [p for p in ROOT.iterdir() if p.is_dir() and p.name != ".terraform"], "one root, no sub-roots"
    assert (TF / "README.md").is_file()


def test_providers_and_terraform_version_pinned(tf) -> None:
    assert provider_constraint_problems(tf) == []


def test_provider_checker_catches_loose_pins() -> None:
    loose = {
        Path("a/versions.tf"): {
            "terraform": [{"required_providers": [{"google": {"source": "hashicorp/google"}}]}]
        }
    }
    problems = provider_constraint_problems(loose)
    assert any("required_version" in p for p in problems) and any(
        "no version constraint" in p for p in problems
    )
    ranged = {
        Path("b/v.tf"): {
            "terraform": [
                {"required_version": ">= 1.5", "required_providers": [{"google": {"version": ">= 6.0"}}]}
            ]
        }
    }
    assert provider_constraint_problems(ranged) == [
        "b: provider google constraint '>= 6.0' is neither exact nor ~>"
    ]


def test_module_variables_are_typed_documented_and_validated(tf) -> None:
    assert variable_problems(under(tf, MODULE), MUST_VALIDATE) == []
    assert variable_problems(under(tf, GKE), GKE_MUST_VALIDATE) == []
    assert variable_problems(under(tf, VOICE_DB), VOICE_DB_MUST_VALIDATE) == []
    # The root validates what is its own; what it hands a module unchanged, that module validates.
    root_must_validate = {"runtimes", "cloud_run_service"}
    assert variable_problems(under(tf, ROOT), root_must_validate) == []


def test_environments_differ_by_tfvars_only(tf, env_files) -> None:
    # Each environment's file sets exactly the root's variables that have no default and that are not the
    # site's own (project, images, bucket: site.tfvars.example); its backend config only the state prefix.
    root_vars = variables(under(tf, ROOT))
    site = {"project_id", "gateway_image", "triton_image", "bucket_name"}
    required = {name for name, body in root_vars.items() if "default" not in body} - site
    for env in ENVS:
        assert set(env_files[env]) == required, env
        assert env_files[f"{env}.backend"] == {"prefix": f"qwen3-tts/{env}"}
    (backend,) = [
        b for d in under(tf, ROOT).values() for t in d.get("terraform", []) for b in t.get("backend", [])
    ]
    assert set(backend) == {"gcs"} and not [k for k in backend["gcs"] if not k.startswith("__")]
    assert {env_files[env]["name"] for env in ENVS} == {"qwen3-tts-dev", "qwen3-tts"}
    assert {env_files[env]["environment"] for env in ENVS} == set(ENVS)


def test_variable_checker_catches_missing_validation() -> None:
    loose = {Path("m/variables.tf"): {"variable": [{"x": {"type": "number"}}]}}
    assert variable_problems(loose, {"x", "y"}) == [
        "variable x: no description",
        "variable x: no validation block",
        "variable y: missing",
    ]


def test_iam_is_bucket_level_object_viewer_only(tf) -> None:
    assert iam_problems(tf) == []


def test_iam_checker_catches_broad_grants() -> None:
    sa = "serviceAccount:${google_service_account.runtime.email}"
    broad = {
        Path("m/iam.tf"): {
            "resource": [
                {"google_project_iam_member": {"p": {"role": "roles/storage.objectViewer", "member": sa}}},
                {"google_storage_bucket_iam_member": {"b": {"role": "roles/storage.admin", "member": sa}}},
            ]
        }
    }
    problems = "\n".join(iam_problems(broad))
    assert "project-level IAM is only" in problems and "roles/storage.admin" in problems
    nodes = "serviceAccount:${google_service_account.nodes.email}"
    wider = {
        Path("m/gke.tf"): {
            "resource": [
                {
                    "google_project_iam_member": {
                        "n": {"role": "roles/container.defaultNodeServiceAccount", "member": nodes}
                    }
                },
                {"google_project_iam_member": {"e": {"role": "roles/editor", "member": nodes}}},
                {
                    "google_storage_bucket_iam_member": {
                        "w": {"role": "roles/storage.objectViewer", "member": nodes}
                    }
                },
                {
                    "google_service_account_iam_member": {
                        "u": {"role": "roles/iam.serviceAccountUser", "member": nodes}
                    }
                },
                {
                    "google_artifact_registry_repository_iam_member": {
                        "r": {"role": "roles/artifactregistry.writer", "member": nodes}
                    }
                },
                {
                    "google_project_iam_binding": {
                        "b": {"role": "roles/viewer", "members": ["user:a@example.com"]}
                    }
                },
            ]
        }
    }
    problems = iam_problems(wider)
    assert len(problems) == 5, problems  # the node role itself is fine
    for expected in (
        "google_project_iam_member.e: project-level IAM is only",
        "google_service_account_iam_member.u: only roles/iam.workloadIdentityUser",
        "google_artifact_registry_repository_iam_member.r: role roles/artifactregistry.writer",
        "google_project_iam_binding.b: project/folder/organization-level IAM is not allowed",
        "the GKE nodes' service account must not read the weights",
    ):
        assert any(p.startswith(expected) for p in problems), expected


def test_weights_bucket(tf) -> None:
    (bucket,) = [body for _, _, body in resources(tf, "google_storage_bucket")]
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["versioning"][0]["enabled"] is True
    assert bucket["public_access_prevention"] == "enforced"


def test_cloud_run_service_on_an_l4(tf) -> None:
    svc = service(tf)
    template = svc["template"][0]
    defaults = {name: body.get("default") for name, body in variables(under(tf, MODULE)).items()}
    assert (
        template["node_selector"][0]["accelerator"] == "${var.gpu_type}"
        and defaults["gpu_type"] == "nvidia-l4"
    )
    assert template["gpu_zonal_redundancy_disabled"] == "${var.gpu_zonal_redundancy_disabled}"
    assert defaults["gpu_zonal_redundancy_disabled"] is True
    assert template["scaling"][0] == {
        "min_instance_count": "${var.min_instances}",
        "max_instance_count": "${var.max_instances}",
    }
    assert template["max_instance_request_concurrency"] == "${var.concurrency}"
    assert template["service_account"] == "${google_service_account.runtime[0].email}"

    containers = {c["name"]: c for c in template["containers"]}
    assert set(containers) == {"gateway", "triton"}
    gateway, triton = containers["gateway"], containers["triton"]
    assert gateway["ports"][0]["container_port"] == 8080 and "ports" not in triton  # gateway is the ingress
    assert triton["resources"][0]["limits"]["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in gateway["resources"][0]["limits"]
    for c in containers.values():
        assert c["resources"][0]["cpu_idle"] is False  # CPU always allocated
        assert c["dynamic"][0]["env"]["for_each"] in ("${local.env}", "${local.gateway_env}")

    probe = gateway["startup_probe"][0]
    assert probe["http_get"][0]["path"] == "/ready"
    assert probe["initial_delay_seconds"] == "${var.startup_probe.initial_delay_seconds}"
    startup_type = variables(under(tf, MODULE))["startup_probe"]["type"]
    assert re.search(r"initial_delay_seconds = optional\(number, 120\)", startup_type)


def test_environment_comes_from_one_map_variable(tf) -> None:
    env_locals = [
        entry["env"] for d in under(tf, MODULE).values() for entry in d.get("locals", []) if "env" in entry
    ]
    assert len(env_locals) == 1 and "var.env" in env_locals[0]
    assert variables(under(tf, MODULE))["env"]["type"] == "${map(string)}"


# Cloud Run SIGKILLs an instance's containers this long after SIGTERM, whatever the drains say.
CLOUD_RUN_KILL_AFTER_S = 10.0
# After Triton's drain ends its leftover streams with an error, time for the gateway to relay and close.
RELAY_S = 2.0


def test_cloud_run_drains_end_before_its_kill(tf) -> None:
    (env_local,) = [
        entry["env"] for d in under(tf, MODULE).values() for entry in d.get("locals", []) if "env" in entry
    ]
    drains = dict(re.findall(r'QWEN3_TTS_(TRITON|GATEWAY)_DRAIN_TIMEOUT_S = "([0-9.]+)"', env_local))
    assert set(drains) == {"TRITON", "GATEWAY"}, "the module must set both drains (the defaults are 30 s)"
    triton, gateway = float(drains["TRITON"]), float(drains["GATEWAY"])
    # Streams still live when Triton's drain ends get its retry error, which the gateway must still relay.
    assert triton + RELAY_S <= gateway < CLOUD_RUN_KILL_AFTER_S


def test_outputs_service_url(tf) -> None:
    for folder in (MODULE, ROOT):
        outputs = {
            name for d in under(tf, folder).values() for entry in d.get("output", []) for name in entry
        }
        assert "service_url" in outputs, folder
    module_outputs = {
        n: b for d in under(tf, MODULE).values() for e in d.get("output", []) for n, b in e.items()
    }
    assert module_outputs["service_url"]["value"] == "${one(google_cloud_run_v2_service.this[*].uri)}"


def test_dev_scales_to_zero_and_prod_stays_warm(tf, env_files) -> None:
    call = module_call(tf)
    assert call["source"] == "../modules/qwen3-tts"
    for arg in ("min_instances", "max_instances", "concurrency", "triton_resources", "gateway_resources"):
        assert call[arg] == f"${{var.cloud_run_service.{arg}}}", arg
    assert "var.cloud_run_service.max_active_streams" in call["env"]
    for name, module in module_calls(tf).items():
        assert module["deletion_protection"] == "${var.deletion_protection}", name
    dev, prod = (env_files[env]["cloud_run_service"] for env in ENVS)
    assert (dev["min_instances"], dev["max_instances"]) == (0, 1)
    assert prod["min_instances"] >= 1 and prod["max_instances"] > prod["min_instances"]
    for sizing in (dev, prod):  # requests beyond the engine's batch would queue instead of scaling out
        assert sizing["concurrency"] <= sizing["max_active_streams"]
    assert env_files["prod"]["deletion_protection"] is True
    assert env_files["dev"]["deletion_protection"] is False  # a throwaway environment


def test_runtimes_variable_chooses_cloud_run_gke_or_both(tf) -> None:
    # Cloud Run's service, its account and grant exist only with cloud_run_enabled; the bucket always.
    for rtype, name in (
        ("google_cloud_run_v2_service", "this"),
        ("google_service_account", "runtime"),
        ("google_storage_bucket_iam_member", "runtime_reads_weights"),
    ):
        assert one_resource(under(tf, MODULE), rtype, name)["count"] == "${var.cloud_run_enabled ? 1 : 0}"
    assert "count" not in one_resource(tf, "google_storage_bucket", "weights")
    (local,) = [e for d in under(tf, ROOT).values() for e in d.get("locals", [])]
    assert local["cloud_run"] == '${contains(var.runtimes, "cloud_run")}'
    assert local["gke"] == '${contains(var.runtimes, "gke")}'
    calls = module_calls(tf)
    assert set(calls) == {"qwen3_tts", "gke", "voice_db"}
    assert calls["qwen3_tts"]["cloud_run_enabled"] == "${local.cloud_run}"
    assert calls["gke"]["source"] == "../modules/qwen3-tts-gke"
    assert calls["voice_db"]["source"] == "../modules/qwen3-tts-voice-db"
    assert calls["gke"]["count"] == calls["voice_db"]["count"] == "${local.gke ? 1 : 0}"
    # The cluster reads the bucket the Cloud Run module made; Cloud SQL peers into the cluster's VPC.
    assert calls["gke"]["weights_bucket"] == "${module.qwen3_tts.weights_bucket}"
    assert calls["voice_db"]["network_id"] == "${module.gke[0].network_id}"
    assert variables(under(tf, ROOT))["runtimes"]["default"] == ["cloud_run"]  # as before GKE
    outputs = {n for d in under(tf, ROOT).values() for e in d.get("output", []) for n in e}
    assert {"gke_cluster_name", "triton_service_account", "voice_db_url_secret", "weights_url"} <= outputs


def overlay_accelerators(parse) -> set[str]:
    paths = sorted((K8S / "overlays").glob("*/kustomization.yaml"))
    found = set()
    for doc in parse("yaml", *paths).values():
        for patch in doc.get("patches", []):
            found |= set(re.findall(r"cloud\.google\.com/gke-accelerator: (\S+)", patch.get("patch", "")))
    return found


def test_gke_gpu_pools_carry_the_overlays_gpus(tf, parse, env_files) -> None:
    pool = one_resource(tf, "google_container_node_pool", "gpu")
    assert pool["for_each"] == "${var.gpu_pools}"
    (accelerator,) = pool["node_config"][0]["guest_accelerator"]
    assert (
        accelerator["count"] == 1 and accelerator["type"] == "${each.value.accelerator}"
    )  # one GPU per node
    assert accelerator["gpu_driver_installation_config"][0]["gpu_driver_version"] == "LATEST"
    assert pool["autoscaling"][0]["min_node_count"] == "${each.value.min_nodes}"
    assert pool["autoscaling"][0]["max_node_count"] == "${each.value.max_nodes}"
    assert pool["node_config"][0]["workload_metadata_config"][0]["mode"] == "GKE_METADATA"
    # Every GPU a k8s overlay selects has a pool in the module's default and in prod; dev has the L4.
    overlays = overlay_accelerators(parse)
    assert overlays == {"nvidia-l4", "nvidia-h100-80gb"}
    default = {p["accelerator"] for p in variables(under(tf, GKE))["gpu_pools"]["default"].values()}
    assert default == overlays
    assert module_calls(tf)["gke"]["gpu_pools"] == "${var.gke_node_pools.gpu_pools}"
    prod = {p["accelerator"] for p in env_files["prod"]["gke_node_pools"]["gpu_pools"].values()}
    assert prod == overlays
    dev = env_files["dev"]["gke_node_pools"]["gpu_pools"]
    assert {p["accelerator"] for p in dev.values()} == {"nvidia-l4"} and dev["l4"]["min_nodes"] == 0


def test_gke_cluster_is_private_with_workload_identity(tf, parse) -> None:
    cluster = one_resource(tf, "google_container_cluster", "this")
    assert cluster["workload_identity_config"][0]["workload_pool"] == "${local.workload_pool}"
    assert cluster["private_cluster_config"][0]["enable_private_nodes"] is True
    assert cluster["remove_default_node_pool"] is True
    assert cluster["datapath_provider"] == "ADVANCED_DATAPATH"  # enforces k8s/base/network-policies.yaml
    gke_locals = {k: v for d in under(tf, GKE).values() for e in d.get("locals", []) for k, v in e.items()}
    assert gke_locals["workload_pool"] == "${var.project_id}.svc.id.goog"
    # The Workload Identity grant names the Kubernetes service account the Triton pods run as.
    base = K8S / "base"
    kustomization = parse("yaml", base / "kustomization.yaml")[base / "kustomization.yaml"]
    assert variables(under(tf, GKE))["k8s_namespace"]["default"] == kustomization["namespace"]
    assert (
        gke_locals["triton_ksa"]
        == "serviceAccount:${local.workload_pool}[${var.k8s_namespace}/qwen3-tts-triton]"
    )
    assert "name: qwen3-tts-triton" in (base / "serviceaccounts.yaml").read_text()
    grant = one_resource(tf, "google_service_account_iam_member", "triton_workload_identity")
    assert grant["member"] == "${local.triton_ksa}"
    assert grant["service_account_id"] == "${google_service_account.triton.name}"
    reads = one_resource(tf, "google_storage_bucket_iam_member", "triton_reads_weights")
    assert reads["bucket"] == "${var.weights_bucket}"


def test_voice_db_is_private_with_its_url_in_secret_manager(tf) -> None:
    instance = one_resource(tf, "google_sql_database_instance", "this")
    settings = instance["settings"][0]
    ip = settings["ip_configuration"][0]
    assert ip["ipv4_enabled"] is False and ip["private_network"] == "${var.network_id}"
    assert ip["ssl_mode"] == "ENCRYPTED_ONLY"
    assert settings["backup_configuration"][0]["enabled"] is True
    assert instance["database_version"] == "${var.database_version}"
    assert variables(under(tf, VOICE_DB))["database_version"]["default"].startswith("POSTGRES_")
    db_locals = {
        k: v for d in under(tf, VOICE_DB).values() for e in d.get("locals", []) for k, v in e.items()
    }
    url = db_locals["voice_db_url"]
    assert '"postgresql+asyncpg://%s:%s@%s:5432/%s?ssl=require"' in url
    assert "google_sql_database_instance.this.private_ip_address" in url
    version = one_resource(tf, "google_secret_manager_secret_version", "voice_db_url")
    assert version["secret_data"] == "${local.voice_db_url}"
    outputs = {n for d in under(tf, VOICE_DB).values() for e in d.get("output", []) for n in e}
    assert "voice_db_url_secret" in outputs and "voice_db_url" not in outputs  # the URL never as an output


def test_checkov_skips_have_reasons_and_are_documented() -> None:
    skips = checkov_skips({p: p.read_text() for p in tf_paths()})
    readme = (TF / "README.md").read_text()
    documented = set(re.findall(r"`(CKV2?_[A-Z0-9_]+)`", readme))
    assert all(skips.values()), f"skip without a reason: {skips}"
    assert set(skips) == documented, f"in code {sorted(skips)} vs README {sorted(documented)}"


def test_skip_parser() -> None:
    assert checkov_skips({Path("x.tf"): "# checkov:skip=CKV_GCP_1:why\n# checkov:skip=CKV_GCP_2\n"}) == {
        "CKV_GCP_1": "why",
        "CKV_GCP_2": "",
    }


def checkov(tool, directory: Path, *var_files: Path) -> tuple[int, str]:
    cmd = [
        tool("checkov"),
        "--directory",
        str(directory),
        "--framework",
        "terraform",
        "--quiet",
        "--compact",
        "--skip-download",
    ]
    for var_file in var_files:  # checkov resolves the root's variables (gpu_pools, protection) from it
        cmd += ["--var-file", str(var_file)]
    proc = run(cmd, timeout=240)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("env", ENVS)
def test_checkov_passes(tool, env: str) -> None:
    code, out = checkov(tool, TF, ROOT / f"{env}.tfvars")
    assert code == 0, out


def test_checkov_fails_on_a_bad_bucket(tool, tmp_path: Path) -> None:
    (tmp_path / "main.tf").write_text(
        'resource "google_storage_bucket" "b" {\n  name     = "b"\n  location = "US"\n}\n'
    )
    code, out = checkov(tool, tmp_path)
    assert code != 0
    assert "CKV_GCP_29" in out  # no uniform bucket-level access


def _terraform() -> str:
    binary = shutil.which("terraform")
    if binary is None:  # the lint venv cannot provide it; the machines this project runs on have one
        pytest.skip("terraform is not on PATH")
    return binary


def test_terraform_files_are_in_canonical_format(repo: Path) -> None:
    # `terraform fmt` works offline (init/validate/plan need the provider registry, which is unreachable).
    proc = subprocess.run(
        [_terraform(), "fmt", "-check", "-recursive", "-diff", str(repo / "terraform")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_format_check_catches_a_misformatted_file(tmp_path: Path) -> None:
    (tmp_path / "bad.tf").write_text('variable "x" {\ntype=string\n  default =   "y"\n}\n')
    proc = subprocess.run(
        [_terraform(), "fmt", "-check", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0


def test_variable_validations_plan_each_module_and_environment(repo: Path) -> None:
    # Offline plans (check_tf_validations.sh): each module with good and bad values, and the root with
    # dev.tfvars and with prod.tfvars, so an environment's value that a module rejects fails here.
    _terraform()
    proc = run(["bash", str(repo / "tests" / "deploy" / "check_tf_validations.sh")], timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "bad values rejected" in proc.stdout
