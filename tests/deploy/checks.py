"""Checkers behind the deploy tests: plain functions returning a list of problems (empty = fine).

They take parsed data or text, so each test can run them on the real files and on a deliberately bad
snippet, which proves the checker can fail.
"""

from __future__ import annotations

import ast
import importlib.metadata
import math
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from qwen3_tts_serving.settings import TRITON_UNLOAD_MARGIN_S, Settings

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


def _module_file(module: str, sources: dict[str, Path]) -> Path | None:
    package = sources.get(module.split(".")[0])
    if package is None:
        return None
    path = package.joinpath(*module.split(".")[1:])
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_names(tree: ast.AST, package: str) -> Iterator[str]:
    """Every module name an import statement of a module in ``package`` may load (relative ones resolved)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def package_modules(folder: Path, package: str) -> list[str]:
    """The dotted names of the modules in a folder of the package ``package``."""
    return [f"{package}.{path.stem}" for path in sorted(folder.glob("*.py")) if path.stem != "__init__"]


def third_party_imports(start: Iterable[str], sources: dict[str, Path]) -> dict[str, set[str]]:
    """{top-level module outside the project and the standard library: project modules importing it} of
    the modules ``start`` and of the project modules they import, followed through ``sources``
    ({top-level package: folder}). Imports inside functions count: they run too."""
    todo = list(start)
    seen: set[str] = set()
    found: dict[str, set[str]] = {}
    while todo:
        module = todo.pop()
        path = _module_file(module, sources)
        if module in seen or path is None:
            continue
        seen.add(module)
        todo += [".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)]
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for name in _imported_names(ast.parse(path.read_text(encoding="utf-8")), package):
            top = name.split(".")[0]
            if top in sources:
                todo.append(name)
            elif top and top not in sys.stdlib_module_names:
                found.setdefault(top, set()).add(module)
    return found


def _requirement_closure(requirements: Iterable[Requirement]) -> set[str]:
    """Normalized names of the requirements and everything they pull in, from the installed metadata
    (markers evaluated for this interpreter, extras followed)."""
    closure: set[str] = set()
    todo = [(requirement, frozenset(requirement.extras)) for requirement in requirements]
    while todo:
        requirement, extras = todo.pop()
        name = canonicalize_name(requirement.name)
        key = f"{name}[{','.join(sorted(extras))}]"
        if key in closure:
            continue
        closure |= {key, name}
        try:
            requires = importlib.metadata.requires(requirement.name) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # a leaf here; the image still installs it
        for line in requires:
            child = Requirement(line)
            if child.marker is None or any(child.marker.evaluate({"extra": e}) for e in extras | {""}):
                todo.append((child, frozenset(child.extras)))
    return {entry for entry in closure if "[" not in entry}


def missing_image_distributions(imports: dict[str, set[str]], requirements_text: str) -> list[str]:
    """The imported modules whose distribution an image's requirements file does not install (directly or
    as a dependency): the image would stop with ModuleNotFoundError. Uses this venv's metadata."""
    lines = [line.split("#", 1)[0].strip() for line in requirements_text.splitlines()]
    installed = _requirement_closure(Requirement(line) for line in lines if line and not line.startswith("-"))
    owners = importlib.metadata.packages_distributions()
    problems = []
    for module, importers in sorted(imports.items()):
        dists = {canonicalize_name(dist) for dist in owners.get(module, [])}
        where = ", ".join(sorted(importers)[:3])
        if not dists:
            problems.append(f"{module} (imported by {where}): no installed distribution provides it")
        elif not dists & installed:
            problems.append(f"{module} (imported by {where}): {', '.join(sorted(dists))} is not installed")
    return problems


# --- settings names ---------------------------------------------------------------------------------------

_SETTING_NAME = re.compile(r"\bQWEN3_TTS_[A-Z0-9_]*[A-Z0-9]")


