"""SDXL-family size conditioning for the low-res call: the `vector` / `y` a host builds for a generation at the
low-res size.

SDXL's UNet gets a vector (`vector` on A1111, `y` on Forge, reForge and ComfyUI) whose columns after the pooled
text embedding are 256-wide embeddings of scalars in pixels (generative-models `ConcatTimestepEmbedderND`):

    base (2816 wide):    pooled[1280] | e(orig h) | e(orig w) | e(crop top) | e(crop left) | e(target h) | e(target w)
    refiner (2560 wide): pooled[1280] | e(orig h) | e(orig w) | e(crop top) | e(crop left) | e(aesthetic score)

with e(v) = [cos(v f_0) .. cos(v f_127), sin(v f_0) .. sin(v f_127)], f_i = 10000^(-i/128) (the diffusion
timestep embedding, max_period 10000). A host generating at H x W px sets original = target = (H, W). The low-res
call must see what the host would build for a generation at the low size h x w: original = target = (h, w), pooled
text, crop and aesthetic score unchanged, on every row (cond and uncond alike).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

EMBED_DIM = 256
MAX_PERIOD = 10000.0


def size_embedding(
    values: Sequence[float], *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """Concatenated 256-wide sinusoidal embeddings of `values` (pixels or a score): shape [len(values) * 256].

    e(v) = [cos(v f), sin(v f)], f_i = exp(-ln(10000) i / 128), i = 0..127; computed in float32 like the hosts
    (their frequencies and products are float32), then cast to `dtype`.
    """
    half = EMBED_DIM // 2
    freqs = torch.exp(-math.log(MAX_PERIOD) * torch.arange(half, dtype=torch.float32, device=device) / half)
    args = torch.tensor([float(v) for v in values], dtype=torch.float32, device=device)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1).reshape(-1).to(dtype)


@dataclass(frozen=True)
class SizeVectorLayout:
    """Where the size columns sit in a model's conditioning vector (column offsets, 256 wide each)."""

    name: str
    width: int
    original: int  # first column of e(orig h); e(orig w) follows
    target: int | None  # first column of e(target h); None where the model has no target size (refiner)


SDXL_BASE = SizeVectorLayout("SDXL", 2816, original=1280, target=1280 + 4 * EMBED_DIM)
SDXL_REFINER = SizeVectorLayout("SDXL refiner", 2560, original=1280, target=None)
LAYOUTS = {layout.width: layout for layout in (SDXL_BASE, SDXL_REFINER)}


def layout_of(vector: torch.Tensor) -> SizeVectorLayout | None:
    """The size layout of a [rows, width] conditioning vector, or None if its width is not an SDXL family one."""
    if vector.ndim != 2:
        return None
    return LAYOUTS.get(int(vector.shape[-1]))


def _tolerance(dtype: torch.dtype) -> float:
    """Largest |difference| accepted between a host's stored embedding and ours (values in [-1, 1]; float32
    arguments of up to ~2000 rad carry ~2e-4 of rounding, and hosts may compute them on another device)."""
    return {torch.float16: 2e-3, torch.bfloat16: 1.6e-2}.get(dtype, 1e-3)


def _size_columns(layout: SizeVectorLayout) -> list[int]:
    return [layout.original] + ([layout.target] if layout.target is not None else [])


def matches_size(
    vector: torch.Tensor, size_px: tuple[int, int], layout: SizeVectorLayout | None = None
) -> bool:
    """True when every row's original (and target) size columns embed `size_px` = (height, width) in pixels."""
    layout = layout or layout_of(vector)
    if layout is None:
        return False
    expected = size_embedding(size_px, device=vector.device)
    tolerance = _tolerance(vector.dtype)
    for start in _size_columns(layout):
        stored = vector[:, start : start + 2 * EMBED_DIM].float()
        if not bool(((stored - expected).abs() <= tolerance).all()):
            return False
    return True


def low_res_size_vector(
    vector: torch.Tensor, full_size_px: tuple[int, int], low_size_px: tuple[int, int]
) -> torch.Tensor | None:
    """The conditioning vector of a generation at `low_size_px` = (h, w) px, from the full-size one.

    Replaces the original (and, for the base model, target) size columns of every row with e(h), e(w); pooled
    text, crop and aesthetic columns are kept. Returns a new tensor (the input is untouched), or None when the
    vector has no SDXL layout or its size columns do not embed `full_size_px` (a user-set original size, a host
    that builds it otherwise): then the caller keeps the vector and warns once.
    """
    layout = layout_of(vector)
    if layout is None or not matches_size(vector, full_size_px, layout):
        return None
    low = size_embedding(low_size_px, dtype=vector.dtype, device=vector.device)
    out = vector.clone()
    for start in _size_columns(layout):
        out[:, start : start + 2 * EMBED_DIM] = low
    return out
