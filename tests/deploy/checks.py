"""Checkers behind the deploy tests: plain functions returning a list of problems (empty = fine).

They take parsed data or text, so each test can run them on the real files and on a deliberately bad
snippet, which proves the checker can fail.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

# --- Dockerfiles ----------------------------------------------------------------------------------------

_VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerfile_base_images(text: str) -> list[str]:
    """Base image of every FROM, ARG defaults substituted; FROMs naming an earlier stage are left out."""
    args: dict[str, str] = {}
    stages: set[str] = set()
    images = []
    for word, rest in _instructions(text):
        if word == "ARG":
            name, _, default = rest.partition("=")
            if default:
                args[name.strip()] = default.strip().strip('"')
        elif word == "FROM":
            tokens = [t for t in rest.split() if not t.startswith("--")]
            image = _VAR.sub(lambda m: args.get(m.group(1), m.group(0)), tokens[0])
            if len(tokens) >= 3 and tokens[1].lower() == "as":
                stages.add(tokens[2].lower())
            if image.lower() not in stages:
                images.append(image)
    return images


def image_ref_problems(ref: str) -> list[str]:
    """An image must carry an explicit tag other than latest; a digest, if any, must be a real one."""
    if _VAR.search(ref):
        return [f"{ref}: unresolved variable"]
    name, _, digest = ref.partition("@")
    problems = []
    if digest and not _DIGEST.match(digest):
        problems.append(f"{ref}: digest is not sha256:<64 hex> (placeholder?)")
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        problems.append(f"{ref}: no tag")
    elif last.rsplit(":", 1)[1] in ("", "latest"):
        problems.append(f"{ref}: tag must not be latest")
    return problems


def dockerfile_problems(text: str) -> list[str]:
    problems = [p for image in dockerfile_base_images(text) for p in image_ref_problems(image)]
    instructions = _instructions(text)
    if not any(word == "HEALTHCHECK" for word, _ in instructions):
        problems.append("no HEALTHCHECK")
    last_from = max((i for i, (word, _) in enumerate(instructions) if word == "FROM"), default=0)
    users = [rest for word, rest in instructions[last_from:] if word == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("the final stage runs as root (no USER, or USER root)")
    for word, rest in instructions:
        if word == "RUN" and re.search(r"\bgit\s+clone\b", rest):
            problems.append(f"RUN clones a repository: {rest[:60]}")
    return problems


def start_script_problems(text: str) -> list[str]:
    """Container start must not install or fetch code: everything happens at build time."""
    problems = []
    for pattern in (
        r"\bpip3?\s+install\b",
        r"\bgit\s+clone\b",
        r"\bapt-get\s+install\b",
        r"\bcurl\b.*\|\s*(ba)?sh",
    ):
        if re.search(pattern, text):
            problems.append(f"installs or fetches at start: /{pattern}/")
    return problems


# --- requirements files -----------------------------------------------------------------------------------


def requirement_specs(text: str) -> dict[str, str]:
    """{normalized name: version specifier} of a requirements file (extras dropped)."""
    specs = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(.*)$", line)
        if match:
            specs[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(3).replace(" ", "")
    return specs


def unpinned_requirements(text: str) -> list[str]:
    return [
        f"{name}: not pinned with == ({spec or 'no version'})"
        for name, spec in requirement_specs(text).items()
        if not re.fullmatch(r"==[0-9][A-Za-z0-9.+!-]*", spec)
    ]


# --- compose ------------------------------------------------------------------------------------------------


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def compose_problems(
    compose: dict[str, Any], compose_dir: Path, required: tuple[str, ...] = ("triton", "gateway")
) -> list[str]:
    problems = []
    services = compose.get("services") or {}
    declared_volumes = set((compose.get("volumes") or {}).keys())
    for name in required:
        if name not in services:
            problems.append(f"service {name} missing")
    for name, svc in services.items():
        test = (svc.get("healthcheck") or {}).get("test")
        if not test or test == ["NONE"] or (svc.get("healthcheck") or {}).get("disable"):
            problems.append(f"{name}: no healthcheck")
        depends = svc.get("depends_on") or {}
        if isinstance(depends, list):
            problems.append(
                f"{name}: depends_on is a list; use the long form with condition: service_healthy"
            )
            depends = {}
        for target, spec in depends.items():
            if target not in services:
                problems.append(f"{name}: depends_on unknown service {target}")
            if (spec or {}).get("condition") != "service_healthy":
                problems.append(f"{name}: depends_on {target} without condition: service_healthy")
        build = svc.get("build")
        if build is not None:
            context = compose_dir / (build if isinstance(build, str) else build.get("context", "."))
            if not context.is_dir():
                problems.append(f"{name}: build context {context} does not exist")
            elif (
                isinstance(build, dict)
                and "dockerfile" in build
                and not (context / build["dockerfile"]).is_file()
            ):
                problems.append(f"{name}: dockerfile {build['dockerfile']} not found in {context}")
        for env_file in _as_list(svc.get("env_file")):
            path = env_file if isinstance(env_file, str) else env_file.get("path")
            if isinstance(env_file, dict) and env_file.get("required") is False:
                continue
            if not (compose_dir / path).is_file():
                problems.append(f"{name}: env_file {path} does not exist")
        for volume in _as_list(svc.get("volumes")):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith((".", "/", "~")):
                if not (compose_dir / source).exists():
                    problems.append(f"{name}: mounted path {source} does not exist")
            elif source and source not in declared_volumes:
                problems.append(f"{name}: named volume {source} not declared under volumes:")
    gateway_deps = (services.get("gateway") or {}).get("depends_on") or {}
    if "gateway" in services and "triton" in services and "triton" not in gateway_deps:
        problems.append("gateway does not depend on triton")
    return problems


def gpu_override_problems(override: dict[str, Any], service: str = "triton") -> list[str]:
    svc = (override.get("services") or {}).get(service) or {}
    devices = (
        (((svc.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices")
    ) or []
    if not any("gpu" in (d.get("capabilities") or []) for d in devices):
        return [f"{service}: no deploy.resources.reservations.devices entry with capabilities [gpu]"]
    return []


# --- Terraform (python-hcl2 output: {file: {"terraform": [...], "resource": [...], ...}}) ---------------
# python-hcl2 adds "__comments__" / "__inline_comments__" keys next to real attributes; _real() drops them.


def _real(mapping: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if not k.startswith("__")}


_CONSTRAINT = re.compile(r"^(~>\s*\d+(\.\d+){1,2}|=?\s*\d+\.\d+\.\d+)$")


def provider_constraint_problems(tf_files: dict[Path, dict[str, Any]]) -> list[str]:
    """Each folder of .tf files has required_version and pins each provider exactly or with ~>."""
    problems = []
    by_dir: dict[Path, list[dict[str, Any]]] = {}
    for path, doc in tf_files.items():
        by_dir.setdefault(path.parent, []).extend(doc.get("terraform", []))
    for folder, blocks in sorted(by_dir.items()):
        if not any("required_version" in b for b in blocks):
            problems.append(f"{folder}: no required_version")
        providers = {}
        for block in blocks:
            for entry in block.get("required_providers", []):
                providers.update(_real(entry))
        if not providers:
            problems.append(f"{folder}: no required_providers")
        for name, spec in providers.items():
            version = spec.get("version") if isinstance(spec, dict) else None
            if not version:
                problems.append(f"{folder}: provider {name} has no version constraint")
            elif not _CONSTRAINT.match(version.strip()):
                problems.append(f"{folder}: provider {name} constraint {version!r} is neither exact nor ~>")
    return problems


def resources(
    tf_files: dict[Path, dict[str, Any]], rtype: str | None = None
) -> list[tuple[str, str, dict[str, Any]]]:
    """(type, name, body) of every resource, optionally of one type."""
    out = []
    for doc in tf_files.values():
        for entry in doc.get("resource", []):
            for kind, named in _real(entry).items():
                for name, body in _real(named).items():
                    if rtype is None or kind == rtype:
                        out.append((kind, name, body))
    return out


def variables(tf_files: dict[Path, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        name: body
        for doc in tf_files.values()
        for entry in doc.get("variable", [])
        for name, body in _real(entry).items()
    }


def variable_problems(tf_files: dict[Path, dict[str, Any]], must_validate: set[str]) -> list[str]:
    problems = []
    found = variables(tf_files)
    for name, body in found.items():
        if "type" not in body:
            problems.append(f"variable {name}: no type")
        if not body.get("description"):
            problems.append(f"variable {name}: no description")
    for name in sorted(must_validate):
        if name not in found:
            problems.append(f"variable {name}: missing")
        elif not found[name].get("validation"):
            problems.append(f"variable {name}: no validation block")
    return problems


def iam_problems(tf_files: dict[Path, dict[str, Any]]) -> list[str]:
    """The runtime service account gets objectViewer on the weights bucket, and nothing else anywhere."""
    problems = []
    for kind, name, body in resources(tf_files):
        member = str(body.get("member", "")) + " ".join(map(str, body.get("members", []) or []))
        if kind.startswith(("google_project_iam", "google_organization_iam", "google_folder_iam")):
            problems.append(f"{kind}.{name}: project/folder/organization-level IAM is not allowed")
        elif "google_service_account." in member:
            if kind != "google_storage_bucket_iam_member":
                problems.append(f"{kind}.{name}: the service account may only get bucket-level IAM members")
            elif body.get("role") != "roles/storage.objectViewer":
                problems.append(f"{kind}.{name}: role {body.get('role')} (only roles/storage.objectViewer)")
    grants = [
        n
        for k, n, b in resources(tf_files, "google_storage_bucket_iam_member")
        if "google_service_account." in str(b.get("member"))
    ]
    if len(grants) != 1:
        problems.append(f"expected exactly one bucket grant to the service account, found {len(grants)}")
    return problems


def checkov_skips(texts: dict[Path, str]) -> dict[str, str]:
    """{check id: reason} of every inline `checkov:skip=ID:reason`; a skip without a reason maps to ''."""
    skips = {}
    for text in texts.values():
        for match in re.finditer(r"checkov:skip=([A-Z0-9_]+)(?::([^\n]*))?", text):
            skips[match.group(1)] = (match.group(2) or "").strip()
    return skips
