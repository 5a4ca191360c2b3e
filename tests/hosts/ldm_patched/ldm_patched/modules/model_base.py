# Stand-in for ldm_patched/modules/model_base.py (old Forge @ bfee03d8): BaseModel.apply_model(x, t, c_concat,
# c_crossattn, control, transformer_options, **kwargs) with the sampling object at .model_sampling; returns x0.
# Subclasses SDXL / Flux only name the family. Test code; `calls` records input shapes.
import torch


class BaseModel(torch.nn.Module):
    def __init__(self, diffusion_model, model_sampling):
        super().__init__()
        self.diffusion_model = diffusion_model
        self.model_sampling = model_sampling
        self.calls = []

    def apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        self.calls.append(tuple(x.shape))
        sigma = t
        xc = self.model_sampling.calculate_input(sigma, x)
        if c_concat is not None:
            xc = torch.cat([xc, c_concat], dim=1)
        timestep = self.model_sampling.timestep(t).float()
        out = self.diffusion_model(xc, timestep, context=c_crossattn, control=control, transformer_options=transformer_options, **kwargs).float()
        return self.model_sampling.calculate_denoised(sigma, out, x)

    def memory_required(self, input_shape):
        return input_shape[0] * input_shape[2] * input_shape[3] * 4 * 16384


class SDXL(BaseModel):
    pass


class Flux(BaseModel):
    pass
