"""How many streams fit per GPU memory size, from the engine's own accounting (no GPU needed).

    python -m benchmarks.capacity --checkpoint-dir .cache/checkpoints/full-1.7b [--slot-max-length 2048]
        [--gpu-gib 24 48 80 141]

One row per flavour sub-folder (custom_voice, base, voice_design) found under ``--checkpoint-dir``: its
weights (from the safetensors headers, or from its configs when only ``--configs-only`` files are there),
the talker key/value slot and the streaming decoder state one stream holds, and how many streams
(``max_active_streams``) one engine on that checkpoint can hold on each GPU size. A last row puts every
flavour's engine on one GPU: each checkpoint's weights held once, the streams shared among the engines.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qwen3_tts_serving.checkpoints.presets import FLAVOURS
from qwen3_tts_serving.engine.capacity import (
    GIB,
    MIB,
    RESERVE_BYTES,
    RESERVE_FRACTION,
    EngineCost,
    engine_cost,
    streams_per_gpu,
)
from qwen3_tts_serving.settings import Settings

ALL_ROW = "all on one GPU"


def gib_needed(fixed: int, per_stream: int, streams: int) -> float:
    """The smallest GPU (GiB) that holds ``streams`` beside ``fixed`` bytes, reserve included."""
    return (fixed + streams * per_stream + RESERVE_BYTES) / (1.0 - RESERVE_FRACTION) / GIB


def table(costs: dict[str, EngineCost], gpu_gib: list[float], default_streams: int) -> list[list[str]]:
    header = [
        "flavour",
        "weights GiB",
        "weights from",
        "KV MiB/stream",
        "decoder MiB/stream",
        "primed MiB",
        f"GiB for {default_streams}/engine",
        *(f"{size:g} GiB" for size in gpu_gib),
    ]
    rows = [header]
    entries = [(name, cost, 1) for name, cost in costs.items()]  # (row, cost, engines)
    if len(costs) > 1:
        # Every engine on one GPU: weights once per checkpoint; a stream costs at most the dearest engine's.
        combined = EngineCost(
            weights=sum(c.weights for c in costs.values()),
            weights_source="+".join(sorted({c.weights_source for c in costs.values()})),
            kv_per_stream=max(c.kv_per_stream for c in costs.values()),
            decoder_per_stream=max(c.decoder_per_stream for c in costs.values()),
            primed_cache=sum(c.primed_cache for c in costs.values()),
        )
        entries.append((ALL_ROW, combined, len(costs)))
    for name, cost, engines in entries:
        # GPU columns: streams that fit in all (split among the engines as their max_active_streams).
        fits = (streams_per_gpu(int(size * GIB), cost.fixed, cost.per_stream) for size in gpu_gib)
        rows.append(
            [
                name,
                f"{cost.weights / GIB:.2f}",
                cost.weights_source,
                f"{cost.kv_per_stream / MIB:.1f}",
                f"{cost.decoder_per_stream / MIB:.2f}",
                f"{cost.primed_cache / MIB:.0f}",
                # Every engine allocates its own max_active_streams slots at start-up.
                f"{gib_needed(cost.fixed, cost.per_stream, default_streams * engines):.1f}",
                *(str(n) for n in fits),
            ]
        )
    return rows


def render(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def main(argv: list[str] | None = None) -> int:
    settings = Settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint-dir", type=Path, required=True, help="Folder of flavour sub-folders.")
    parser.add_argument(
        "--slot-max-length",
        type=int,
        default=settings.slot_max_length,
        help=f"Talker tokens per stream's key/value slot (default: the setting, {settings.slot_max_length}).",
    )
    parser.add_argument(
        "--gpu-gib", type=float, nargs="+", default=[24, 48, 80, 141], help="GPU memory sizes in GiB."
    )
    args = parser.parse_args(argv)
    if args.slot_max_length < 2:
        parser.error(f"--slot-max-length must be >= 2, got {args.slot_max_length}")
    if any(size <= 0 for size in args.gpu_gib):
        parser.error("--gpu-gib sizes must be > 0")
    flavours = [f for f in FLAVOURS if (args.checkpoint_dir / f / "config.json").is_file()]
    if not flavours:
        print(
            f"no flavour folder ({', '.join(FLAVOURS)}) with a config.json under {args.checkpoint_dir}",
            file=sys.stderr,
        )
        return 2
    costs = {
        flavour: engine_cost(
            args.checkpoint_dir / flavour,
            slot_max_length=args.slot_max_length,
            primed_decoder_cache_size=settings.primed_decoder_cache_size,
        )
        for flavour in flavours
    }
    print(
        f"Engine memory per checkpoint: {args.checkpoint_dir} (bfloat16, slot_max_length "
        f"{args.slot_max_length}, reserve {RESERVE_FRACTION:.0%} + {RESERVE_BYTES / GIB:g} GiB per GPU)"
    )
    print(render(table(costs, args.gpu_gib, settings.max_active_streams)))
    print(
        "GPU columns: streams that fit (one engine: its max_active_streams; all on one GPU: the sum of the "
        f"engines' max_active_streams); 'GiB for {settings.max_active_streams}/engine': the GPU the default "
        "max_active_streams needs (slots for it in every engine); primed: a Base engine's "
        f"{settings.primed_decoder_cache_size} primed clone-reference decoder states."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
