"""The A1111 adapter's low-resolution call beside other extensions (a private helper of adapters/a1111.py).

Read from each extension's source (commits in the README's compatibility table):

* sd-webui-controlnet (Mikubill, `scripts/hook.py`): `UnetHook.hook` replaces the UNet's forward and keeps
  the units in `control_params` (`ControlParams`: `hint_cond` / `_hint_cond`, `hr_hint_cond`,
  `used_hint_cond`, `used_hint_cond_latent`, `used_hint_inpaint_hijack`). The forward picks the hint whose
  height is nearest to 8 * x's height (`hint_cond` -> first pass, else `hr_hint_cond` and
  `is_in_high_res_fix = True`) and never resizes it: the ControlNet adds its hint features to the first
  feature map (`cldm.py` `h += guided_hint`), so a half-size call with a full-size hint raises. For the
  low-resolution call every unit's hint (the one the full call used) is replaced by an area-downsampled copy
  of the low-resolution pixel size, placed so that ControlNet's own selection keeps the pass being guided:
  first pass -> `hint_cond` low and `hr_hint_cond` None (is_in_high_res_fix False: "Low res only" units and
  soft injection as in the full call); hires pass -> both low, the tie picks the hires branch
  (is_in_high_res_fix True: "High res only" units, the forced soft injection of canny/mlsd). The cached
  latents (`used_hint_cond_latent`, `used_hint_inpaint_hijack`) are cleared so that reference-only,
  inpaint_only and the inpaint model re-encode the low-res hint (ControlNet caches VAE encodings by content,
  so this happens once per size), and everything is restored in `finally`. T2I-Adapter features follow the
  hint's size (`aligned_adding`); reference-only then runs its reference pass at the low size.
  ControlNet-LLLite caches its hint embedding at the full size inside the UNet: refused.
* Kohya Hires.fix / Deep Shrink (wcde/sd-webui-kohya-hiresfix, `scripts/khrfix.py`): swaps UNet
  input/output blocks for `Scaler(scale, block, scaler)` modules that interpolate before the block. The
  low-resolution query is already at the base size: for that call each Scaler is put back to its `.block`
  (exactly what the extension's postprocess does) and restored afterwards. FreeU and other size-independent
  patches stay.
* Self Attention Guidance (ashen-sensored/sd_webui_SAG, `scripts/SAG.py`): module globals
  (`sag_enabled`, `current_selfattn_map`, `current_uncond_pred` = a view of the host's output rows) that our
  call and our in-place update would overwrite: refused while `sag_enabled`.
* Tiled Diffusion (pkuliyi2015/multidiffusion-upscaler): MultiDiffusion replaces the denoiser's
  `inner_model.forward` (tiles laid out for the full latent), Mixture of Diffusers replaces
  `sd_model.apply_model` (keeps `apply_model_original_md`) and sends other sizes untiled without its region
  prompts: both refused. AnimateDiff also replaces `inner_model.forward`: guided through it (webui.animatediff).
* AnimateDiff (continue-revolution/sd-webui-animatediff a88e889, `scripts/animatediff_infv2v.py` 110-149
  `mm_cn_select` / `mm_cn_restore`): per context window it slices every ControlNet unit's hint with more rows
  than the window by the window's row indices (through the `hint_cond` setter, the full tensor kept in
  `hint_cond_backup`, the window's rows written back afterwards), and IP-Adapter image embeddings likewise.
  For the low-res clip (f frames) per-frame hints are averaged over the merged frames (`FrameRows`), the
  backups are set aside during the call, and per-frame IP-Adapter embeddings with f < F are refused.
* Incantations (v0xie/sd-webui-incantations, scripts/pag.py, smoothed_energy_guidance.py): PAG and SEG
  keep their state in `p.incant_cfg_params` and add `(x_out[cond] - pag_x_out) * scale` in a replaced
  combine_denoised, from the output rows our update already changed: refused while active.
* Regional Prompter: refused by its script (webui/peers.py); AnimateDiff is guided on A1111.

Nothing here imports a host module; the host objects arrive as arguments.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..webui import animatediff, peers
from ..webui.generation import UnsupportedInput

__all__ = [
    "CONTROLNET",
    "FrameRows",
    "controlnet_network",
    "refusal",
    "low_res_call",
    "low_res_hint",
    "swap_controlnet_hints",
    "without_deep_shrink",
]

CONTROLNET = "ControlNet"
SAG = "Self Attention Guidance"
# sd-webui-controlnet ControlModelType members whose unit state cannot follow a call at another size
_REFUSED_CONTROL_TYPES = {"Controlllite": "ControlNet-LLLite"}


def _unet(sd_model: Any) -> Any:
    return getattr(getattr(sd_model, "model", None), "diffusion_model", None)


def controlnet_network(p: Any, sd_model: Any) -> Any | None:
    """sd-webui-controlnet's UnetHook for this generation (its script's `latest_network`), when it hooked
    this model's UNet and has units; else None."""
    unet = _unet(sd_model)
    for script in peers.alwayson_scripts(p):
        network = getattr(script, "latest_network", None)
        if network is None or not getattr(network, "control_params", None):
            continue
        if unet is not None and getattr(network, "model", None) is unet:
            return network
    return None


