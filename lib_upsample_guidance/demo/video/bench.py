"""``python -m lib_upsample_guidance bench video [--n 64] [--json]``: temporal and spatial upsample guidance
on the shipped video model (8 frames of 16 px, one disk moving in a straight line).

Cells: 2x frames (16 frames of 16 px), 2x size (8 frames of 32 px) and both (16 frames of 32 px). Per cell
and method (see :mod:`.pipeline`): correct clips (:mod:`.tracker`: one object in every frame, a straight
constant-velocity track, a steady size of the data's range), one object in every frame, straight track and
data's size (both among clips with one object in every frame), object scale against the base-size clips' (sqrt of the area ratio), seconds per
clip and model cost relative to plain sampling (network pixels evaluated). Writes video.json and a PNG strip
of the first clips of every method.

``--sweep``: instead, guided sampling only, at every (theta, eta) of ``SWEEP_THETAS`` x ``SWEEP_ETAS`` in every
cell, from noise of seed ``--seed + 1`` (not the bench's own clips), ``--sweep-n`` clips per point; writes
video_sweep.json with all points and the one :func:`choose_setting` picks: the bench's and the demo's default
(theta, eta) (:class:`.pipeline.VideoSettings`) is that pick.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .pipeline import VideoSettings

DEFAULTS = VideoSettings()
CELLS = {"frames": (2, 1), "size": (1, 2), "both": (2, 2)}  # name: (temporal factor, spatial factor)
METHODS = ("base", "plain", "ug")
SWEEP_THETAS = (1.0, 2.0)
SWEEP_ETAS = (0.5, 1.0)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m lib_upsample_guidance bench video", description=__doc__)
    ap.add_argument("--n", type=int, default=64, help="clips per cell and method (default 64)")
    ap.add_argument("--cells", default="frames,size,both", help="comma-separated: frames, size, both")
    ap.add_argument("--steps", type=int, default=20, help="sampler steps (default 20)")
    ap.add_argument(
        "--theta", type=float, default=DEFAULTS.theta, help=f"guidance scale (default {DEFAULTS.theta:g})"
    )
    ap.add_argument(
        "--eta",
        type=float,
        default=DEFAULTS.eta,
        help=f"guided fraction of the time axis (default {DEFAULTS.eta:g})",
    )
    ap.add_argument(
        "--sweep",
        action="store_true",
        help="only sweep guided sampling over (theta, eta) in every cell and pick the default (video_sweep.json)",
    )
    ap.add_argument("--sweep-n", type=int, default=32, help="clips per cell and sweep point (default 32)")
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
    if not (2 <= args.n <= 1024) or not (2 <= args.sweep_n <= 1024) or not (2 <= args.steps <= 200):
        return "need 2 <= --n, --sweep-n <= 1024 and 2 <= --steps <= 200"
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

    run = _sweep if args.sweep else _run
    return run_with_model(
        "bench video", args.weights, args.threads, lambda model, meta: run(args, cells, model, meta)
    )


def summarise(clips, area_ref: float | None = None) -> dict:
    """Rates and object size of a batch of clips (n, 3, F, H, W)."""
    from ..metrics import wilson_interval
    from .tracker import TRACK_TOLERANCE, check_clips

    checks = check_clips(clips)
    n = len(checks)
    one = [c for c in checks if c.one_object]
    area = sum(c.mean_area for c in one) / len(one) if one else 0.0
    correct = sum(c.ok for c in checks)
    return {
        "correct": correct / n,
        "correct_interval": wilson_interval(correct, n),
        "one_object_every_frame": len(one) / n,
        "straight_track": (sum(c.track_residual <= TRACK_TOLERANCE for c in one) / len(one)) if one else 0.0,
        "data_size": (sum(c.data_size for c in one) / len(one)) if one else 0.0,
        "object_area": area,
        "object_scale": (area / area_ref) ** 0.5 if area_ref and area else None,
    }


def _run(args: argparse.Namespace, cells: list[str], model, meta: dict[str, str]) -> int:
    from ..images import image_grid
    from .pipeline import LABELS, initial_noise, run_method
    from .wrapper import VideoModelDenoiser

    t_start = time.time()
    s = _settings(args, meta)
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


def _settings(args: argparse.Namespace, meta: dict[str, str], **over: float) -> VideoSettings:
    """The sampling settings of a run: the model's trained clip size, the command line's steps, theta, eta."""
    kw = dict(steps=args.steps, theta=args.theta, eta=args.eta)
    kw.update(over)
    return VideoSettings(
        base_size=int(meta.get("base_size", 16)), base_frames=int(meta.get("base_frames", 8)), **kw
    )


def _sweep(args: argparse.Namespace, cells: list[str], model, meta: dict[str, str]) -> int:
    """Guided sampling at every sweep point in every cell (noise seed args.seed + 1); writes video_sweep.json
    and prints the points and the pick of :func:`choose_setting`."""
    from .pipeline import initial_noise, run_method
    from .wrapper import VideoModelDenoiser

    t_start = time.time()
    den = VideoModelDenoiser(model)
    sweep: dict = {"n": args.sweep_n, "steps": args.steps, "seed": args.seed + 1, "cells": {}}
    for cell in cells:
        mt, ms = CELLS[cell]
        s0 = _settings(args, meta)
        eps = initial_noise(args.sweep_n, s0.base_frames * mt, s0.base_size * ms, args.seed + 1)
        points = []
        for theta in SWEEP_THETAS:
            for eta in SWEEP_ETAS:
                if not args.quiet:
                    print(f"sweep {cell}: theta {theta:g}, eta {eta:g}", file=sys.stderr, flush=True)
                res = run_method("ug", den, eps, _settings(args, meta, theta=theta, eta=eta))
                points.append({"theta": theta, "eta": eta, **summarise(res.clips)})
        sweep["cells"][cell] = points
    sweep["choice"] = choose_setting(sweep["cells"])
    sweep["total_seconds"] = time.time() - t_start
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "video_sweep.json").write_text(json.dumps(sweep, indent=1))
    print(json.dumps(sweep, indent=1) if args.json else sweep_table(sweep))
    return 0


def choose_setting(cells: dict[str, list[dict]]) -> dict | None:
    """The (theta, eta) whose worst cell has the highest lower 95% bound of the correct-clip rate; ties go
    to the higher mean correct rate over the cells, then to the paper's (theta 1, eta 1) side: smaller
    theta, larger eta. None when there are no points."""
    by_point: dict = {}
    for points in cells.values():
        for p in points:
            by_point.setdefault((p["theta"], p["eta"]), []).append(p)
    best = None
    for (theta, eta), per in by_point.items():
        if len(per) != len(cells):
            continue
        key = (
            round(min(p["correct_interval"][0] for p in per), 9),
            round(sum(p["correct"] for p in per) / len(per), 9),
            -theta,
            eta,
        )
        if best is None or key > best[0]:
            best = (key, theta, eta)
    if best is None:
        return None
    (worst_low, mean, _, _), theta, eta = best
    return {"theta": theta, "eta": eta, "worst_cell_lower_bound": worst_low, "mean_correct": mean}


def sweep_table(sweep: dict) -> str:
    """The sweep as a Markdown table (correct clips with 95% interval per cell) and its pick."""
    cells = list(sweep["cells"])
    lines = ["| theta | eta | " + " | ".join(cells) + " |", "|---|---|" + "---|" * len(cells)]
    rows: dict = {}
    for cell in cells:
        for p in sweep["cells"][cell]:
            lo, hi = p["correct_interval"]
            rows.setdefault((p["theta"], p["eta"]), []).append(f"{p['correct']:.0%} ({lo:.0%}-{hi:.0%})")
    for (theta, eta), vals in rows.items():
        lines.append(f"| {theta:g} | {eta:g} | " + " | ".join(vals) + " |")
    c = sweep["choice"]
    lines.append(
        "" if c is None else f"\npick (max worst-cell lower bound): theta {c['theta']:g}, eta {c['eta']:g}"
    )
    return "\n".join(lines)


def table(results: dict) -> str:
    """The bench's results as a Markdown table."""
    from .pipeline import LABELS

    lines = [
        "| cell | method | correct clips | one object every frame | straight track | data's size | object scale "
        "| s/clip | cost |",
        "|---|---|---|---|---|---|---|---|---|",
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
                f"| {m['straight_track']:.0%} | {m['data_size']:.0%} | {scale} | {m['seconds_per_clip']:.2f} | {m['cost_vs_plain']:.2f} |"
            )
    return "\n".join(lines)
