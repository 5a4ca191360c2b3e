"""Stand-in for modules/shared.py + shared_options/shared_state (v1.10.1): opts, state, sd_model.

Only the options the CFG denoiser and the extension read are declared (defaults as in shared_options.py).
"""
from modules import options
from modules.options import OptionInfo, options_section  # noqa: F401  (re-exported like the real module)


class State:
    interrupted = False
    skipped = False
    stopping_generation = False
    sampling_step = 0
    sampling_steps = 0
    job_count = 0


opts = options.Options({
    "batch_cond_uncond": OptionInfo(True, "Batch cond/uncond"),
    "skip_early_cond": OptionInfo(0.0, "Ignore negative prompt during early sampling"),
    "s_min_uncond_all": OptionInfo(False, "NGMS: Skip every step"),
    "pad_cond_uncond": OptionInfo(False, "Pad prompt/negative prompt"),
    "pad_cond_uncond_v0": OptionInfo(False, "Pad prompt/negative prompt (v0)"),
    "enable_quantization": OptionInfo(False, "Enable quantization"),
    "live_preview_content": OptionInfo("Prompt", "Live preview subject"),
    "img2img_fix_steps": OptionInfo(False, "img2img fix steps"),
    "eta_ddim": OptionInfo(0.0, "Eta for DDIM"),
    "s_min_uncond": OptionInfo(0.0, "NGMS"),
})
state = State()
sd_model = None
cmd_opts = None
