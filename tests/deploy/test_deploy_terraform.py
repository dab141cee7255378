"""terraform/: parsed with python-hcl2 and checked for the deployment's rules; scanned with checkov."""

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
ENVS = {name: TF / "environments" / name for name in ("dev", "prod")}
MUST_VALIDATE = {
    "project_id", "region", "name", "gateway_image", "triton_image", "bucket_name", "gpu_type",
    "min_instances", "max_instances", "concurrency", "request_timeout_seconds", "triton_resources",
    "gateway_resources", "startup_probe", "env", "ingress", "invoker_members",
}  # fmt: skip


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


def module_call(tf: dict[Path, dict[str, Any]], env: str) -> dict[str, Any]:
    calls = [
        body
        for d in under(tf, ENVS[env]).values()
        for entry in d.get("module", [])
        for name, body in entry.items()
        if not name.startswith("__")  # python-hcl2's comment entries
    ]
    assert len(calls) == 1
    return calls[0]


def test_layout() -> None:
    for folder in (MODULE, *ENVS.values()):
        assert tf_paths(folder), f"no .tf files in {folder}"
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
    assert "project/folder/organization-level" in problems and "roles/storage.admin" in problems


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
    assert template["service_account"] == "${google_service_account.runtime.email}"

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


def test_outputs_service_url(tf) -> None:
    for folder in (MODULE, *ENVS.values()):
        outputs = {
            name for d in under(tf, folder).values() for entry in d.get("output", []) for name in entry
        }
        assert "service_url" in outputs, folder
    module_outputs = {
        n: b for d in under(tf, MODULE).values() for e in d.get("output", []) for n, b in e.items()
    }
    assert module_outputs["service_url"]["value"] == "${google_cloud_run_v2_service.this.uri}"


def test_dev_scales_to_zero_and_prod_stays_warm(tf) -> None:
    dev, prod = module_call(tf, "dev"), module_call(tf, "prod")
    assert dev["source"] == prod["source"] == "../../modules/qwen3-tts"
    assert (dev["min_instances"], dev["max_instances"]) == (0, 1)
    assert prod["min_instances"] >= 1 and prod["max_instances"] > prod["min_instances"]
    assert prod["deletion_protection"] is True


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


def checkov(tool, directory: Path) -> tuple[int, str]:
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
    proc = run(cmd, timeout=240)
    return proc.returncode, proc.stdout + proc.stderr


def test_checkov_passes(tool) -> None:
    code, out = checkov(tool, TF)
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
