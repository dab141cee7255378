"""Fill the Triton model repository from the project's templates (build_model_repository, not sed).

The GPU image runs this at build time (a baked default, and proof that the templates fill) and again at
every container start, because checkpoint paths, device and batching are QWEN3_TTS_* settings known only
at run time. The project's builder replaces an earlier build in OUT_DIR and refuses any other folder.
On stdout it prints the tritonserver flags the settings decide (``--exit-timeout-secs``: the models' drain
plus the time to unload), which the entrypoint passes on.
Usage: python3 render_repository.py OUT_DIR [--check-checkpoints]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument(
        "--check-checkpoints",
        action="store_true",
        help="fail unless every model's checkpoint folder holds a complete checkpoint of its flavour and the "
        "engine settings are valid (at start, not at build)",
    )
    args = parser.parse_args(argv)

    from pydantic import ValidationError

    from qwen3_tts_serving.launcher.repository import (
        build_model_repository,
        check_serving_setup,
        discover_models,
    )
    from qwen3_tts_serving.settings import Settings, describe_settings_error

    try:
        settings = Settings()
    except ValidationError as exc:  # a QWEN3_TTS_* value the settings refuse: one line, no traceback
        sys.stderr.write(f"render_repository: {describe_settings_error(exc)}\n")
        return 1
    if args.check_checkpoints:
        # At start, with the checkpoints synced: what the engines would refuse in tritonserver's log.
        try:
            check_serving_setup(settings, discover_models())
        except (FileNotFoundError, ValueError) as exc:
            sys.stderr.write(f"render_repository: {exc}\n")
            return 1
    build_model_repository(settings, args.out_dir)
    sys.stderr.write(f"render_repository: model repository filled in {args.out_dir}\n")
    sys.stdout.write(f"--exit-timeout-secs={settings.triton_exit_timeout_s}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