def unknown_setting_names(texts: dict[Path, str], known: set[str]) -> list[str]:
    """QWEN3_TTS_* names in deploy files that nothing reads: pydantic-settings ignores unknown variables
    (extra="ignore"), so a misspelt or retired setting would be dropped without a word."""
    return [
        f"{path}: {name} is not a setting (misspelt or retired?)"
        for path, text in sorted(texts.items())
        for name in sorted(set(_SETTING_NAME.findall(text)) - known)
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


# What stopping each compose service waits for: tritonserver's exit timeout (the models' drain + unload),
# the gateway's drain, or both in turn (the all-in-one qwen3-tts-serve stops its gateway, then Triton).
COMPOSE_DRAINS = {"triton": ("triton",), "gateway": ("gateway",), "cpu": ("gateway", "triton")}
# Seconds a stop needs beyond the drains (process exit), as the Kubernetes wiring check allows.
STOP_MARGIN_S = 5


def compose_duration_s(value: str | int | float | None) -> float:
    """Seconds of a compose duration ("1m30s", "45s", "500ms"); Docker's stop default (10 s) when unset."""
    if value is None:
        return 10.0
    if isinstance(value, int | float):
        return float(value)
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|ns)", value)
    if not parts or "".join(n + u for n, u in parts) != value.strip():
        raise ValueError(f"not a compose duration: {value!r}")
    unit_s = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
    return sum(float(number) * unit_s[unit] for number, unit in parts)


