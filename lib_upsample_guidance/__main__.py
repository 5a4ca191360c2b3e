"""Command-line entry points: `python -m lib_upsample_guidance <command> [options]`.

demo [--out DIR] [--factor 2] [--seed N]     comparison grid from the shipped small model
demo video [--out DIR] [--seed N]             animated GIF from the small video model (2x frames, 2x size)
bench quality [--n N] [--json]                structure rate etc. on the small model
bench quality video [--n N] [--json]          the video counter: the same command as `bench video`
bench video [--n N] [--sweep] [--json]        correct clips at 2x frames / 2x size on the small video model
bench speed [--arch sd15|sdxl] [--json]       cost of guidance on the real SD UNet graphs
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {  # longest prefixes first
    ("demo", "video"): "lib_upsample_guidance.demo.video.cli",
    ("demo",): "lib_upsample_guidance.demo.cli",
    ("bench", "quality", "video"): "lib_upsample_guidance.demo.video.bench",  # one counter, two names
    ("bench", "quality"): "lib_upsample_guidance.demo.quality",
    ("bench", "video"): "lib_upsample_guidance.demo.video.bench",
    ("bench", "speed"): "lib_upsample_guidance.bench.speed",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for words, module in COMMANDS.items():
        if tuple(argv[: len(words)]) == words:
            return int(importlib.import_module(module).main(argv[len(words) :]) or 0)
    print(__doc__.strip())
    return 0 if not argv or argv[0] in ("-h", "--help") else 2


if __name__ == "__main__":
    sys.exit(main())
