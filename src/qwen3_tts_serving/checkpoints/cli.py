"""``qwen3-tts-checkpoints``: build random-weight Qwen3-TTS checkpoints (see the package docstring)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from qwen3_tts_serving.checkpoints.builder import ensure_checkpoints, write_configs_only
from qwen3_tts_serving.checkpoints.presets import FLAVOURS, PRESETS
from qwen3_tts_serving.checkpoints.reference import ENV_VAR
from qwen3_tts_serving.checkpoints.weights import check_device


def _device(value: str) -> str:
    try:
        check_device(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qwen3-tts-checkpoints",
        description="Write seeded random-weight Qwen3-TTS checkpoints (OUT/custom_voice, OUT/base, "
        "OUT/voice_design) that qwen_tts.Qwen3TTSModel.from_pretrained loads.",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="Folder that receives one sub-folder per flavour."
    )
    parser.add_argument(
        "--preset", choices=PRESETS, default="tiny", help="tiny (CPU tests) or full-size (GPU)."
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--flavours", nargs="+", choices=FLAVOURS, default=None, help="Default: every flavour of the preset."
    )
    parser.add_argument("--force", action="store_true", help="Rebuild even complete checkpoints.")
    parser.add_argument(
        "--device",
        type=_device,
        default="cpu",
        help="Where modules are built and weights drawn: cpu (default), cuda or cuda:N. full-1.7b takes "
        "seconds on a GPU, minutes on a few CPU cores; the two give different (equally valid) weights.",
    )
    parser.add_argument(
        "--configs-only",
        action="store_true",
        help="Write only the JSON and tokenizer files (no weights, not loadable): to inspect a preset.",
    )
    parser.add_argument(
        "--reference-dir",
        type=Path,
        default=None,
        help=f"Folder of the released models' configs. Default: ${ENV_VAR}, else the copy in the package.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.configs_only:
        folders = write_configs_only(args.out, args.preset, args.flavours, args.reference_dir)
    else:
        folders = ensure_checkpoints(
            args.out,
            args.preset,
            args.seed,
            flavours=args.flavours,
            force=args.force,
            reference_dir=args.reference_dir,
            device=args.device,
        )
    for flavour, folder in folders.items():
        print(f"{flavour}\t{folder}")  # noqa: T201 - the command's output: where each checkpoint is
    return 0


if __name__ == "__main__":
    sys.exit(main())