def _name_of_forward(fn: Any) -> str:
    func = getattr(fn, "__func__", fn)
    owner = getattr(fn, "__self__", None)
    text = " ".join(
        str(s).lower()
        for s in (getattr(func, "__module__", ""), getattr(func, "__qualname__", ""), type(owner).__name__)
    )
    if "animatediff" in text:
        return "AnimateDiff"
    if any(key in text for key in ("multidiffusion", "mixtureofdiffusers", "tiled", "demofusion")):
        return "Tiled Diffusion (MultiDiffusion)"
    return f"another extension ({getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', '?')})"


def refusal(p: Any, sd_model: Any, denoiser: Any) -> str | None:
    """Why this generation cannot be guided beside the extensions active in it, or None (checked before any
    low-resolution call, so a refusal costs nothing and the host's own output is kept)."""
    # AnimateDiff is guided on A1111: the adapter sends the low-res call through its own forward
    reason = peers.refusal_by_scripts(p, animatediff_guided=True)
    if reason is not None:
        return reason
    sag = peers.find_script(p, SAG)
    if sag is not None and peers.module_global(sag, "sag_enabled", False) is True:
        return (
            "Self Attention Guidance (sd_webui_SAG) is enabled: it keeps the model's attention map and "
            "outputs in module globals that the low-resolution call would overwrite"
        )
    incant = getattr(p, "incant_cfg_params", None)
    if isinstance(incant, dict):
        active = [
            name
            for key, name, flag in (("pag_params", "PAG", "pag_active"), ("seg_params", "SEG", "seg_active"))
            if getattr(incant.get(key), flag, False) is True
        ]
        if active:
            return (
                f"Incantations {' and '.join(active)} is active: it adds its term from the host's output rows, "
                "which already carry the guidance, so the guidance would be scaled by its weight too"
            )
    inner = getattr(denoiser, "inner_model", None)
    if (
        inner is not None
        and "forward" in getattr(inner, "__dict__", {})
        and animatediff.animatediff_run(inner) is None
    ):
        return (
            f"{_name_of_forward(inner.forward)} replaced the model's forward: the low-resolution call "
            "would go through it"
        )
    if hasattr(sd_model, "apply_model_original_md"):
        return (
            "Tiled Diffusion (Mixture of Diffusers) replaced apply_model: the low-resolution call would "
            "run untiled and without its region prompts"
        )
    network = controlnet_network(p, sd_model)
    for param in getattr(network, "control_params", None) or []:
        kind = getattr(getattr(param, "control_model_type", None), "name", "")
        if kind in _REFUSED_CONTROL_TYPES:
            return (
                f"ControlNet ({_REFUSED_CONTROL_TYPES[kind]} unit): it caches its hint embedding at the "
                "full size inside the UNet"
            )
    return None


# --------------------------------------------------------------------------------------------------
# ControlNet hints


def _pixel_hint(hint: Any, full_size: tuple[int, int]) -> bool:
    """A spatial hint [B, C, Hp, Wp] in pixels covering the latent of full_size (H, W): Hp >= H, Wp >= W and
    the same pixels per latent pixel on both axes (to 0.5)."""
    if not isinstance(hint, torch.Tensor) or hint.ndim != 4:
        return False
    (H, W), hp, wp = full_size, int(hint.shape[-2]), int(hint.shape[-1])
    return hp >= H and wp >= W and abs(hp / H - wp / W) <= 0.5


