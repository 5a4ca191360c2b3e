"""`python -m lib_upsample_guidance bench speed [--arch sd15|sdxl] [--json] [--reps N]`: cost of guidance.

Builds the real SD1.5 or SDXL UNet graph with random weights (diffusers' UNet2DConditionModel, configs written
out below; cost does not depend on weights; nothing is downloaded), wraps it as a k-diffusion denoiser

    x0 = x - sigma * eps(c_in * x, t(sigma)),   c_in = 1 / sqrt(sigma^2 + 1),

(t(sigma) from the SD table: scaled-linear betas 0.00085..0.012, 1000 steps) and times, with interleaved
repetitions in one process, batch 2 (cond + uncond rows, as a WebUI batches them):
    plain     the denoiser alone at the target latent size,
    guided    UpsampleGuidedDenoiser (the public entry point) at a sigma where guidance is on,
    disabled  the same wrapper with guidance_scale 0 (must make no extra call and cost nothing),
    low       the low-res call alone (the core's query), to split guided - plain into the second model call
              and the guidance path around it,
and the guidance path alone around an identity model (microseconds). Ratios use process CPU time (one torch
thread: robust to a shared machine); wall time is reported too. For each size pair it reports
    time ratio r = guided / plain (median and IQR of the per-repetition paired ratios),
    bound      b = 1 + FLOPs_low / FLOPs_high (torch.utils.flop_counter, one model call each),
    r / b,
    job ratio  1 + (n_g / n) (r - 1) for an n = 20 step Karras schedule (sigma 0.0292..14.61, rho 7) at
               eta 0.6, where n_g is the number of the 20 model calls the core's schedule guides,
    peak memory: the peak of bytes live in torch's CPU allocator during one call (torch profiler's
               allocation events), guided and disabled against plain,
and the FLOP accounting against Hires. fix at the same output size (two passes: n steps at the base size,
then int(0.7 n) steps at the target):  UG = n F_high + n_g F_low,  Hires = n F_base + int(0.7 n) F_high.

diffusers is needed by this command only; it is imported inside `main`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.conventions import DiscreteSigmaTable, KarrasSigma, rows
from ..core.denoiser import UpsampleGuidedDenoiser
from ..core.schedule import guidance_weight
from ..core.step import prepare_low_res_query

__all__ = [
    "UNET_CONFIGS",
    "Arch",
    "SizeCase",
    "EpsToX0",
    "scaled_linear_alphas_cumprod",
    "karras_sigmas",
    "count_guided_steps",
    "job_ratio",
    "flop_bound",
    "hires_fix_flops",
    "count_flops",
    "peak_allocated_bytes",
    "summarise",
    "main",
]

# --- the architectures (published diffusers UNet configs of SD1.5 and SDXL base 1.0, written out) ---------
SD15_UNET: dict[str, Any] = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-5,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

SDXL_UNET: dict[str, Any] = {
    "act_fn": "silu",
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 2048,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-5,
    "norm_num_groups": 32,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": 2816,
    "sample_size": 128,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "use_linear_projection": True,
}

# A smoke-test graph of the same block types (seconds on a CPU): proves the command end to end, measures nothing.
TINY_UNET: dict[str, Any] = {
    "attention_head_dim": 2,
    "block_out_channels": [8, 16],
    "cross_attention_dim": 16,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "in_channels": 4,
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "out_channels": 4,
    "sample_size": 16,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
}

UNET_CONFIGS: dict[str, dict[str, Any]] = {"sd15": SD15_UNET, "sdxl": SDXL_UNET, "tiny": TINY_UNET}


@dataclass(frozen=True)
class SizeCase:
    """A square target latent size guided from a square base latent size (latent px)."""

    label: str
    target: int
    base: int


@dataclass(frozen=True)
class Arch:
    """What to build and which sizes to time (`timed`) or only count FLOPs for (`flops_only`)."""

    name: str
    config: dict[str, Any]
    context_len: int
    context_dim: int
    pooled_dim: int | None  # SDXL's pooled text embedding (added_cond_kwargs), None for SD1.5
    timed: tuple[SizeCase, ...]
    flops_only: tuple[SizeCase, ...] = field(default=())
    reps: int = 3


ARCHS: dict[str, Arch] = {
    "sd15": Arch(
        "sd15",
        SD15_UNET,
        77,
        768,
        None,
        timed=(SizeCase("2x box", 64, 32), SizeCase("1.5x spectral", 48, 32)),
        flops_only=(SizeCase("2x box", 128, 64), SizeCase("1.5x spectral", 96, 64)),
        reps=4,
    ),
    "sdxl": Arch(
        "sdxl",
        SDXL_UNET,
        77,
        2048,
        1280,
        timed=(SizeCase("2x box", 64, 32),),
        flops_only=(SizeCase("2x box", 256, 128), SizeCase("1.5x spectral", 192, 128)),
        reps=2,
    ),
    "tiny": Arch(
        "tiny",
        TINY_UNET,
        4,
        16,
        None,
        timed=(SizeCase("2x box", 16, 8), SizeCase("1.5x spectral", 12, 8)),
        reps=2,
    ),
}

# --- schedule arithmetic --------------------------------------------------------------------------------------
STEPS = 20
ETA = 0.6
HIRES_DENOISE = 0.7
SIGMA_MIN, SIGMA_MAX, RHO = 0.0292, 14.61, 7.0


def scaled_linear_alphas_cumprod(
    n: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012
) -> torch.Tensor:
    """SD's table: betas = linspace(sqrt(beta_start), sqrt(beta_end), n)^2, alphas_cumprod = cumprod(1 - betas)."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def karras_sigmas(
    n: int = STEPS, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = RHO
) -> torch.Tensor:
    """The n sigmas a sampler calls the model at (Karras et al.): (s_max^(1/rho) + i/(n-1) (s_min^(1/rho) - s_max^(1/rho)))^rho."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def count_guided_steps(
    sigmas: torch.Tensor, convention: KarrasSigma, eta: float = ETA, guidance_scale: float = 1.0
) -> int:
    """How many model calls the core's schedule guides: weight(normalised_time(sigma)) > 0."""
    w = guidance_weight(convention.normalised_time(sigmas), guidance_scale, eta)
    return int((w > 0).sum())


