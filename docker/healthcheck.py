"""Exit 0 when a URL answers 2xx, 1 otherwise: the HEALTHCHECK of every image and of docker/compose.yaml.

Python's urllib rather than curl because every image already has Python and the slim ones have no curl.
$VARS in the URL are expanded here, so a Dockerfile can use the exec form and still follow the port settings.
Usage: python3 healthcheck.py 'http://127.0.0.1:${QWEN3_TTS_TRITON_HTTP_PORT}/v2/health/ready' [timeout_s]
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def is_healthy(url: str, timeout_s: float = 4.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        # HTTPError (e.g. 503 while models load) is a URLError; refused/timeouts are OSErrors.
        return False


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        sys.stderr.write("usage: healthcheck.py URL [timeout_s]\n")
        return 2
    url = os.path.expandvars(args[0])
    timeout_s = float(args[1]) if len(args) == 2 else 4.0
    if is_healthy(url, timeout_s):
        return 0
    sys.stderr.write(f"not healthy: {url}\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