def low_res_hint(
    hint: torch.Tensor, full_size: tuple[int, int], low_size: tuple[int, int]
) -> torch.Tensor | None:
    """An area-downsampled copy of a spatial hint ([B, C, Hp, Wp], pixels) for the low-resolution latent
    size, or None when the hint is not spatial for this latent.

    The hint covers the full latent (H, W) at Hp / H pixels per latent pixel (8 for SD VAEs); the copy has
    (round(Hp * h / H), round(Wp * w / W)) pixels: the low-res call's 8 * (h, w). Area mode is the mean
    over each output pixel's footprint (exact average pooling for integer factors).
    """
    if not _pixel_hint(hint, full_size):
        return None  # not a pixel-space image of this latent (e.g. a CLIP-vision embedding)
    (H, W), (h, w) = full_size, low_size
    hp, wp = int(hint.shape[-2]), int(hint.shape[-1])
    size = (max(1, round(hp * h / H)), max(1, round(wp * w / W)))
    dtype = hint.dtype
    low = F.interpolate(hint.float() if not hint.is_floating_point() else hint, size=size, mode="area")
    return low.to(dtype)


_HINT_FIELDS = (
    "_hint_cond",
    "hr_hint_cond",
    "used_hint_cond",
    "used_hint_cond_latent",
    "used_hint_inpaint_hijack",
)
# set by AnimateDiff's per-window hint selection (animatediff_infv2v.py mm_cn_select / mm_cn_restore)
_BACKUP_FIELDS = ("hint_cond_backup", "hr_hint_cond_backup")


@dataclass(frozen=True)
class FrameRows:
    """An AnimateDiff call: the clip's `frames` frames per video in the rows; `down` maps per-frame rows
    [(B F), ...] to the low-res clip's [(B f), ...] (D along the frames; FoldedVideoQuery.down_rows)."""

    frames: int
    down: Callable[[torch.Tensor], torch.Tensor]
    low_frames: int | None = None  # frames of the low-res clip (None: as many as the clip's)


def _per_frame_embedding_refusal(network: Any, frames: FrameRows | None) -> str | None:
    """IP-Adapter units of an AnimateDiff batch (one image embedding per frame): AnimateDiff selects their
    rows by the frame indices of each window (mm_cn_select), which for a low-res clip of fewer frames
    are not the frames merged; an embedding cannot be averaged like an image. Refused then."""
    if frames is None or frames.low_frames is None or frames.low_frames == frames.frames:
        return None
    for param in getattr(network, "control_params", None) or []:
        if getattr(getattr(param, "control_model_type", None), "name", "") != "IPAdapter":
            continue
        cond_emb = getattr(
            getattr(getattr(param, "control_model", None), "image_emb", None), "cond_emb", None
        )
        if isinstance(cond_emb, torch.Tensor) and cond_emb.shape[0] > 1:
            return (
                "ControlNet IP-Adapter with one image per frame and a temporal factor: AnimateDiff picks its "
                "embeddings by frame index, which the low-res clip's merged frames do not follow"
            )
    return None


def _frame_rows_hint(
    hint: torch.Tensor, full_size: tuple[int, int], frames: FrameRows | None
) -> torch.Tensor:
    """A per-frame hint ([(B F), C, Hp, Wp], AnimateDiff's batch / video units: one image per frame, and per
    CFG half) at the low-res clip's frames: the hints of merged frames averaged (D along the frames, as for
    every other per-frame condition). One image for all frames (1 row) is kept."""
    if frames is None or not _pixel_hint(hint, full_size) or hint.shape[0] == 1:
        return hint
    if hint.shape[0] % frames.frames:
        raise UnsupportedInput(
            f"a ControlNet hint of {hint.shape[0]} images for an AnimateDiff clip of {frames.frames} frames"
        )
    if tuple(hint.shape[-2:]) == tuple(full_size):  # down() would act on space too (latent-sized hint)
        raise UnsupportedInput("a latent-sized ControlNet hint with AnimateDiff's temporal guidance")
    dtype = hint.dtype
    return frames.down(hint if hint.is_floating_point() else hint.float()).to(dtype)


