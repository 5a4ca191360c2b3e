"""``python -m lib_upsample_guidance bench quality [--n N] [--json]``: upsample guidance vs plain and
hires-fix-style sampling on the shipped 16 px model, at 1.5x (spectral pair), 2x and 3x (box pair).

Per factor and method (see :mod:`.pipeline`): structure rate (exactly one object), duplicate rate, object
scale against the base-size samples' (sqrt of the area-fraction ratio), sliced Wasserstein distance between
the outputs brought down to the base size and base-size samples from independent noise, wall time per image
and model cost relative to plain sampling (network pixels evaluated). Then a sweep of eta (guided fraction
of the time axis) and theta (guidance scale) at 2x and 3x (n per point, 95% Wilson intervals), saved as plots,
and the sweep point it recommends as the demo's default (see :func:`choose_default`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

METHODS = ("base", "plain", "ug", "hires", "ug_hires", "ug_matched")
HIRES_DENOISE = (0.3, 0.5, 0.7)
FACTORS = (1.5, 2.0, 3.0)
SWEEP_FACTORS = (2.0, 3.0)
SWEEP_ETAS = (0.2, 0.4, 0.5, 0.6, 0.8, 1.0)
SWEEP_THETAS = (1.0, 1.5, 2.0, 2.5)
# What a default must keep at every swept factor (issue 9): single objects and detail relative to the data.
DEFAULT_MIN_STRUCTURE = 0.97
DEFAULT_MIN_DETAIL = 0.9


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m lib_upsample_guidance bench quality", description=__doc__)
    ap.add_argument("--n", type=int, default=64, help="images per factor and method (default 64)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=20, help="sampler steps per pass (default 20)")
    ap.add_argument(
        "--denoise", type=float, default=0.5, help="hires-fix-style denoise strength (default 0.5)"
    )
    ap.add_argument("--factors", default="1.5,2,3", help="comma-separated target/base factors")
    ap.add_argument(
        "--sweep-n", type=int, default=128, help="images per eta/theta point and factor; 0 skips the sweep"
    )
    ap.add_argument("--sweep-factors", default="2,3", help="comma-separated factors of the eta/theta sweep")
    ap.add_argument(
        "--sweep-thetas",
        default=",".join(f"{t:g}" for t in SWEEP_THETAS),
        help="guidance scales of the sweep",
    )
    ap.add_argument(
        "--sweep-etas", default=",".join(f"{e:g}" for e in SWEEP_ETAS), help="guided fractions of the sweep"
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=Path("demo_out") / "bench",
        help="folder for quality.json, quality_grid.png, eta_theta_sweep.png, eta_theta_detail.png "
        "(default demo_out/bench)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: far faster than 2 when other jobs share the cores)",
    )
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    return ap


def _numbers(text: str, low: float, high: float, *, open_low: bool = False) -> tuple[float, ...]:
    """Comma-separated numbers in [low, high] ((low, high] with open_low); () when malformed."""
    try:
        values = tuple(float(f) for f in text.split(","))
    except ValueError:
        return ()
    ok = all((v > low if open_low else v >= low) and v <= high for v in values)
    return values if ok else ()


def _factors(text: str) -> tuple[float, ...]:
    """Comma-separated factors in (1, 8]; () when malformed."""
    return _numbers(text, 1.0, 8.0, open_low=True)


def _log(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the quality bench; returns the exit status (0 ok, 2 bad input or missing dependency)."""
    args = _parser().parse_args(argv)
    factors = _factors(args.factors)
    sweep_factors = _factors(args.sweep_factors)
    args.thetas = _numbers(args.sweep_thetas, 0.0, 10.0)
    args.etas = _numbers(args.sweep_etas, 0.0, 1.0)
    if not args.thetas or not args.etas:
        print(
            "[Upsample guidance] bench quality: --sweep-thetas must be numbers in [0, 10] and --sweep-etas "
            f"numbers in [0, 1], got {args.sweep_thetas!r} and {args.sweep_etas!r}",
            file=sys.stderr,
        )
        return 2
    for flag, text, parsed in (
        ("--factors", args.factors, factors),
        ("--sweep-factors", args.sweep_factors, sweep_factors),
    ):
        if not parsed:
            print(
                f"[Upsample guidance] bench quality: {flag} must be numbers in (1, 8], got {text!r}",
                file=sys.stderr,
            )
            return 2
    if not (2 <= args.n <= 1024) or not (0 <= args.sweep_n <= 1024) or not (2 <= args.steps <= 200):
        print(
            "[Upsample guidance] bench quality: need 2 <= --n <= 1024, 0 <= --sweep-n <= 1024, "
            "2 <= --steps <= 200",
            file=sys.stderr,
        )
        return 2
    import torch

    from .images import MissingPillow, require_pillow
    from .wrapper import load_model

    try:
        require_pillow()
        model, meta = load_model()
    except (MissingPillow, FileNotFoundError, OSError, ValueError, KeyError) as exc:
        print(f"[Upsample guidance] bench quality: {exc}", file=sys.stderr)
        return 2
    threads_before = torch.get_num_threads()
    torch.set_num_threads(max(1, args.threads))
    try:
        return _run(args, factors, sweep_factors, model, meta)
    finally:
        torch.set_num_threads(threads_before)


