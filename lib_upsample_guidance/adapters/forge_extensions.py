"""The Forge-family adapter's low-resolution call beside other patches (a private helper of adapters/forge.py).

Forge main, old Forge and reForge keep everything other extensions add to the UNet on the patcher we clone
(`model_options`) or on the conditions (`cond['control']`); read from their source (commits in the README's
compatibility table):

* ControlNet / T2I-Adapter / ControlLoRA (`backend/patcher/controlnet.py`, ldm_patched `controlnet.py`):
  each ControlBase resizes its hint to the latent it is called with, but skips itself when
  `t[0] > timestep_range[0] or t[0] < timestep_range[1]`, a window stored in sigmas (`pre_run`:
  `percent_to_sigma(start/end)`). Tested against the low-res call's smaller noise level the window would
  close early (control dropped from the low-res call near the end of the window) or open late. For the
  low-res call each ControlBase in the chain (`previous_controlnet`) gets the decision of the full call's
  step: window None (on) or an empty window (off); restored afterwards.
* Kohya HRFix / Deep Shrink (`kohya_hrfix.py` / `external_model_downscale.py`, class
  PatchModelAddDownscale): input/output block patches that shrink the feature maps of the full-size call.
  The low-res query is already at the base size: the low-res call's model_options go without them.
  FreeU (output block patches) and every other patch stay.
* Self-Attention Guidance (`forge_sag.py` / `external_sag.py`, SelfAttentionGuidance): its attention
  recorder (attn1 replace in the middle block) keeps the last uncond attention map for its post-CFG
  function: left out of the low-res call so the map stays the full call's.
* Post-CFG functions (SAG, PAG, ControlNet inpaint_only): ours is moved to the front of the list, so our
  term is computed on the plain CFG result and theirs are applied on top, each at the full size
  (inpaint_only's blend keeps the unmasked area exact).
* Reference-only (`forge_reference.py`, PreprocessorReference): records the reference in the full call and
  reads it in every attention; its start/end test uses the noise level of the call: guided when its window
  is the whole schedule (the low-res call reads the reference recorded at the full size), refused otherwise.

Nothing here imports a host module.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch

__all__ = [
    "low_res_model_options",
    "full_step_control_window",
    "control_chain",
    "run_first",
    "refusal",
    "refusal_for",
    "low_res_call",
    "qualname",
]

# qualified-name fragments of patch functions left out of the low-res call
_RESCALING_PATCHES = ("PatchModelAddDownscale.",)  # Kohya HRFix / Deep Shrink
_RECORDERS = ("SelfAttentionGuidance.patch.<locals>.attn_and_record",)  # SAG's uncond attention recorder
_REFERENCE = "PreprocessorReference."


def qualname(fn: Any) -> str:
    """The qualified name of a patch function (bound methods: their function's)."""
    func = getattr(fn, "__func__", fn)
    return str(getattr(func, "__qualname__", "") or type(fn).__qualname__)


def _left_out(fn: Any) -> bool:
    name = qualname(fn)
    return any(part in name for part in _RESCALING_PATCHES + _RECORDERS)


def low_res_model_options(model_options: dict) -> dict:
    """model_options for the low-res call: a copy without Deep Shrink's block patches and SAG's attention
    recorder (the same dict when there is nothing to leave out). The host's dict is never changed."""
    to = model_options.get("transformer_options") or {}
    patches = to.get("patches") or {}
    replace = to.get("patches_replace") or {}
    kept_patches = {name: [f for f in fns if not _left_out(f)] for name, fns in patches.items()}
    kept_replace = {name: {k: f for k, f in d.items() if not _left_out(f)} for name, d in replace.items()}
    changed = any(len(kept_patches[n]) != len(patches[n]) for n in patches) or any(
        len(kept_replace[n]) != len(replace[n]) for n in replace
    )
    if not changed:
        return model_options
    new_to = dict(to)
    if patches:
        new_to["patches"] = kept_patches
    if replace:
        new_to["patches_replace"] = kept_replace
    out = dict(model_options)
    out["transformer_options"] = new_to
    return out


def control_chain(conds: list | None) -> list:
    """Every ControlBase reachable from the conditions' 'control' entries (through previous_controlnet),
    each once."""
    seen: dict[int, Any] = {}
    for cond in conds or []:
        node = cond.get("control") if isinstance(cond, dict) else None
        while node is not None and id(node) not in seen:
            seen[id(node)] = node
            node = getattr(node, "previous_controlnet", None)
    return list(seen.values())


_CLOSED = (-math.inf, math.inf)  # t > -inf always: the ControlBase skips itself


@contextlib.contextmanager
def full_step_control_window(conds: list, sigma: torch.Tensor | float) -> Iterator[None]:
    """Inside the block each ControlNet is on or off as in the full call at noise level `sigma` (the first
    row's, as the host tests t[0]), whatever the noise level of the low-res call."""
    s = float(torch.as_tensor(sigma).reshape(-1)[0])
    saved = [(net, net.timestep_range) for net in control_chain(conds) if hasattr(net, "timestep_range")]
    try:
        for net, window in saved:
            if window is None:
                continue
            active = not (s > float(window[0]) or s < float(window[1]))
            net.timestep_range = None if active else _CLOSED
        yield
    finally:
        for net, window in saved:
            net.timestep_range = window


@contextlib.contextmanager
def low_res_call(args: dict, conds: list, sigma: torch.Tensor) -> Iterator[dict]:
    """Around the low-res call of one step (GuidanceContext.low_res_call): ControlNet windows as in the full
    call at `sigma`; yields the call's model_options without Deep Shrink and SAG's recorder."""
    with full_step_control_window(conds, sigma):
        yield low_res_model_options(args["model_options"])


def refusal_for(p: Any) -> Callable[[dict], str | None]:
    """GuidanceContext.refusal for one generation: patches on the model (refusal) or scripts of `p`
    (webui.peers) that the low-res call cannot be guided beside."""
    from ..comfy_family.postcfg import model_sampling_of
    from ..webui import peers
    from .forge_animatediff import has_animatediff

    def check(args: dict) -> str | None:
        sigma_max = getattr(model_sampling_of(args["model"]), "sigma_max", None)
        # sd-forge-animatediff on the model: its video goes through forge_animatediff (guided or refused there)
        guided = has_animatediff(args["model_options"])
        return refusal(args["model_options"], sigma_max) or peers.refusal_by_scripts(
            p, animatediff_guided=guided
        )

    return check


def run_first(model_options: dict, fn: Callable) -> None:
    """Move our post-CFG function to the front of model_options["sampler_post_cfg_function"] (in place on
    the clone's own list; see module docstring)."""
    fns = model_options.get("sampler_post_cfg_function")
    if not fns or fns[0] is fn or fn not in fns:
        return
    model_options["sampler_post_cfg_function"] = [fn] + [f for f in fns if f is not fn]


def _closure_value(fn: Any, name: str) -> Any:
    code, cells = getattr(fn, "__code__", None), getattr(fn, "__closure__", None)
    if code is None or not cells or name not in code.co_freevars:
        return None
    try:
        return cells[code.co_freevars.index(name)].cell_contents
    except ValueError:  # empty cell
        return None


def _reference_patches(model_options: dict) -> list:
    replace = (model_options.get("transformer_options") or {}).get("patches_replace") or {}
    found = {}
    for d in replace.values():
        for f in d.values():
            if _REFERENCE in qualname(f):
                found[id(f)] = f
    return list(found.values())


def refusal(model_options: dict, sigma_max: float | None = None) -> str | None:
    """Why the low-res call cannot be guided beside a patch on this model, or None.

    Reference-only whose window is not the whole schedule (its closure's sigma_min > 0 or sigma_max below
    the schedule's largest sigma `sigma_max`): its start/end test would see the low-res noise level.
    """
    for fn in _reference_patches(model_options):
        lo, hi = _closure_value(fn, "sigma_min"), _closure_value(fn, "sigma_max")
        if lo is None or hi is None:
            return "ControlNet reference (Forge): its start/end window could not be read"
        top = float(sigma_max) if sigma_max is not None else math.inf
        if float(lo) > 0.0 or float(hi) < top:
            return (
                "ControlNet reference (Forge) with a start/end window: it tests the window against the "
                "low-resolution call's noise level"
            )
    return None
