# Stand-in for ldm_patched/modules/model_sampling.py (old Forge @ bfee03d8; CONST and ModelSamplingFlux as in
# reForge @ 3b56b268): EPS / V_PREDICTION / CONST mixins (calculate_input, calculate_denoised) and the
# sampling objects (sigmas table, timestep(sigma), sigma(t)). No alphas_cumprod buffer (upstream comments it
# out). Test code.
import torch


class EPS:
    def calculate_input(self, sigma, noise):
        sigma = sigma.view(sigma.shape[:1] + (1,) * (noise.ndim - 1))
        return noise / (sigma**2 + self.sigma_data**2) ** 0.5

    def calculate_denoised(self, sigma, model_output, model_input):
        sigma = sigma.view(sigma.shape[:1] + (1,) * (model_output.ndim - 1))
        return model_input - model_output * sigma


class V_PREDICTION(EPS):
    def calculate_denoised(self, sigma, model_output, model_input):
        sigma = sigma.view(sigma.shape[:1] + (1,) * (model_output.ndim - 1))
        sd2 = self.sigma_data**2
        return model_input * sd2 / (sigma**2 + sd2) - model_output * sigma * self.sigma_data / (sigma**2 + sd2) ** 0.5


class CONST:
    def calculate_input(self, sigma, noise):
        return noise

    def calculate_denoised(self, sigma, model_output, model_input):
        sigma = sigma.view(sigma.shape[:1] + (1,) * (model_output.ndim - 1))
        return model_input - model_output * sigma


class ModelSamplingDiscrete(torch.nn.Module):
    def __init__(self, model_config=None, linear_start=0.00085, linear_end=0.012, timesteps=1000):
        super().__init__()
        betas = torch.linspace(linear_start**0.5, linear_end**0.5, timesteps, dtype=torch.float64) ** 2
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0).float()
        self.sigma_data = 1.0
        self.set_sigmas(((1 - alphas_cumprod) / alphas_cumprod) ** 0.5)

    def set_sigmas(self, sigmas):
        self.register_buffer("sigmas", sigmas)
        self.register_buffer("log_sigmas", sigmas.log())

    @property
    def sigma_min(self):
        return self.sigmas[0]

    @property
    def sigma_max(self):
        return self.sigmas[-1]

    def timestep(self, sigma):
        dists = sigma.log().to(self.log_sigmas.device) - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape).to(sigma.device)


class ModelSamplingFlux(torch.nn.Module):
    def __init__(self, model_config=None, shift=1.15, timesteps=1000):
        super().__init__()
        self.sigma_data = 1.0
        t = torch.arange(1, timesteps + 1, 1) / timesteps
        self.register_buffer("sigmas", torch.exp(torch.tensor(shift)) / (torch.exp(torch.tensor(shift)) + (1 / t - 1)))

    def timestep(self, sigma):
        return sigma

    def sigma(self, timestep):
        return timestep