def _run(
    args: argparse.Namespace,
    factors: tuple[float, ...],
    sweep_factors: tuple[float, ...],
    model,
    meta: dict[str, str],
) -> int:
    from .images import image_grid
    from .metrics import data_detail, summarise
    from .pipeline import LABELS, Settings, initial_noise, matched_steps, run_method, target_size
    from .wrapper import ModelDenoiser

    t_start = time.time()
    base = int(meta.get("base_size", 16))
    den = ModelDenoiser(model)
    s0 = Settings(base=base, steps=args.steps, denoise=args.denoise)
    # Independent base-size samples: the reference distribution and the expected object area.
    ref = run_method("base", den, initial_noise(args.n, base, args.seed + 10_000), s0).images
    ref_metrics = summarise(ref, base=base)
    area_ref = ref_metrics["object_area"]
    results: dict = {
        "base_size": base,
        "n": args.n,
        "steps": args.steps,
        "sampler": s0.sampler,
        "denoise": args.denoise,
        "seed": args.seed,
        "theta": s0.theta,
        "eta": s0.eta,
        "reference_object_area": area_ref,
        "factors": {},
    }
    grid_rows = []
    for factor in factors:
        size = target_size(base, factor)
        eps = initial_noise(args.n, size, args.seed)
        detail_ref = {base: data_detail(base), size: data_detail(size)}
        per: dict = {}
        res_base = None
        plain_pixels = None
        for method in METHODS:
            _log(args.quiet, f"factor {size / base:g}x ({size}px): {LABELS[method]}")
            res = run_method(
                method, den, eps, s0, seed=args.seed, base_result=res_base, progress=not args.quiet
            )
            if method == "base":
                res_base = res
            if method == "plain":
                plain_pixels = res.model_pixels
            m = summarise(
                res.images,
                base=base,
                reference=ref,
                area_ref=area_ref,
                detail_ref=detail_ref[res.images.shape[-1]],
            )
            m["seconds_per_image"] = res.seconds / args.n
            m["model_pixels_per_image"] = res.model_pixels / args.n
            m["steps"] = matched_steps(args.steps, base, size) if method == "ug_matched" else args.steps
            per[method] = m
            if factor == 2.0 or len(factors) == 1:
                grid_rows.append(
                    (
                        f"{LABELS[method]}\n{res.images.shape[-1]} px\none object {m['structure_rate']:.0%}",
                        res.images[:8],
                    )
                )
        hires_sweep = {}
        if factor == 2.0:  # the two-pass baseline's trade-off: low denoise keeps the layout but blurs
            for d in HIRES_DENOISE:
                if d == args.denoise:
                    continue
                _log(args.quiet, f"factor 2x: hires-fix style, denoise {d:g}")
                sd = Settings(base=base, steps=args.steps, denoise=d)
                res = run_method("hires", den, eps, sd, seed=args.seed, base_result=res_base)
                m = summarise(
                    res.images, base=base, reference=ref, area_ref=area_ref, detail_ref=detail_ref[size]
                )
                m["seconds_per_image"] = res.seconds / args.n
                m["model_pixels_per_image"] = res.model_pixels / args.n
                hires_sweep[f"{d:g}"] = m
        for m in [*per.values(), *hires_sweep.values()]:
            m["cost_vs_plain"] = m["model_pixels_per_image"] * args.n / max(1, plain_pixels)
        kind = "spectral" if (size % base) else "box"
        results["factors"][f"{size / base:g}"] = {"target_size": size, "resampler": kind, "methods": per}
        if hires_sweep:
            results["factors"][f"{size / base:g}"]["hires_denoise_sweep"] = hires_sweep
    sweeps: dict = {}
    if args.sweep_n:
        for factor in sweep_factors:
            sweeps[f"{factor:g}"] = _sweep(args, den, base, factor, area_ref, s0)
        results["sweeps"] = sweeps
        results["recommended_default"] = choose_default(sweeps)
    results["total_seconds"] = time.time() - t_start
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quality.json").write_text(json.dumps(results, indent=1))
    if grid_rows:
        image_grid(
            grid_rows,
            args.out / "quality_grid.png",
            cell=64,
            label_width=150,
            title="bench quality: first 8 images per method at 2x (same noise per column)",
        )
    if sweeps:
        write_sweep_plots(sweeps, args.out)
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        print(format_table(results))
        for sweep in sweeps.values():
            print(format_sweep(sweep))
        if sweeps:
            print(format_default(results["recommended_default"]))
        print(f"wrote {args.out / 'quality.json'} ({results['total_seconds']:.0f} s in all)")
    return 0


