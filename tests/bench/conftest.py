"""The benchmarks package lives at the project root (``python -m benchmarks.run``), outside the installed
packages: put the root on ``sys.path`` for these tests."""

from __future__ import annotations

import sys

from qwen3_tts_serving.settings import PROJECT_ROOT

if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))
