"""Parse files inside .venv-deploy and print them as JSON: `python tool_dump.py {hcl|yaml|yaml-all} FILE...`.

yaml-all reads every document of a multi-document file (rendered Kubernetes manifests) into a list.

The tests run in the project's venv, which has neither parser pinned; this script runs with the lint
venv's interpreter instead. python-hcl2 comes from .venv-deploy/hcl2-lib (see
docker/requirements-hcl2.txt for why it is not installed into the venv itself).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def load_hcl(path: Path) -> object:
    import hcl2
    from hcl2 import SerializationOptions

    # Strings without their HCL quotes, blocks as plain lists; comments kept (checkov:skip reasons).
    options = SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=True)
    with path.open(encoding="utf-8") as handle:
        return hcl2.load(handle, serialization_options=options)


def load_yaml(path: Path) -> object:
    import yaml

    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def load_yaml_documents(path: Path) -> object:
    import yaml

    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def main(argv: list[str]) -> int:
    kind, *paths = argv
    loader = {"hcl": load_hcl, "yaml": load_yaml, "yaml-all": load_yaml_documents}[kind]
    if kind == "hcl":
        # Prove which parser ran: bc-python-hcl2 (checkov's fork) also answers to `import hcl2`.
        import importlib.metadata

        hcl2_version = importlib.metadata.version("python-hcl2")
    else:
        hcl2_version = None
    out = {"parser": hcl2_version, "files": {p: loader(Path(p)) for p in paths}}
    json.dump(out, sys.stdout, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