def _sweep(args: argparse.Namespace, den, base: int, factor: float, area_ref: float, s0) -> dict:
    """Structure rate (with its 95% interval) and detail of guided sampling per (theta, eta) at one factor,
    all points from the same noise; eta 0 is plain sampling."""
    from .metrics import data_detail, summarise
    from .pipeline import Settings, initial_noise, run_method, target_size

    size = target_size(base, factor)
    eps = initial_noise(args.sweep_n, size, args.seed + 1)
    sweep: dict = {"factor": size / base, "target_size": size, "n": args.sweep_n, "points": []}
    detail_ref = data_detail(size)
    plain_m = summarise(run_method("plain", den, eps, s0).images, base=base, detail_ref=detail_ref)
    for theta in args.thetas:
        for eta in args.etas:
            _log(args.quiet, f"sweep {size / base:g}x: theta {theta:g}, eta {eta:g}")
            s = Settings(base=base, steps=args.steps, theta=theta, eta=eta, denoise=args.denoise)
            res = run_method("ug", den, eps, s)
            m = summarise(res.images, base=base, area_ref=area_ref, detail_ref=detail_ref)
            sweep["points"].append({"theta": theta, "eta": eta, **m})
    sweep["plain_structure_rate"] = plain_m["structure_rate"]
    sweep["plain_structure_interval"] = plain_m["structure_interval"]
    sweep["plain_detail"] = plain_m["detail"]
    return sweep


def write_sweep_plots(sweeps: dict, out: Path) -> None:
    """eta_theta_sweep.png (one-object rate) and eta_theta_detail.png (detail vs data) in `out`: one line per
    (factor, theta) over eta, eta 0 being plain sampling."""
    from .images import line_plot

    n = max(sweep["n"] for sweep in sweeps.values())
    for key, fname, ylabel, ylim in (
        ("structure_rate", "eta_theta_sweep.png", "one-object rate", (0.0, 1.0)),
        ("detail", "eta_theta_detail.png", "detail vs data", None),
    ):
        series = {}
        for fkey, sweep in sweeps.items():
            for theta in sorted({p["theta"] for p in sweep["points"]}):
                pts = sorted((p for p in sweep["points"] if p["theta"] == theta), key=lambda p: p["eta"])
                series[f"{fkey}x theta {theta:g}"] = (
                    [0.0] + [p["eta"] for p in pts],
                    [sweep[f"plain_{key}"]] + [p[key] for p in pts],
                )
        line_plot(
            series,
            out / fname,
            ylim=ylim,
            xlabel="eta (guided fraction of the time axis)",
            ylabel=ylabel,
            title=f"n={n} per point: {ylabel} vs eta and theta (eta 0 = plain sampling)",
        )


