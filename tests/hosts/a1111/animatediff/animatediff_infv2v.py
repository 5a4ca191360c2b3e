"""Stand-in for sd-webui-animatediff's scripts/animatediff_infv2v.py forward hook (see README.md)."""

from types import MethodType

import torch


def _mm():
    import sys

    return sys.modules["scripts.animatediff_mm"].mm_animatediff


def uniform(video_length, batch_size, overlap):
    """Context windows at step 0, stride 1, loop setting 'R-P'."""
    if video_length <= batch_size:
        yield list(range(batch_size))
        return
    for j in range(0, video_length - overlap, batch_size - overlap):
        yield [e % video_length for e in range(j, j + batch_size)]


def motion(out):
    """The motion module stand-in: rows regrouped into videos of ad_params.batch_size frames; each frame
    gets 0.3 x its group's mean and 0.05 x its position in the group added."""
    f = _mm().ad_params.batch_size
    if out.shape[0] % f:
        raise RuntimeError(f"rows {out.shape[0]} are not whole videos of {f} frames")
    v = out.reshape(out.shape[0] // f, f, *out.shape[1:])
    pos = torch.arange(f, dtype=out.dtype).reshape(1, f, *([1] * (out.ndim - 1)))
    return (v + 0.3 * v.mean(dim=1, keepdim=True) + 0.05 * pos).reshape(out.shape)


def find_cn_script(p):
    """scripts/external_code.py find_cn_script: the alwayson script titled "ControlNet", if any."""
    runner = getattr(p, "scripts", None)
    for script in getattr(runner, "alwayson_scripts", None) or []:
        if str(script.title()).lower() == "controlnet":
            return script
    return None


def mm_cn_select(cn_script, context):
    """:110-126: each ControlNet unit's per-frame hint (more rows than the window) sliced to the window's
    rows through the hint_cond setter (which clears used_hint_cond), the full tensor kept as a backup."""
    network = getattr(cn_script, "latest_network", None) if cn_script is not None else None
    for control in getattr(network, "control_params", None) or []:
        kind = control.control_model_type.name
        if kind == "IPAdapter":  # :119-123: the per-frame image embeddings, by the same indices
            model = control.control_model
            if model.image_emb.cond_emb.shape[0] > len(context):
                if getattr(model.image_emb, "cond_emb_backup", None) is None:
                    model.cond_emb_backup = model.image_emb.cond_emb
                model.image_emb = type(model.image_emb)(
                    model.cond_emb_backup[context], model.image_emb.uncond_emb
                )
            continue
        if kind == "Controlllite":
            continue
        if control.hint_cond.shape[0] > len(context):
            control.hint_cond_backup = control.hint_cond
            control.hint_cond = control.hint_cond[context]
        if control.hr_hint_cond is not None and control.hr_hint_cond.shape[0] > len(context):
            control.hr_hint_cond_backup = control.hr_hint_cond
            control.hr_hint_cond = control.hr_hint_cond[context]


def mm_cn_restore(cn_script, context):
    """:138-149: the window's hint written back into the backup, the backup made current again."""
    network = getattr(cn_script, "latest_network", None) if cn_script is not None else None
    for control in getattr(network, "control_params", None) or []:
        if control.control_model_type.name in ("IPAdapter", "Controlllite"):
            continue
        if getattr(control, "hint_cond_backup", None) is not None:
            control.hint_cond_backup[context] = control.hint_cond
            control.hint_cond = control.hint_cond_backup
        if control.hr_hint_cond is not None and getattr(control, "hr_hint_cond_backup", None) is not None:
            control.hr_hint_cond_backup[context] = control.hr_hint_cond
            control.hr_hint_cond = control.hr_hint_cond_backup


def mm_sd_forward(self, x_in, sigma_in, cond):
    from modules import shared

    ad_params = _mm().ad_params
    x_out = torch.zeros_like(x_in)
    for context in uniform(ad_params.video_length, ad_params.batch_size, ad_params.overlap):
        if getattr(shared.opts, "batch_cond_uncond", True):
            _context = context + [c + ad_params.video_length for c in context]
        else:
            _context = context
        mm_cn_select(self.cn_script, _context)
        out = self.original_forward(
            x_in[_context],
            sigma_in[_context],
            cond={k: ([v[0][_context]] if isinstance(v, list) else v[_context]) for k, v in cond.items()},
        )
        x_out = x_out.to(dtype=out.dtype)
        x_out[_context] = motion(out)
        mm_cn_restore(self.cn_script, _context)
    return x_out


def install(cfg_denoiser):
    """What AnimateDiff's on_cfg_denoiser does at step 0."""
    inner = cfg_denoiser.inner_model
    inner.cn_script = find_cn_script(getattr(cfg_denoiser, "p", None))  # :104-107, found at step 0
    inner.original_forward = inner.forward
    inner.forward = MethodType(mm_sd_forward, inner)
