# Stand-in for lllyasviel/stable-diffusion-webui-forge backend/modules/k_model.py @ dfdcbab6 (KModel):
# apply_model(x, t=sigma, c_concat, c_crossattn, control, transformer_options, **kwargs) scales the input with
# the predictor, concatenates c_concat on channels, maps sigma to the model timestep and returns the x0
# (denoised) prediction. Test code; `calls` records the input shape of every call for the tests.
import torch


class KModel(torch.nn.Module):
    def __init__(self, model, diffusers_scheduler=None, k_predictor=None, config=None):
        super().__init__()
        self.config = config
        self.diffusion_model = model
        self.predictor = k_predictor
        self.computation_dtype = torch.float32
        self.calls = []

    def apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        self.calls.append(tuple(x.shape))
        sigma = t
        xc = self.predictor.calculate_input(sigma, x)
        if c_concat is not None:
            xc = torch.cat([xc, c_concat], dim=1)
        timestep = self.predictor.timestep(t).float()
        out = self.diffusion_model(xc, timestep, context=c_crossattn, control=control, transformer_options=transformer_options, **kwargs).float()
        return self.predictor.calculate_denoised(sigma, out, x)

    def memory_required(self, input_shape):
        return input_shape[0] * input_shape[2] * input_shape[3] * 4 * 16384
