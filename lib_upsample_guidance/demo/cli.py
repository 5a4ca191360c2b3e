"""``python -m lib_upsample_guidance demo [--out DIR] [--factor 2] [--seed N]``.

Samples the shipped 16 px model, from the same initial noise, at the base size, plainly at the target size,
with upsample guidance at the target size and with a hires-fix-style two-pass baseline; writes a labelled
grid PNG and a metrics JSON (structure rate, object area, time, model cost) and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .pipeline import LABELS, PRESETS, Settings, initial_noise, run_method, target_size

DEMO_METHODS = ("base", "plain", "ug", "hires")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m lib_upsample_guidance demo",
        description="Upsample guidance on the shipped small pixel model (CPU).",
    )
    ap.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")
    ap.add_argument("--factor", type=float, default=2.0, help="target side / base side, > 1 (default 2)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the initial noise (default 0)")
    ap.add_argument("--n", type=int, default=8, help="images per method (default 8)")
    ap.add_argument("--steps", type=int, default=20, help="sampler steps per pass (default 20)")
    ap.add_argument("--sampler", choices=("dpmpp_2m", "euler"), default="dpmpp_2m")
    ap.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="measured",
        help="guidance settings: measured = theta 2, eta 0.5 (chosen by bench quality's sweep), paper = theta 1, "
        "eta 1 (the paper's pixel-model setting); --theta / --eta override",
    )
    ap.add_argument("--theta", type=float, default=None, help="guidance scale (default: the preset's)")
    ap.add_argument(
        "--eta", type=float, default=None, help="guided fraction of the time axis (default: the preset's)"
    )
    ap.add_argument(
        "--denoise", type=float, default=0.5, help="hires-fix-style denoise strength (default 0.5)"
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: far faster than 2 when other jobs share the cores)",
    )
    ap.add_argument("--weights", type=Path, default=None, help="weights file (default: the shipped one)")
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    return ap


def _check(args: argparse.Namespace) -> str | None:
    preset = PRESETS[args.preset]
    args.theta = preset["theta"] if args.theta is None else args.theta
    args.eta = preset["eta"] if args.eta is None else args.eta
    if not (1.0 < args.factor <= 8.0):
        return f"--factor must be above 1 and at most 8 (guidance only acts above the base size), got {args.factor}"
    if not (1 <= args.n <= 64):
        return f"--n must be between 1 and 64, got {args.n}"
    if not (2 <= args.steps <= 200):
        return f"--steps must be between 2 and 200, got {args.steps}"
    if not (0.0 < args.denoise <= 1.0):
        return f"--denoise must be in (0, 1], got {args.denoise}"
    if not (0.0 <= args.eta <= 1.0) or args.theta < 0:
        return "--eta must be in [0, 1] and --theta >= 0"
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the process exit status (0 ok, 2 bad input or missing dependency)."""
    args = _parser().parse_args(argv)
    problem = _check(args)
    if problem:
        print(f"[Upsample guidance] demo: {problem}", file=sys.stderr)
        return 2
    import torch

    from .images import MissingPillow, require_pillow
    from .wrapper import load_model

    try:
        require_pillow()
        model, meta = load_model(args.weights)
    except (MissingPillow, FileNotFoundError, OSError, ValueError, KeyError) as exc:
        print(f"[Upsample guidance] demo: {exc}", file=sys.stderr)
        return 2
    threads_before = torch.get_num_threads()
    torch.set_num_threads(max(1, args.threads))
    try:
        return _run(args, model, meta)
    finally:
        torch.set_num_threads(threads_before)


def _run(args: argparse.Namespace, model, meta: dict[str, str]) -> int:
    from .images import image_grid
    from .metrics import data_detail, summarise
    from .wrapper import ModelDenoiser

    t_start = time.time()
    base = int(meta.get("base_size", 16))
    size = target_size(base, args.factor)
    if size <= base:
        print(
            f"[Upsample guidance] demo: --factor {args.factor:g} rounds to the base size {base}px "
            "(sizes are multiples of 4): nothing to guide; try 1.5 or more",
            file=sys.stderr,
        )
        return 2
    s = Settings(
        base=base,
        steps=args.steps,
        sampler=args.sampler,
        theta=args.theta,
        eta=args.eta,
        denoise=args.denoise,
    )
    den = ModelDenoiser(model)
    eps = initial_noise(args.n, size, args.seed)
    print(
        f"demo: {args.n} images per method, base {base}px -> target {size}px ({size / base:g}x), "
        f"{args.steps} {args.sampler} steps, seed {args.seed}",
        flush=True,
    )
    results = {}
    for method in DEMO_METHODS:
        results[method] = run_method(
            method, den, eps, s, seed=args.seed, progress=not args.quiet, base_result=results.get("base")
        )
    metrics = {}
    area_ref = None
    for method, res in results.items():
        px = res.images.shape[-1]
        m = summarise(res.images, base=base, area_ref=area_ref, detail_ref=data_detail(px, n=64))
        if method == "base":
            area_ref = m["object_area"] or None
        m["seconds"] = round(res.seconds, 3)
        m["model_cost_vs_plain"] = round(res.model_pixels / max(1, results["plain"].model_pixels), 4)
        metrics[method] = m
    rows = []
    for method, res in results.items():
        m = metrics[method]
        px = res.images.shape[-1]
        rows.append(
            (
                f"{LABELS[method]}\n{px}x{px} px\none object: {m['structure_rate']:.0%}\n"
                f"{m['seconds']:.1f} s",
                res.images,
            )
        )
    args.out.mkdir(parents=True, exist_ok=True)
    title = (
        f"Upsample guidance demo: {base}px model sampled at {size}px, same initial noise in every row "
        f"(seed {args.seed}, {args.steps} {args.sampler} steps, theta {args.theta:g}, eta {args.eta:g}, "
        f"hires denoise {args.denoise:g})"
    )
    grid = image_grid(rows, args.out / "demo_grid.png", cell=80, title=title, label_width=150)
    total = time.time() - t_start
    record = {
        "base_size": base,
        "target_size": size,
        "factor": size / base,
        "seed": args.seed,
        "n": args.n,
        "steps": args.steps,
        "sampler": args.sampler,
        "theta": args.theta,
        "eta": args.eta,
        "denoise": args.denoise,
        "total_seconds": round(total, 2),
        "methods": metrics,
    }
    (args.out / "demo_metrics.json").write_text(json.dumps(record, indent=1))
    print(f"{'method':<24}{'one object':>12}{'area':>8}{'detail':>8}{'seconds':>9}{'cost':>7}")
    for method in DEMO_METHODS:
        m = metrics[method]
        print(
            f"{LABELS[method]:<24}{m['structure_rate']:>12.0%}{m['object_area']:>8.3f}{m['detail']:>8.2f}"
            f"{m['seconds']:>9.2f}{m['model_cost_vs_plain']:>7.2f}"
        )
    print(f"wrote {grid} and {args.out / 'demo_metrics.json'} in {total:.1f} s")
    return 0
