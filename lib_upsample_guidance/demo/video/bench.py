"""``python -m lib_upsample_guidance bench video [--n 64] [--json]``: temporal and spatial upsample guidance
on the shipped video model (8 frames of 16 px, one disk moving in a straight line).

Cells: 2x frames (16 frames of 16 px), 2x size (8 frames of 32 px) and both (16 frames of 32 px). Per cell
and method (see :mod:`.pipeline`): correct clips (:mod:`.tracker`: one object in every frame, a straight
constant-velocity track, a steady size), one object in every frame, straight track (among clips with one
object in every frame), object scale against the base-size clips' (sqrt of the area ratio), seconds per
clip and model cost relative to plain sampling (network pixels evaluated). Writes video.json and a PNG strip
of the first clips of every method.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

CELLS = {"frames": (2, 1), "size": (1, 2), "both": (2, 2)}  # name: (temporal factor, spatial factor)
METHODS = ("base", "plain", "ug")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m lib_upsample_guidance bench video", description=__doc__)
    ap.add_argument("--n", type=int, default=64, help="clips per cell and method (default 64)")
    ap.add_argument("--cells", default="frames,size,both", help="comma-separated: frames, size, both")
    ap.add_argument("--steps", type=int, default=20, help="sampler steps (default 20)")
    ap.add_argument("--theta", type=float, default=1.0, help="guidance scale (default 1)")
    ap.add_argument("--eta", type=float, default=1.0, help="guided fraction of the time axis (default 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    ap.add_argument("--out", type=Path, default=Path("demo_out") / "bench_video", help="output folder")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--weights", type=Path, default=None, help="weights file (default: the shipped one)")
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    return ap


def _problem(args: argparse.Namespace, cells: list[str]) -> str | None:
    if not cells or any(c not in CELLS for c in cells):
        return f"--cells must name some of {', '.join(CELLS)}, got {args.cells!r}"
    if not (2 <= args.n <= 1024) or not (2 <= args.steps <= 200):
        return "need 2 <= --n <= 1024 and 2 <= --steps <= 200"
    if not (0.0 <= args.eta <= 1.0) or args.theta < 0:
        return "--eta must be in [0, 1] and --theta >= 0"
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the video bench; returns the exit status (0 ok, 2 bad input or missing dependency)."""
    args = _parser().parse_args(argv)
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    problem = _problem(args, cells)
    if problem:
        print(f"[Upsample guidance] bench video: {problem}", file=sys.stderr)
        return 2
    from .wrapper import run_with_model

    return run_with_model(
        "bench video", args.weights, args.threads, lambda model, meta: _run(args, cells, model, meta)
    )


def summarise(clips, area_ref: float | None = None) -> dict:
    """Rates and object size of a batch of clips (n, 3, F, H, W)."""
    from .tracker import TRACK_TOLERANCE, check_clips

    checks = check_clips(clips)
    n = len(checks)
    one = [c for c in checks if c.one_object]
    area = sum(c.mean_area for c in one) / len(one) if one else 0.0
    return {
        "correct": sum(c.ok for c in checks) / n,
        "one_object_every_frame": len(one) / n,
        "straight_track": (sum(c.track_residual <= TRACK_TOLERANCE for c in one) / len(one)) if one else 0.0,
        "object_area": area,
        "object_scale": (area / area_ref) ** 0.5 if area_ref and area else None,
    }


def _run(args: argparse.Namespace, cells: list[str], model, meta: dict[str, str]) -> int:
    from ..images import image_grid
    from .pipeline import LABELS, VideoSettings, initial_noise, run_method
    from .wrapper import VideoModelDenoiser

    t_start = time.time()
    s = VideoSettings(
        base_size=int(meta.get("base_size", 16)),
        base_frames=int(meta.get("base_frames", 8)),
        steps=args.steps,
        theta=args.theta,
        eta=args.eta,
    )
    den = VideoModelDenoiser(model)
    results: dict = {
        "base_frames": s.base_frames,
        "base_size": s.base_size,
        "n": args.n,
        "steps": args.steps,
        "sampler": s.sampler,
        "theta": s.theta,
        "eta": s.eta,
        "seed": args.seed,
        "cells": {},
    }
    strip_rows = []
    for cell in cells:
        mt, ms = CELLS[cell]
        frames, size = s.base_frames * mt, s.base_size * ms
        eps = initial_noise(args.n, frames, size, args.seed)
        per: dict = {}
        area_ref = None
        for method in METHODS:
            if not args.quiet:
                print(f"{cell}: {frames} frames of {size} px, {LABELS[method]}", file=sys.stderr, flush=True)
            res = run_method(method, den, eps, s, progress=not args.quiet)
            m = summarise(res.clips, area_ref)
            if method == "base":
                area_ref = m["object_area"] or None
            m["seconds_per_clip"] = res.seconds / args.n
            m["model_pixels_per_clip"] = res.model_pixels / args.n
            per[method] = m
            strip_rows.append(
                (
                    f"{cell}: {LABELS[method]}\n{res.clips.shape[2]} frames {res.clips.shape[-1]} px\n"
                    f"correct {m['correct']:.0%}",
                    res.clips[0].transpose(0, 1),
                )
            )
        for m in per.values():
            m["cost_vs_plain"] = m["model_pixels_per_clip"] / per["plain"]["model_pixels_per_clip"]
        results["cells"][cell] = {"frames": frames, "size": size, "methods": per}
    results["total_seconds"] = time.time() - t_start
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "video.json").write_text(json.dumps(results, indent=1))
    image_grid(
        strip_rows,
        args.out / "video_strips.png",
        cell=40,
        label_width=170,
        title="first clip of each cell and method, frames left to right",
    )
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        print(table(results))
    return 0


def table(results: dict) -> str:
    """The bench's results as a Markdown table."""
    from .pipeline import LABELS

    lines = [
        "| cell | method | correct clips | one object every frame | straight track | object scale | s/clip | cost |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for cell, r in results["cells"].items():
        for method, m in r["methods"].items():
            shown = (
                f"{results['base_frames']} f, {results['base_size']} px"
                if method == "base"
                else f"{r['frames']} f, {r['size']} px"
            )
            scale = "" if m["object_scale"] is None else f"{m['object_scale']:.2f}"
            lines.append(
                f"| {cell} ({shown}) | {LABELS[method]} | {m['correct']:.0%} | {m['one_object_every_frame']:.0%} "
                f"| {m['straight_track']:.0%} | {scale} | {m['seconds_per_clip']:.2f} | {m['cost_vs_plain']:.2f} |"
            )
    return "\n".join(lines)