def _env_file_values(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#"):
            values[key.strip()] = value.strip()
    return values


def compose_stop_problems(compose: dict[str, Any], compose_dir: Path) -> list[str]:
    """Each service's stop_grace_period (SIGKILL after it) covers the drains its processes run on SIGTERM,
    with the drain settings the service gets from its env_file and environment."""
    problems = []
    for name, svc in (compose.get("services") or {}).items():
        env: dict[str, str] = {}
        for env_file in _as_list(svc.get("env_file")):
            path = compose_dir / (env_file if isinstance(env_file, str) else env_file.get("path"))
            env.update(_env_file_values(path) if path.is_file() else {})
        environment = svc.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(str(item).partition("=")[::2] for item in environment)
        env.update({key: str(value) for key, value in environment.items() if value is not None})
        fields = {"triton_drain_timeout_s": "TRITON", "gateway_drain_timeout_s": "GATEWAY"}
        settings = Settings.model_construct(
            **{
                field: float(env[f"QWEN3_TTS_{tier}_DRAIN_TIMEOUT_S"])
                for field, tier in fields.items()
                if f"QWEN3_TTS_{tier}_DRAIN_TIMEOUT_S" in env
            }
        )
        waits = {"triton": settings.triton_exit_timeout_s, "gateway": settings.gateway_drain_timeout_s}
        needed = sum(waits[tier] for tier in COMPOSE_DRAINS.get(name, ())) + STOP_MARGIN_S
        grace = compose_duration_s(svc.get("stop_grace_period"))
        if name in COMPOSE_DRAINS and grace < needed:
            problems.append(
                f"{name}: stop_grace_period {grace:g} s is shorter than its drain on SIGTERM ({needed:g} s): "
                "`docker compose stop/down` would SIGKILL it with streams still open"
            )
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


def _resources_with_locals(tf_files: dict[Path, dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    """resources(), with each "${local.NAME}" in a member replaced by that local of its folder."""
    folder_locals: dict[Path, dict[str, Any]] = {}
    for path, doc in tf_files.items():
        for entry in doc.get("locals", []):
            folder_locals.setdefault(path.parent, {}).update(_real(entry))
    out = []
    for path, doc in tf_files.items():
        known = folder_locals.get(path.parent, {})

        def resolve(match: re.Match[str], known: dict[str, Any] = known) -> str:
            value = known.get(match.group(1))
            return value if isinstance(value, str) else match.group(0)

        for kind, name, body in resources({path: doc}):
            member = str(body.get("member", ""))
            for _ in range(3):  # locals that name other locals
                member = re.sub(r"\$\{local\.([A-Za-z0-9_]+)\}", resolve, member)
            out.append((kind, name, {**body, "member": member} if "member" in body else body))
    return out


# The one project-level role allowed: GKE's predefined role for a node service account (logs, metrics).
NODE_PROJECT_ROLES = {"roles/container.defaultNodeServiceAccount"}
# serviceAccount:PROJECT.svc.id.goog[NAMESPACE/KSA]; the project and namespace may be variables.
_WORKLOAD_IDENTITY_MEMBER = re.compile(r"^serviceAccount:[^\[\]]+\.svc\.id\.goog\[[^/\[\]]+/[a-z0-9-]+\]$")
_SERVICE_ACCOUNT_REF = re.compile(r"google_service_account\.([A-Za-z0-9_-]+)")


def iam_problems(tf_files: dict[Path, dict[str, Any]]) -> list[str]:
    """Least privilege. The runtime identities (Cloud Run's, GKE Triton's) get objectViewer on the weights
    bucket and nothing else; the GKE node account gets GKE's node role on the project and reader on image
    repositories; a Kubernetes service account may act as a Google one (Workload Identity); nothing more."""
    problems = []
    for kind, name, body in _resources_with_locals(tf_files):
        member = str(body.get("member", "")) + " ".join(map(str, body.get("members", []) or []))
        role = body.get("role")
        where = f"{kind}.{name}"
        if kind == "google_project_iam_member":
            if role not in NODE_PROJECT_ROLES or "google_service_account.nodes." not in member:
                problems.append(
                    f"{where}: project-level IAM is only {sorted(NODE_PROJECT_ROLES)} for the GKE nodes"
                )
        elif kind.startswith(("google_project_iam", "google_organization_iam", "google_folder_iam")):
            problems.append(f"{where}: project/folder/organization-level IAM is not allowed")
        elif kind == "google_service_account_iam_member":
            if role != "roles/iam.workloadIdentityUser" or not _WORKLOAD_IDENTITY_MEMBER.match(member):
                problems.append(
                    f"{where}: only roles/iam.workloadIdentityUser for one Kubernetes service account"
                )
        elif "google_service_account." in member:
            allowed = {
                "google_storage_bucket_iam_member": "roles/storage.objectViewer",
                "google_artifact_registry_repository_iam_member": "roles/artifactregistry.reader",
            }
            if kind not in allowed:
                problems.append(
                    f"{where}: the service accounts may only get bucket or repository IAM members"
                )
            elif role != allowed[kind]:
                problems.append(f"{where}: role {role} (only {allowed[kind]})")
    readers: dict[str, int] = {}
    for _, _, body in resources(tf_files, "google_storage_bucket_iam_member"):
        match = _SERVICE_ACCOUNT_REF.search(str(body.get("member")))
        if match:
            readers[match.group(1)] = readers.get(match.group(1), 0) + 1
    if not readers:
        problems.append("no service account may read the weights bucket")
    for account, count in sorted(readers.items()):
        if count != 1:
            problems.append(f"service account {account}: {count} bucket grants (expected exactly one)")
    if "nodes" in readers:
        problems.append("the GKE nodes' service account must not read the weights (only the Triton pods)")
    return problems


def checkov_skips(texts: dict[Path, str]) -> dict[str, str]:
    """{check id: reason} of every inline `checkov:skip=ID:reason`; a skip without a reason maps to ''."""
    skips = {}
    for text in texts.values():
        for match in re.finditer(r"checkov:skip=([A-Z0-9_]+)(?::([^\n]*))?", text):
            skips[match.group(1)] = (match.group(2) or "").strip()
    return skips


# --- Kubernetes (rendered kustomize output: a list of objects) ----------------------------------------

# Every kind the manifests may contain: each has a schema in kubernetes-validate (a CRD would be checked
# by nothing there, so one needs its own check before it joins this list).
K8S_KINDS = {
    "Namespace", "ServiceAccount", "ConfigMap", "Service", "Deployment", "PodDisruptionBudget",
    "HorizontalPodAutoscaler", "NetworkPolicy",
}  # fmt: skip
GPU_RESOURCE = "nvidia.com/gpu"
GKE_ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
GKE_ACCELERATORS = {"nvidia-l4", "nvidia-h100-80gb", "nvidia-h100-mega-80gb", "nvidia-h200-141gb"}
SECRET_ENV = {"QWEN3_TTS_VOICE_DB_URL": "voice-db-url", "QWEN3_TTS_API_KEYS": "api-keys"}
SECRET_NAME = "qwen3-tts"
TRITON, GATEWAY = "qwen3-tts-triton", "qwen3-tts-gateway"


def k8s_objects(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """{name: object} of one kind."""
    return {o["metadata"]["name"]: o for o in objects if o.get("kind") == kind}


def _pod(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


def _container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    found = [c for c in _pod(deployment).get("containers", []) if c.get("name") == name]
    return found[0] if found else {}


def container_port(container: dict[str, Any], port: int | str) -> int | None:
    """A probe's or Service's port as a number (a named port looked up in the container)."""
    if isinstance(port, int):
        return port
    for entry in container.get("ports", []):
        if entry.get("name") == port:
            return entry.get("containerPort")
    return None


def http_probe(container: dict[str, Any], probe: str) -> tuple[str | None, int | None]:
    """(path, port number) of an httpGet probe, (None, None) when there is none."""
    http = (container.get(probe) or {}).get("httpGet") or {}
    if not http:
        return None, None
    return http.get("path"), container_port(container, http.get("port", ""))


def _config_values(objects: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The environment a container gets from its ConfigMaps (envFrom) and literal env entries."""
    maps = k8s_objects(objects, "ConfigMap")
    values: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = (source.get("configMapRef") or {}).get("name")
        values.update((maps.get(ref) or {}).get("data") or {})
    for entry in container.get("env", []):
        if "value" in entry:
            values[entry["name"]] = entry["value"]
    return values


def deployment_env(objects: list[dict[str, Any]], deployment: str, container: str) -> dict[str, str]:
    return _config_values(objects, _container(k8s_objects(objects, "Deployment")[deployment], container))


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    wanted = selector.get("matchLabels") or {}
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def _prestop_seconds(container: dict[str, Any]) -> int:
    return int(
        (((container.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds", 0)
    )


def _triton_drain(objects: list[dict[str, Any]], container: dict[str, Any]) -> Settings:
    """The drain settings the Triton container gets (its ConfigMap's value, else the default)."""
    drain = _config_values(objects, container).get("QWEN3_TTS_TRITON_DRAIN_TIMEOUT_S")
    if drain is None:
        return Settings.model_construct()
    return Settings.model_construct(triton_drain_timeout_s=float(drain))


def _exit_timeout(objects: list[dict[str, Any]], container: dict[str, Any]) -> int:
    """Seconds the container's process waits on SIGTERM. tritonserver: an explicit --exit-timeout-secs, else
    what the entrypoint passes (``Settings.triton_exit_timeout_s`` of the container's drain); the gateway:
    its drain (QWEN3_TTS_GATEWAY_DRAIN_TIMEOUT_S); 0 for any other container."""
    for arg in container.get("args", []):
        match = re.fullmatch(r"--exit-timeout-secs=(\d+)", str(arg))
        if match:
            return int(match.group(1))
    if container.get("name") == "gateway":
        drain = _config_values(objects, container).get("QWEN3_TTS_GATEWAY_DRAIN_TIMEOUT_S")
        default_s = Settings.model_construct().gateway_drain_timeout_s
        return math.ceil(default_s if drain is None else float(drain))
    if container.get("name") != "triton":
        return 0
    return _triton_drain(objects, container).triton_exit_timeout_s


def _workload_problems(objects: list[dict[str, Any]], name: str, deployment: dict[str, Any]) -> list[str]:
    """What every Deployment needs: a PDB, an HPA, a Service, refs that resolve, probes, a drain."""
    problems = []
    labels = deployment["spec"]["template"]["metadata"].get("labels") or {}
    pod = _pod(deployment)
    if not any(
        _selects(p["spec"].get("selector") or {}, labels)
        for p in k8s_objects(objects, "PodDisruptionBudget").values()
    ):
        problems.append(f"{name}: no PodDisruptionBudget selects its pods")
    if not any(
        h["spec"]["scaleTargetRef"].get("name") == name
        for h in k8s_objects(objects, "HorizontalPodAutoscaler").values()
    ):
        problems.append(f"{name}: no HorizontalPodAutoscaler scales it")
    if "replicas" in deployment["spec"]:
        problems.append(f"{name}: spec.replicas is set (every apply would reset the autoscaler's count)")
    services = [
        s
        for s in k8s_objects(objects, "Service").values()
        if _selects({"matchLabels": s["spec"].get("selector")}, labels)
    ]
    if not services:
        problems.append(f"{name}: no Service selects its pods")
    maps, accounts = k8s_objects(objects, "ConfigMap"), k8s_objects(objects, "ServiceAccount")
    if pod.get("serviceAccountName") not in accounts:
        problems.append(f"{name}: service account {pod.get('serviceAccountName')} is not defined")
    for container in pod.get("containers", []):
        where = f"{name}/{container.get('name')}"
        for source in container.get("envFrom", []):
            ref = (source.get("configMapRef") or {}).get("name")
            if ref and ref not in maps:
                problems.append(f"{where}: envFrom ConfigMap {ref} is not defined")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            path, port = http_probe(container, probe)
            if path is None or port is None:
                problems.append(f"{where}: no httpGet {probe} on a declared port")
        for kind in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in (container.get("resources") or {}).get(kind, {}):
                    problems.append(f"{where}: no {resource} {kind}")
        for service in services:
            for entry in service["spec"].get("ports", []):
                if container_port(container, entry.get("targetPort", entry.get("port"))) is None:
                    problems.append(
                        f"{service['metadata']['name']}: targetPort {entry.get('targetPort')} "
                        f"is no port of {where}"
                    )
        stop = _prestop_seconds(container)
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if stop <= 0:
            problems.append(
                f"{where}: no preStop sleep (the pod would get SIGTERM while still in the endpoints)"
            )
        elif grace < stop + _exit_timeout(objects, container) + 5:
            problems.append(
                f"{where}: terminationGracePeriodSeconds {grace} too short for preStop {stop} s + the drain"
            )
        for entry in container.get("env", []):
            secret = (entry.get("valueFrom") or {}).get("secretKeyRef")
            if secret and secret.get("name") != SECRET_NAME:
                problems.append(
                    f"{where}: {entry['name']} from Secret {secret.get('name')} (expected {SECRET_NAME})"
                )
    return problems


def k8s_problems(
    objects: list[dict[str, Any]], engine_metrics: set[str], gateway_metrics: set[str]
) -> list[str]:
    """The wiring of one rendered deployment (an overlay): GPU, probes, secrets, autoscaling, budgets."""
    problems = []
    for obj in objects:
        if obj.get("kind") not in K8S_KINDS:
            problems.append(f"{obj.get('kind')} {obj.get('metadata', {}).get('name')}: kind not in K8S_KINDS")
        if obj.get("kind") == "Secret":
            problems.append(f"Secret {obj['metadata']['name']}: secret values must not be in the manifests")
    deployments = k8s_objects(objects, "Deployment")
    missing = [f"Deployment {name} missing" for name in (TRITON, GATEWAY) if name not in deployments]
    if missing:
        return problems + missing
    for name, deployment in deployments.items():
        problems += _workload_problems(objects, name, deployment)

    triton, gateway = deployments[TRITON], deployments[GATEWAY]
    server = _container(triton, "triton")
    for kind in ("requests", "limits"):
        if str((server.get("resources") or {}).get(kind, {}).get(GPU_RESOURCE)) != "1":
            problems.append(f"{TRITON}: {GPU_RESOURCE} {kind} must be 1 (one pod per GPU)")
    if (_pod(triton).get("nodeSelector") or {}).get(GKE_ACCELERATOR_LABEL) not in GKE_ACCELERATORS:
        problems.append(
            f"{TRITON}: nodeSelector {GKE_ACCELERATOR_LABEL} must name a GKE GPU ({sorted(GKE_ACCELERATORS)})"
        )
    if not any(
        t.get("key") == GPU_RESOURCE and t.get("effect") == "NoSchedule"
        for t in _pod(triton).get("tolerations", [])
    ):
        problems.append(f"{TRITON}: no toleration for the {GPU_RESOURCE} taint of GKE GPU nodes")
    expected = {
        "startupProbe": ("/v2/health/ready", 8000),
        "readinessProbe": ("/v2/health/ready", 8000),
        "livenessProbe": ("/v2/health/live", 8000),
    }
    for probe, target in expected.items():
        if http_probe(server, probe) != target:
            problems.append(f"{TRITON}: {probe} is {http_probe(server, probe)}, expected {target}")
    drain_s = _triton_drain(objects, server).triton_drain_timeout_s
    if _exit_timeout(objects, server) < drain_s + TRITON_UNLOAD_MARGIN_S:
        problems.append(
            f"{TRITON}: --exit-timeout-secs {_exit_timeout(objects, server)} leaves the models no time to "
            f"unload after their {drain_s:g} s drain (leave it to the entrypoint)"
        )
    scrape = triton["spec"]["template"]["metadata"].get("annotations") or {}
    if scrape.get("prometheus.io/scrape") != "true" or container_port(server, "metrics") != int(
        scrape.get("prometheus.io/port", 0)
    ):
        problems.append(f"{TRITON}: prometheus.io annotations must point at the metrics port")

    front = _container(gateway, "gateway")
    if GPU_RESOURCE in str(front.get("resources")) or _pod(gateway).get("nodeSelector", {}).get(
        GKE_ACCELERATOR_LABEL
    ):
        problems.append(f"{GATEWAY}: asks for a GPU")
    expected = {
        "startupProbe": ("/health", 8080),
        "readinessProbe": ("/ready", 8080),
        "livenessProbe": ("/health", 8080),
    }
    for probe, target in expected.items():
        if http_probe(front, probe) != target:
            problems.append(f"{GATEWAY}: {probe} is {http_probe(front, probe)}, expected {target}")
    env = {e["name"]: e for e in front.get("env", [])}
    for variable, key in SECRET_ENV.items():
        ref = ((env.get(variable) or {}).get("valueFrom") or {}).get("secretKeyRef") or {}
        if ref.get("key") != key or ref.get("optional", False):
            problems.append(f"{GATEWAY}: {variable} must come from Secret {SECRET_NAME} key {key} (required)")
    values = _config_values(objects, front)
    for variable in SECRET_ENV:
        if variable in values:
            problems.append(f"{GATEWAY}: {variable} has a literal value (it belongs in the Secret)")
    host, _, port = values.get("QWEN3_TTS_GATEWAY_TRITON_URL", "").partition(":")
    service = k8s_objects(objects, "Service").get(host)
    grpc = [p for p in (service or {}).get("spec", {}).get("ports", []) if str(p.get("port")) == port]
    if not grpc or container_port(server, grpc[0].get("targetPort", "")) != 8001:
        problems.append(
            f"{GATEWAY}: QWEN3_TTS_GATEWAY_TRITON_URL {host}:{port} is no Service port to Triton's gRPC 8001"
        )
    elif (service or {}).get("spec", {}).get("clusterIP") != "None":
        problems.append(
            f"{GATEWAY}: QWEN3_TTS_GATEWAY_TRITON_URL {host} must be a headless Service (clusterIP: None), "
            "so the gateway sees every Triton pod and routes per stream"
        )

    problems += _autoscaler_problems(objects, engine_metrics, gateway_metrics)
    return problems


def hpa_pod_metrics(hpa: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{metric name: target} of an HPA's Pods metrics."""
    return {
        m["pods"]["metric"]["name"]: m["pods"]["target"]
        for m in hpa["spec"].get("metrics", [])
        if m.get("type") == "Pods"
    }


def _autoscaler_problems(
    objects: list[dict[str, Any]], engine_metrics: set[str], gateway_metrics: set[str]
) -> list[str]:
    problems = []
    hpas = {
        h["spec"]["scaleTargetRef"]["name"]: h
        for h in k8s_objects(objects, "HorizontalPodAutoscaler").values()
    }
    for name, hpa in hpas.items():
        if not 1 <= hpa["spec"].get("minReplicas", 1) <= hpa["spec"]["maxReplicas"]:
            problems.append(f"HPA {name}: needs 1 <= minReplicas <= maxReplicas")
    triton = hpa_pod_metrics(hpas.get(TRITON, {"spec": {}}))
    for wanted in ("qwen3_tts_queued_streams", "qwen3_tts_active_streams"):
        if wanted not in triton:
            problems.append(f"HPA {TRITON}: no Pods metric {wanted}")
    for metric in triton:
        if metric not in engine_metrics:
            problems.append(f"HPA {TRITON}: metric {metric} is not one the engine publishes")
    gateway = hpas.get(GATEWAY, {"spec": {}})
    if not any(
        m.get("type") == "Resource" and m["resource"]["name"] == "cpu"
        for m in gateway["spec"].get("metrics", [])
    ):
        problems.append(f"HPA {GATEWAY}: no cpu metric")
    for metric in hpa_pod_metrics(gateway):
        if metric not in gateway_metrics:
            problems.append(f"HPA {GATEWAY}: metric {metric} is not one the gateway publishes")
    return problems


def adapter_rule_problems(values: dict[str, Any], metrics: set[str]) -> list[str]:
    """Each metric an HPA uses has a Prometheus adapter rule that exposes it per pod under its own name."""
    problems = []
    rules = (values.get("rules") or {}).get("custom") or []
    for metric in sorted(metrics):
        found = [r for r in rules if (r.get("name") or {}).get("as") == metric]
        if not found:
            problems.append(f"{metric}: no adapter rule exposes it")
            continue
        rule = found[0]
        if not str(rule.get("seriesQuery", "")).startswith(metric + "{"):
            problems.append(f"{metric}: the rule's seriesQuery selects another series")
        overrides = (rule.get("resources") or {}).get("overrides") or {}
        if (overrides.get("pod") or {}).get("resource") != "pod" or (overrides.get("namespace") or {}).get(
            "resource"
        ) != "namespace":
            problems.append(f"{metric}: the rule does not map the pod and namespace labels")
        if "<<.GroupBy>>" not in str(rule.get("metricsQuery", "")):
            problems.append(f"{metric}: the rule's metricsQuery does not group by the pod")
    return problems