def job_ratio(step_ratio: float, n_guided: int, n_steps: int = STEPS) -> float:
    """Job cost against plain: (n_steps + n_guided (r - 1)) / n_steps = 1 + (n_guided / n_steps)(r - 1)."""
    return 1.0 + (n_guided / n_steps) * (step_ratio - 1.0)


def flop_bound(flops_high: int, flops_low: int) -> float:
    """Least cost of a guided step against a plain one: 1 + FLOPs_low / FLOPs_high."""
    return 1.0 + flops_low / flops_high


def hires_fix_flops(
    flops_high: int, flops_base: int, n_steps: int = STEPS, denoise: float = HIRES_DENOISE
) -> float:
    """Hires. fix: n steps at the base size, then int(denoise * n) img2img steps at the target (A1111's count)."""
    return n_steps * flops_base + int(denoise * n_steps) * flops_high


# --- measuring ------------------------------------------------------------------------------------------------
def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """Q K^T and (softmax) V: 2 B H Sq Sk D_qk + 2 B H Sq Sk D_v (the CPU flash kernel has no formula in torch)."""
    b, h, sq, d = query_shape
    sk = key_shape[-2]
    return 2 * b * h * sq * sk * d + 2 * b * h * sq * sk * value_shape[-1]


def _flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    mapping = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        mapping[op] = _sdpa_cpu_flop
    return FlopCounterMode(display=False, custom_mapping=mapping)


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of fn() by torch.utils.flop_counter (matmuls, convolutions, attention; elementwise ops are free)."""
    with torch.inference_mode(), _flop_counter() as counter:
        fn()
    return int(counter.get_total_flops())


def measure_peak_and_flops(fn: Callable[[], Any]) -> tuple[int, int]:
    """(peak_allocated_bytes, FLOPs) of one call of fn(), measured together (one call)."""
    with _flop_counter() as counter:
        peak = peak_allocated_bytes(fn)
    return peak, int(counter.get_total_flops())


def peak_allocated_bytes(fn: Callable[[], Any]) -> int:
    """Peak of bytes allocated through torch's CPU allocator during fn() and still live, above the level at the
    start (torch profiler's allocation events, cumulated in time order); fn's returned tensors count."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    events: list[tuple[int, int]] = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation:
            events.append((node.start_time_ns, int(node.extra_fields.alloc_size)))
        stack.extend(node.children)
    del out
    events.sort()
    live = peak = 0
    for _, size in events:
        live += size
        peak = max(peak, live)
    return peak


def summarise(values: list[float]) -> dict[str, float]:
    """Median, quartiles (inclusive method) and n of a sample."""
    v = sorted(values)
    if len(v) == 1:
        q1 = q3 = v[0]
    else:
        q1, _, q3 = statistics.quantiles(v, n=4, method="inclusive")
    return {"median": statistics.median(v), "q1": q1, "q3": q3, "n": len(v)}


class EpsToX0(torch.nn.Module):
    """k-diffusion wrapper of an eps-prediction UNet: x0 = x - sigma * eps(c_in x, t(sigma)), c_in = 1/sqrt(sigma^2+1).

    t(sigma) is the WebUI's fractional timestep from the alphas_cumprod table; `calls` counts UNet calls.
    """

    def __init__(self, unet: torch.nn.Module, table: DiscreteSigmaTable):
        super().__init__()
        self.unet = unet
        self.table = table
        self.calls = 0

    def forward(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor | float,
        *,
        context: torch.Tensor,
        added: dict | None = None,
    ):
        self.calls += 1
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
        s = rows(sigma, x)
        t = self.table.sigma_to_t(sigma.double()).to(x.dtype)
        eps = self.unet(
            x / torch.sqrt(s * s + 1),
            t,
            encoder_hidden_states=context,
            added_cond_kwargs=added,
            return_dict=False,
        )[0]
        return x - s * eps


def _conditioning(arch: Arch, batch: int, size_px: int, device: str) -> dict[str, Any]:
    g = torch.Generator().manual_seed(1)
    extra: dict[str, Any] = {
        "context": torch.randn(batch, arch.context_len, arch.context_dim, generator=g).to(device)
    }
    if arch.pooled_dim is not None:
        time_ids = torch.tensor([[size_px, size_px, 0, 0, size_px, size_px]] * batch, dtype=torch.float32)
        extra["added"] = {
            "text_embeds": torch.randn(batch, arch.pooled_dim, generator=g).to(device),
            "time_ids": time_ids.to(device),
        }
    return extra


def _build_unet(unet_cls, config: dict[str, Any], device: str) -> torch.nn.Module:
    with torch.device(device):
        unet = unet_cls(**config)
    return unet.eval().requires_grad_(False)


def _plan(case: SizeCase):
    """The core's plan for a case, as UpsampleGuidedDenoiser makes it (latent px, latent factor 1)."""
    plan = UpsampleGuidedDenoiser(lambda x, s: x, base_size=case.base).plan_for((case.target, case.target))
    if plan is None or plan.low_size[0] != plan.low_size[1]:
        raise ValueError(f"bench case {case} does not give a square guided plan")
    return plan


def _flops_table(
    unet_cls, arch: Arch, table: DiscreteSigmaTable, cases: tuple[SizeCase, ...], batch: int
) -> dict[int, int]:
    """FLOPs of one batch-`batch` denoiser call per latent size, counted on the meta device (no compute)."""
    den = EpsToX0(_build_unet(unet_cls, arch.config, "meta"), table)
    sizes = sorted({s for c in cases for s in (c.target, c.base, _plan(c).low_size[0])})
    out = {}
    for size in sizes:
        x = torch.zeros(batch, 4, size, size, device="meta")
        extra = _conditioning(arch, batch, size * 8, "meta")
        sigma = torch.full((batch,), 1.0, device="meta")
        out[size] = count_flops(
            lambda x=x, extra=extra, sigma=sigma: den.unet(
                x,
                sigma,
                encoder_hidden_states=extra["context"],
                added_cond_kwargs=extra.get("added"),
                return_dict=False,
            )
        )
    return out


CLOCKS = ("cpu", "wall")


def _time(fn: Callable[[], Any]) -> tuple[dict[str, float], Any]:
    """Run fn once; {"cpu": process CPU seconds, "wall": elapsed seconds} and its result.

    With one torch thread the process CPU time is the step's compute time, robust to other processes taking
    the cores away (the wall time is not, on a shared machine); both are reported, ratios use the CPU time."""
    w0, c0 = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        out = fn()
    return {"cpu": time.process_time() - c0, "wall": time.perf_counter() - w0}, out


def path_cost_us(case: SizeCase, convention: KarrasSigma, batch: int = 2, n: int = 200) -> dict[str, float]:
    """Cost of the guidance path alone: UpsampleGuidedDenoiser around an identity "model" (x0 = x, free), median
    microseconds per call over n calls, guided (sigma_max: guidance on) and disabled (guidance_scale 0)."""
    x = torch.randn(batch, 4, case.target, case.target)
    sigma = torch.full((batch,), SIGMA_MAX)

    def identity(x, sigma, **extra):
        return x

    out = {}
    for kind, scale in (("guided", 1.0), ("disabled", 0.0)):
        wrapper = UpsampleGuidedDenoiser(
            identity, base_size=case.base, guidance_scale=scale, eta=ETA, sigma_to_t=convention.sigma_to_t
        )
        samples = []
        with torch.inference_mode():
            for _ in range(n + 10):
                t0 = time.perf_counter()
                wrapper(x, sigma)
                samples.append(time.perf_counter() - t0)
        out[kind] = statistics.median(samples[10:]) * 1e6
    return out


def _paired(a: list[float], b: list[float]) -> list[float]:
    """Per-repetition ratios a_i / b_i (cases timed in the same repetition, next to each other)."""
    return [x / y for x, y in zip(a, b, strict=True)]


def run_bench(
    arch: Arch, *, reps: int, warmup: int = 1, batch: int = 2, threads: int = 1, log=print
) -> dict[str, Any]:
    """Build `arch`, time its cases and count their FLOPs; returns the report as a dict (see module docstring)."""
    from diffusers import UNet2DConditionModel

    torch.set_num_threads(threads)
    alphas = scaled_linear_alphas_cumprod()
    table = DiscreteSigmaTable(alphas)
    convention = KarrasSigma.from_alphas_cumprod(alphas)
    sigmas = karras_sigmas()
    n_guided = count_guided_steps(sigmas, convention)
    sigma_on = float(sigmas[0])  # the first step: guided under eta 0.6

    all_cases = arch.timed + arch.flops_only
    flops = _flops_table(UNet2DConditionModel, arch, table, all_cases, batch)
    log(
        f"[bench speed] {arch.name}: FLOPs per call (batch {batch}): "
        + ", ".join(f"{s}x{s}: {f / 1e9:.1f} G" for s, f in flops.items())
    )

    t0 = time.perf_counter()
    torch.manual_seed(0)
    unet = _build_unet(UNet2DConditionModel, arch.config, "cpu")
    n_params = sum(p.numel() for p in unet.parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in unet.parameters())
    den = EpsToX0(unet, table)
    log(
        f"[bench speed] built {arch.name} UNet ({n_params / 1e6:.0f} M parameters, {weight_bytes / 2**30:.2f} GiB fp32) in {time.perf_counter() - t0:.0f} s"
    )

    runs: dict[tuple[str, str], Callable[[], Any]] = {}
    calls_per_run: dict[tuple[str, str], int] = {}
    g = torch.Generator().manual_seed(0)
    for case in arch.timed:
        x = torch.randn(batch, 4, case.target, case.target, generator=g) * sigma_on
        extra = _conditioning(arch, batch, case.target * 8, "cpu")
        sigma = torch.full((batch,), sigma_on)
        guided = UpsampleGuidedDenoiser(den, base_size=case.base, eta=ETA, sigma_to_t=convention.sigma_to_t)
        disabled = UpsampleGuidedDenoiser(
            den, base_size=case.base, guidance_scale=0.0, eta=ETA, sigma_to_t=convention.sigma_to_t
        )
        runs[(case.label, "plain")] = lambda x=x, s=sigma, e=extra: den(x, s, **e)
        runs[(case.label, "guided")] = lambda x=x, s=sigma, e=extra, m=guided: m(x, s, **e)
        # the low-res call alone (the core's query: D(x), sigma / sqrt(k)), to split guided - plain into the
        # second model call and the guidance path around it
        query = prepare_low_res_query(
            x, sigma, plan=_plan(case), convention=guided.convention, guidance_scale=1.0, eta=ETA
        )
        runs[(case.label, "low")] = lambda q=query, e=extra: den(q.x, q.level.to(q.x.dtype), **e)
        if case == arch.timed[0]:  # the disabled path does not depend on the size: time it once
            runs[(case.label, "disabled")] = lambda x=x, s=sigma, e=extra, m=disabled: m(x, s, **e)

    keys = list(runs)
    times: dict[str, dict[tuple[str, str], list[float]]] = {c: {k: [] for k in keys} for c in CLOCKS}
    outputs: dict[tuple[str, str], torch.Tensor] = {}
    last: dict[tuple[str, str], dict[str, float]] = {}
    for rep in range(warmup + reps):
        order = keys[rep % len(keys) :] + keys[: rep % len(keys)]  # rotate: every case meets every position
        for key in order:
            before = den.calls
            dt, out = _time(runs[key])
            calls_per_run[key] = den.calls - before
            if rep >= warmup:
                for clock in CLOCKS:
                    times[clock][key].append(dt[clock])
            outputs[key] = out
            last[key] = dt
        log(
            f"[bench speed] repetition {rep + 1}/{warmup + reps}"
            + (" (warm-up)" if rep < warmup else "")
            + ": "
            + ", ".join(
                f"{k[0]} {k[1]} cpu {last[k]['cpu']:.2f} s wall {last[k]['wall']:.2f} s" for k in order
            )
        )

    log("[bench speed] memory and FLOPs of the real calls (one more call per case, profiled)")
    peaks, real_flops = {}, {}
    for key in keys:
        peaks[key], real_flops[key] = measure_peak_and_flops(runs[key])

    cases_out = []
    for case in arch.timed:
        p, gd, d = (case.label, "plain"), (case.label, "guided"), (case.label, "disabled")
        kinds = [k for k in ("plain", "guided", "disabled", "low") if (case.label, k) in runs]
        lo = (case.label, "low")
        plan = _plan(case)
        ratio = {c: summarise(_paired(times[c][gd], times[c][p])) for c in CLOCKS}
        r = ratio["cpu"]
        f_high, f_low = flops[case.target], flops[plan.low_size[0]]
        bound = flop_bound(f_high, f_low)
        out = {
            "case": case.label,
            "plan": plan.describe(latent_factor=8),
            "target_latent": case.target,
            "low_latent": list(plan.low_size),
            "seconds": {c: {k: summarise(times[c][(case.label, k)]) for k in kinds} for c in CLOCKS},
            "model_calls": {k: calls_per_run[(case.label, k)] for k in kinds},
            "flops_high": f_high,
            "flops_low": f_low,
            "flops_measured": {k: real_flops[(case.label, k)] for k in kinds},
            "ratio_guided_plain": r,
            "ratio_guided_plain_wall": ratio["wall"],
            "bound": bound,
            "ratio_over_bound": r["median"] / bound,
            "job_ratio": job_ratio(r["median"], n_guided),
            "job_bound": job_ratio(bound, n_guided),
            "peak_bytes": {k: peaks[(case.label, k)] for k in kinds},
            "peak_guided_over_plain": peaks[gd] / peaks[p],
            "peak_with_weights_guided_over_plain": (weight_bytes + peaks[gd]) / (weight_bytes + peaks[p]),
            "path_us": path_cost_us(case, convention, batch),
            "ratio_low_plain": summarise(_paired(times["cpu"][lo], times["cpu"][p])),
            "flops_ratio_low_plain": f_low / f_high,
            "overhead_seconds": summarise(
                [
                    g - a - b
                    for g, a, b in zip(times["cpu"][gd], times["cpu"][p], times["cpu"][lo], strict=True)
                ]
            ),
        }
        if d in runs:
            out["ratio_disabled_plain"] = summarise(_paired(times["cpu"][d], times["cpu"][p]))
            out["ratio_disabled_plain_wall"] = summarise(_paired(times["wall"][d], times["wall"][p]))
            out["disabled_bit_identical"] = bool(torch.equal(outputs[p], outputs[d]))
            out["peak_disabled_over_plain"] = peaks[d] / peaks[p]
        cases_out.append(out)
    return {
        "arch": arch.name,
        "parameters": n_params,
        "weight_bytes": weight_bytes,
        "batch": batch,
        "threads": threads,
        "reps": reps,
        "warmup": warmup,
        "schedule": {
            "steps": STEPS,
            "sigma_min": SIGMA_MIN,
            "sigma_max": SIGMA_MAX,
            "rho": RHO,
            "eta": ETA,
            "guided_steps": n_guided,
        },
        "machine": _machine(),
        "cases": cases_out,
        "hires_fix": _hires_rows(arch.timed + arch.flops_only, flops, n_guided),
    }


def _hires_rows(cases: tuple[SizeCase, ...], flops: dict[int, int], n_guided: int) -> list[dict[str, Any]]:
    rows_out = []
    for case in cases:
        plan = _plan(case)
        f_high, f_low, f_base = flops[case.target], flops[plan.low_size[0]], flops[case.base]
        plain = STEPS * f_high
        ug = STEPS * f_high + n_guided * f_low
        hires = hires_fix_flops(f_high, f_base)
        rows_out.append(
            {
                "case": case.label,
                "plan": plan.describe(latent_factor=8),
                "plain_tflops": plain / 1e12,
                "ug_tflops": ug / 1e12,
                "hires_tflops": hires / 1e12,
                "ug_over_plain": ug / plain,
                "hires_over_plain": hires / plain,
                "ug_over_hires": ug / hires,
            }
        )
    return rows_out


def _machine() -> dict[str, Any]:
    import os
    import platform

    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    try:
        info["load_average"] = list(os.getloadavg())
    except OSError:
        pass
    return info


def _stat(d: dict[str, float], fmt: str = ".3f") -> str:
    return f"{d['median']:{fmt}} [{d['q1']:{fmt}}, {d['q3']:{fmt}}]"


def _gflop(f: float) -> str:
    return f"{f / 1e9:.4g} GFLOP"


def format_report(rep: dict[str, Any]) -> str:
    """The report as text (medians with [interquartile range])."""
    load = rep["machine"].get("load_average")
    lines = [
        f"Upsample guidance speed: {rep['arch']} UNet ({rep['parameters'] / 1e6:.0f} M parameters, random weights), "
        f"batch {rep['batch']}, {rep['threads']} torch thread(s), {rep['machine']['cpu_count']} CPU cores, "
        f"{rep['reps']} interleaved repetitions after {rep['warmup']} warm-up; load average at the end "
        + (", ".join(f"{v:.1f}" for v in load) if load else "?"),
        f"{STEPS}-step Karras schedule, eta {ETA}: {rep['schedule']['guided_steps']} of {STEPS} model calls guided",
        "",
    ]
    for c in rep["cases"]:
        lines.append(f"{c['case']}: {c['plan']}")
        for clock in CLOCKS:
            sec = c["seconds"][clock]
            lines.append(
                f"  {clock} seconds per step, median [IQR]: "
                + ", ".join(f"{k} {_stat(v)}" for k, v in sec.items())
            )
        lines.append(f"  model calls per step: {c['model_calls']}")
        lines.append(
            f"  guided/plain {_stat(c['ratio_guided_plain'], '.4f')} (wall {_stat(c['ratio_guided_plain_wall'], '.4f')}); bound 1 + {_gflop(c['flops_low'])} / "
            f"{_gflop(c['flops_high'])} = {c['bound']:.4f}; ratio/bound {c['ratio_over_bound']:.4f}"
        )
        if "ratio_disabled_plain" in c:
            lines.append(
                f"  disabled/plain {_stat(c['ratio_disabled_plain'], '.4f')} (wall "
                f"{_stat(c['ratio_disabled_plain_wall'], '.4f')}); output bit-identical to plain: "
                f"{c['disabled_bit_identical']}"
            )
        lines.append(
            f"  low-res call alone / plain {_stat(c['ratio_low_plain'], '.4f')} against FLOPs "
            f"{c['flops_ratio_low_plain']:.4f}; guided - plain - low {_stat(c['overhead_seconds'], '.3f')} s"
        )
        if "path_us" in c:
            lines.append(
                f"  guidance path alone (identity model): guided {c['path_us']['guided']:.0f} us, disabled "
                f"{c['path_us']['disabled']:.0f} us per step"
            )
        lines.append(f"  {STEPS}-step job: {c['job_ratio']:.4f} x plain (FLOP bound {c['job_bound']:.4f})")
        lines.append(
            "  peak bytes allocated during a step: "
            + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in c["peak_bytes"].items())
            + f"; guided/plain {c['peak_guided_over_plain']:.4f}, counting the weights "
            f"{c['peak_with_weights_guided_over_plain']:.4f}"
        )
        lines.append(
            "  FLOPs counted on the timed calls: "
            + ", ".join(f"{k} {_gflop(v)}" for k, v in c["flops_measured"].items())
        )
        lines.append("")
    lines.append(
        f"FLOPs per job at the same output size (Hires. fix: {STEPS} steps at the base size + "
        f"{int(HIRES_DENOISE * STEPS)} at the target; UG: {STEPS} at the target + {rep['schedule']['guided_steps']} low-res calls):"
    )
    for h in rep["hires_fix"]:
        lines.append(
            f"  {h['plan']}: plain {h['plain_tflops']:.4g} TFLOP; UG {h['ug_over_plain']:.3f} x plain; "
            f"Hires. fix {h['hires_over_plain']:.3f} x plain; UG / Hires. fix {h['ug_over_hires']:.3f}"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lib_upsample_guidance bench speed", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--arch", choices=sorted(ARCHS), default="sd15", help="UNet graph to build (tiny: smoke test)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--reps", type=int, default=None, help="timed repetitions per case (default per arch)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed repetitions first")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    args = parser.parse_args(argv)
    if args.reps is not None and args.reps < 1:
        parser.error("--reps must be at least 1")
    try:
        import diffusers  # noqa: F401
    except ImportError:
        print(
            "[Upsample guidance] bench speed builds the SD UNet graphs with diffusers, a benchmark-only dependency: "
            "pip install diffusers (the extension itself does not need it)",
            file=sys.stderr,
        )
        return 2
    arch = ARCHS[args.arch]
    log = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    report = run_bench(arch, reps=args.reps or arch.reps, warmup=args.warmup, threads=args.threads, log=log)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