def choose_default(
    sweeps: dict, min_structure: float = DEFAULT_MIN_STRUCTURE, min_detail: float = DEFAULT_MIN_DETAIL
) -> dict | None:
    """The (theta, eta) that keeps >= min_structure single objects and detail >= min_detail at every swept
    factor; among those, the highest worst-case lower 95% bound of the structure rate, then the detail
    closest to the data's at the worst factor (smallest max |ln detail|: 1.4 is as far from the data as
    0.7). None when no point qualifies."""
    by_point: dict = {}
    for fkey, sweep in sweeps.items():
        for p in sweep["points"]:
            by_point.setdefault((p["theta"], p["eta"]), {})[fkey] = p
    best = None
    for (theta, eta), per in by_point.items():
        if len(per) != len(sweeps):
            continue
        if any(p["structure_rate"] < min_structure or p["detail"] < min_detail for p in per.values()):
            continue
        key = (
            min(p["structure_interval"][0] for p in per.values()),
            -max(abs(math.log(p["detail"])) for p in per.values()),
        )
        if best is None or key > best[0]:
            best = (key, theta, eta, per)
    if best is None:
        return None
    _, theta, eta, per = best
    return {
        "theta": theta,
        "eta": eta,
        "factors": {
            fkey: {
                "structure_rate": p["structure_rate"],
                "structure_interval": p["structure_interval"],
                "detail": p["detail"],
            }
            for fkey, p in per.items()
        },
    }


def format_default(choice: dict | None) -> str:
    """One line per factor for the recommended default, or why there is none."""
    if choice is None:
        return (
            f"no swept point keeps >= {DEFAULT_MIN_STRUCTURE:.0%} single objects with detail >= "
            f"{DEFAULT_MIN_DETAIL:g} at every factor"
        )
    lines = [f"recommended default: theta {choice['theta']:g}, eta {choice['eta']:g}"]
    for fkey, m in choice["factors"].items():
        lo, hi = m["structure_interval"]
        lines.append(
            f"  {fkey}x: one object {m['structure_rate']:.1%} (95% interval {lo:.1%}-{hi:.1%}), "
            f"detail {m['detail']:.2f}"
        )
    return "\n".join(lines)


def format_table(results: dict) -> str:
    """Markdown table of the per-factor results."""
    from .pipeline import LABELS

    lines = [
        "| factor | method | one object | duplicates | object scale | detail | SWD to base | s/image | cost |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for fkey, fres in results["factors"].items():
        for method, m in fres["methods"].items():
            label = f"{fkey}x ({fres['target_size']} px, {fres['resampler']})"
            name = f"{LABELS[method]} ({m['steps']})" if method == "ug_matched" else LABELS[method]
            lines.append(
                f"| {label} | {name} | {m['structure_rate']:.0%} | {m['duplicate_rate']:.0%} | "
                f"{m.get('object_scale', float('nan')):.2f} | {m.get('detail', float('nan')):.2f} | "
                f"{m.get('swd_to_base', float('nan')):.3f} | "
                f"{m['seconds_per_image'] * 1000:.0f} ms | {m['cost_vs_plain']:.2f} |"
            )
        for d, m in fres.get("hires_denoise_sweep", {}).items():
            lines.append(
                f"| {fkey}x ({fres['target_size']} px, {fres['resampler']}) | hires-fix style, denoise {d} | "
                f"{m['structure_rate']:.0%} | {m['duplicate_rate']:.0%} | {m['object_scale']:.2f} | "
                f"{m['detail']:.2f} | {m['swd_to_base']:.3f} | {m['seconds_per_image'] * 1000:.0f} ms | "
                f"{m['cost_vs_plain']:.2f} |"
            )
    return "\n".join(lines)


def format_sweep(sweep: dict) -> str:
    """Markdown table at one factor: structure rate [95% interval] / detail per (theta, eta)."""
    etas = sorted({p["eta"] for p in sweep["points"]})
    thetas = sorted({p["theta"] for p in sweep["points"]})
    lines = [
        f"{sweep['factor']:g}x ({sweep['target_size']} px), n = {sweep['n']} per point: "
        "one object [95% interval] / detail",
        "",
        "| theta \\ eta | 0 (plain) | " + " | ".join(f"{e:g}" for e in etas) + " |",
        "|---" * (len(etas) + 2) + "|",
    ]
    for th in thetas:
        points = {p["eta"]: p for p in sweep["points"] if p["theta"] == th}
        row = [
            f"{_rate(points[e]['structure_rate'], points[e]['structure_interval'])} / {points[e]['detail']:.2f}"
            if e in points
            else "—"
            for e in etas
        ]
        lines.append(
            f"| {th:g} | {_rate(sweep['plain_structure_rate'], sweep['plain_structure_interval'])} / "
            f"{sweep['plain_detail']:.2f} | " + " | ".join(row) + " |"
        )
    return "\n".join(lines)


def _rate(rate: float, interval) -> str:
    return f"{rate:.0%} [{interval[0]:.0%}-{interval[1]:.0%}]"
