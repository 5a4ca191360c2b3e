# Stand-in for lllyasviel/stable-diffusion-webui-forge backend/patcher/controlnet.py @ dfdcbab6 (ControlBase,
# ControlNet): set_cond_hint(image, strength, (start, end)); pre_run stores the window in sigmas
# (percent_to_timestep_function = predictor.percent_to_sigma, sampling_function.py:394); get_control runs the
# previous ControlNet first, skips itself when t[0] > timestep_range[0] or t[0] < timestep_range[1]
# (302-307), resizes the hint to 8 * the latent whenever the latent size changes (314-320, nearest-exact)
# and returns the merged residuals. Test code: the "control model" is one fixed convolution of the hint
# pooled by 8; `seen` records (latent size, hint size, sigma) of every call that applied control.
import torch
import torch.nn.functional as F


class ControlBase:
    def __init__(self):
        self.cond_hint_original = None
        self.cond_hint = None
        self.strength = 1.0
        self.timestep_percent_range = (0.0, 1.0)
        self.timestep_range = None
        self.transformer_options = {}
        self.previous_controlnet = None

    def set_cond_hint(self, cond_hint, strength=1.0, timestep_percent_range=(0.0, 1.0)):
        self.cond_hint_original = cond_hint
        self.strength = strength
        self.timestep_percent_range = timestep_percent_range
        return self

    def pre_run(self, model, percent_to_timestep_function):
        self.timestep_range = (percent_to_timestep_function(self.timestep_percent_range[0]),
                               percent_to_timestep_function(self.timestep_percent_range[1]))
        if self.previous_controlnet is not None:
            self.previous_controlnet.pre_run(model, percent_to_timestep_function)

    def set_previous_controlnet(self, controlnet):
        self.previous_controlnet = controlnet
        return self


class ControlNet(ControlBase):
    def __init__(self, channels=8, seed=5):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(channels, 3, 1, 1, generator=g) / 3 ** 0.5
        self.seen = []

    def get_control(self, x_noisy, t, cond, batched_number):
        control_prev = None
        if self.previous_controlnet is not None:
            control_prev = self.previous_controlnet.get_control(x_noisy, t, cond, batched_number)
        if self.timestep_range is not None:
            if t[0] > self.timestep_range[0] or t[0] < self.timestep_range[1]:
                return control_prev
        if self.cond_hint is None or x_noisy.shape[2] * 8 != self.cond_hint.shape[2] or x_noisy.shape[3] * 8 != self.cond_hint.shape[3]:
            self.cond_hint = F.interpolate(self.cond_hint_original, size=(x_noisy.shape[2] * 8, x_noisy.shape[3] * 8), mode="nearest-exact")
        self.seen.append((tuple(x_noisy.shape[-2:]), tuple(self.cond_hint.shape[-2:]), float(t[0])))
        out = F.conv2d(F.avg_pool2d(self.cond_hint, 8), self.weight).expand(x_noisy.shape[0], -1, -1, -1) * self.strength
        if control_prev is not None:
            out = out + control_prev["output"][0]
        return {"input": [], "middle": [], "output": [out]}
