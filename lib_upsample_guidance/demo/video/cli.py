"""``python -m lib_upsample_guidance demo video [--out DIR] [--seed N] [--n 4]``: an animated GIF.

Samples the shipped video model (8 frames of 16 px) from the same initial noise at its trained size and at
twice the frames and twice the size (16 frames of 32 px), plainly and with upsample guidance (temporal
factor 2, spatial factor 2: k = 8), and writes ``video_demo.gif``: one row per method, ``--n`` clips per row,
every row played at the target's 16 frames (the 8-frame base clip shows each frame twice) with the tracker's
verdict under each clip.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m lib_upsample_guidance demo video", description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the initial noise (default 0)")
    ap.add_argument("--n", type=int, default=4, help="clips per method (default 4)")
    ap.add_argument("--frames", type=int, default=2, help="temporal factor, 1 or 2 (default 2)")
    ap.add_argument("--size", type=int, default=2, help="spatial factor, 1 or 2 (default 2)")
    ap.add_argument("--steps", type=int, default=20, help="sampler steps (default 20)")
    ap.add_argument("--cell", type=int, default=96, help="displayed clip side in px (default 96)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--weights", type=Path, default=None, help="weights file (default: the shipped one)")
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Write the GIF; returns the exit status (0 ok, 2 bad input or missing dependency)."""
    args = _parser().parse_args(argv)
    if args.frames not in (1, 2) or args.size not in (1, 2) or args.frames * args.size == 1:
        print(
            "[Upsample guidance] demo video: --frames and --size must be 1 or 2, not both 1", file=sys.stderr
        )
        return 2
    if not (1 <= args.n <= 8) or not (2 <= args.steps <= 200) or not (32 <= args.cell <= 256):
        print(
            "[Upsample guidance] demo video: need 1 <= --n <= 8, 2 <= --steps <= 200, 32 <= --cell <= 256",
            file=sys.stderr,
        )
        return 2
    from .wrapper import run_with_model

    def run(model, meta) -> int:
        print(f"wrote {_run(args, model, meta)}")
        return 0

    return run_with_model("demo video", args.weights, args.threads, run)


def _run(args: argparse.Namespace, model, meta: dict[str, str]) -> Path:
    from .pipeline import LABELS, VideoSettings, initial_noise, run_method
    from .tracker import check_clips
    from .wrapper import VideoModelDenoiser

    t0 = time.time()
    s = VideoSettings(
        base_size=int(meta.get("base_size", 16)),
        base_frames=int(meta.get("base_frames", 8)),
        steps=args.steps,
    )
    frames, size = s.base_frames * args.frames, s.base_size * args.size
    den = VideoModelDenoiser(model)
    eps = initial_noise(args.n, frames, size, args.seed)
    rows = []
    for method in ("base", "plain", "ug"):
        res = run_method(method, den, eps, s, progress=not args.quiet)
        checks = check_clips(res.clips)
        shown = f"{res.clips.shape[2]} frames, {res.clips.shape[-1]} px"
        rows.append((f"{LABELS[method]}\n{shown}", res.clips, [c.ok for c in checks]))
    title = (
        f"{s.base_frames}-frame {s.base_size} px video model sampled at {frames} frames of {size} px "
        f"(seed {args.seed}, {args.steps} steps); same noise in every row"
    )
    path = args.out / "video_demo.gif"
    write_gif(rows, path, frames=frames, cell=args.cell, title=title)
    if not args.quiet:
        print(f"{time.time() - t0:.1f} s", file=sys.stderr)
    return path


def write_gif(rows, path: Path, *, frames: int, cell: int, title: str, ms_per_frame: int = 150) -> Path:
    """rows: (label, clips (n, 3, F, H, W) in [-1, 1], verdicts); every clip is shown at `frames` frames
    (frame f of an F-frame clip at f * F // frames) and `cell` px, with "correct"/"broken" under it."""
    from ..images import require_pillow, to_image

    Image, ImageDraw, ImageFont = require_pillow()
    font = ImageFont.load_default()
    label_w, pad, head, foot = 150, 6, 20, 14
    ncol = max(len(clips) for _, clips, _ in rows)
    width = label_w + ncol * (cell + pad) + pad
    height = head + len(rows) * (cell + foot + pad) + pad
    images = []
    for f in range(frames):
        canvas = Image.new("RGB", (width, height), (255, 255, 255))
        draw = ImageDraw.Draw(canvas)
        draw.text((pad, 4), title, fill=(0, 0, 0), font=font)
        for r, (label, clips, verdicts) in enumerate(rows):
            y = head + r * (cell + foot + pad)
            for li, line in enumerate(label.split("\n")):
                draw.text((pad, y + 4 + 13 * li), line, fill=(0, 0, 0), font=font)
            for c, clip in enumerate(clips):
                x = label_w + c * (cell + pad)
                canvas.paste(to_image(clip[:, f * clip.shape[1] // frames], cell), (x, y))
                ok = verdicts[c]
                draw.text(
                    (x, y + cell + 1),
                    "correct" if ok else "broken",
                    fill=(0, 120, 0) if ok else (200, 0, 0),
                    font=font,
                )
        images.append(canvas.convert("P", palette=Image.ADAPTIVE, colors=255))
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(
        path, save_all=True, append_images=images[1:], duration=ms_per_frame, loop=0, optimize=True
    )
    return path