@contextlib.contextmanager
def swap_controlnet_hints(
    network: Any,
    full_size: tuple[int, int],
    low_size: tuple[int, int],
    in_high_res_fix: bool,
    frames: FrameRows | None = None,
) -> Iterator[None]:
    """Every unit's hint at the low-res size for the calls inside the block (see module docstring).

    in_high_res_fix: what ControlNet decided for the full call of this step (`UnetHook.is_in_high_res_fix`);
    the swapped hints make its selection decide the same for the low-res call. frames: an AnimateDiff
    call: the clip's hints (not the slice of AnimateDiff's last window) are the source, per-frame hints are
    averaged over merged frames when the low-res clip has fewer frames, and AnimateDiff's per-window backups
    of the full hints are set aside (its restore writes a window's hint back into the backup it finds: a
    full-clip backup would be overwritten by low-res rows).
    """
    saved = []
    try:
        for param in getattr(network, "control_params", None) or []:
            source = getattr(param, "used_hint_cond", None)
            if frames is not None:  # AnimateDiff: used_hint_cond may be its last window's slice of the clip's
                hr = getattr(param, "hr_hint_cond", None)
                source = hr if in_high_res_fix and isinstance(hr, torch.Tensor) else None
            if not isinstance(source, torch.Tensor):
                source = getattr(param, "_hint_cond", getattr(param, "hint_cond", None))
            low = low_res_hint(_frame_rows_hint(source, full_size, frames), full_size, low_size)
            if low is None:
                continue
            fields = {name: getattr(param, name, None) for name in _HINT_FIELDS}
            fields.update({name: getattr(param, name) for name in _BACKUP_FIELDS if hasattr(param, name)})
            saved.append((param, fields))
            param._hint_cond = low
            param.hr_hint_cond = low if in_high_res_fix else None
            param.used_hint_cond = None
            param.used_hint_cond_latent = None
            param.used_hint_inpaint_hijack = None
            for name in _BACKUP_FIELDS:
                if name in fields:
                    setattr(param, name, None)
        yield
    finally:
        for param, fields in saved:
            for name, value in fields.items():
                setattr(param, name, value)
            for name in _BACKUP_FIELDS:  # made by AnimateDiff during our call: not left behind
                if name not in fields and hasattr(param, name):
                    delattr(param, name)


# --------------------------------------------------------------------------------------------------
# Kohya Hires.fix / Deep Shrink


def _is_scaler(module: Any) -> bool:
    return (
        type(module).__name__ == "Scaler"
        and isinstance(getattr(module, "block", None), torch.nn.Module)
        and hasattr(module, "scale")
    )


@contextlib.contextmanager
def without_deep_shrink(sd_model: Any) -> Iterator[None]:
    """The UNet without Kohya Hires.fix Scaler modules for the calls inside the block (restored after)."""
    unet = _unet(sd_model)
    swapped = []
    try:
        for name in ("input_blocks", "output_blocks"):
            blocks = getattr(unet, name, None)
            if not isinstance(blocks, torch.nn.ModuleList):
                continue
            for i, module in enumerate(blocks):
                if _is_scaler(module):
                    swapped.append((blocks, i, module))
                    blocks[i] = module.block
        yield
    finally:
        for blocks, i, module in swapped:
            blocks[i] = module


@contextlib.contextmanager
def low_res_call(
    p: Any,
    sd_model: Any,
    denoiser: Any,
    full_size: tuple[int, int],
    low_size: tuple[int, int],
    frames: FrameRows | None = None,
) -> Iterator[None]:
    """Around the low-resolution model calls of one step: refuse (UnsupportedInput, before any call) what
    cannot be guided; swap ControlNet hints to the low size (frames: an AnimateDiff call at fewer frames,
    per-frame hints averaged over merged frames) and take Deep Shrink out; restore on exit."""
    reason = refusal(p, sd_model, denoiser)
    if reason is not None:
        raise UnsupportedInput(reason)
    network = controlnet_network(p, sd_model)
    reason = _per_frame_embedding_refusal(network, frames)
    if reason is not None:
        raise UnsupportedInput(reason)
    with contextlib.ExitStack() as stack:
        if network is not None:
            in_hr = getattr(network, "is_in_high_res_fix", None)
            in_hr = bool(getattr(p, "is_hr_pass", False)) if not isinstance(in_hr, bool) else in_hr
            stack.enter_context(swap_controlnet_hints(network, full_size, low_size, in_hr, frames))
        stack.enter_context(without_deep_shrink(sd_model))
        yield
