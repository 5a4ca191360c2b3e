# Stand-in for comfy/model_base.py (ComfyUI v0.8.0): BaseModel(model_config, model_type) with .model_sampling,
# .model_config, .diffusion_model and apply_model(x, t, c_concat, c_crossattn, control, transformer_options,
# **kwargs) -> x0 (_apply_model: calculate_input -> diffusion model at timestep(sigma) -> calculate_denoised).
# Test code; `calls` records input shapes and `y_seen` the vectors the model got.
import torch


class BaseModel(torch.nn.Module):
    def __init__(self, diffusion_model, model_sampling, model_config):
        super().__init__()
        self.diffusion_model = diffusion_model
        self.model_sampling = model_sampling
        self.model_config = model_config
        self.calls = []
        self.y_seen = []

    def apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        self.calls.append(tuple(x.shape))
        if kwargs.get("y") is not None:
            self.y_seen.append(kwargs["y"].detach().clone())
        sigma = t
        xc = self.model_sampling.calculate_input(sigma, x)
        if c_concat is not None:
            xc = torch.cat([xc, c_concat], dim=1)
        timestep = self.model_sampling.timestep(t).float()
        out = self.diffusion_model(xc, timestep, context=c_crossattn, control=control, transformer_options=transformer_options, **kwargs).float()
        return self.model_sampling.calculate_denoised(sigma, out, x)

    def memory_required(self, input_shape, cond_shapes={}):
        return 0


class SDXL(BaseModel):
    pass
