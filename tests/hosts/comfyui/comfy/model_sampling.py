# Stand-in for comfy/model_sampling.py (ComfyUI v0.8.0): EPS / V_PREDICTION / CONST mixins (calculate_input,
# calculate_denoised, noise_scaling), ModelSamplingDiscrete (sigma table from the linear beta schedule; the
# alphas_cumprod buffer is commented out upstream), ModelSamplingDiscreteFlow (shift 3 like SD3). Test code.
import torch


def reshape_sigma(sigma, noise_dim):
    if sigma.nelement() == 1:
        return sigma.view(())
    return sigma.view(sigma.shape[:1] + (1,) * (noise_dim - 1))


class EPS:
    def calculate_input(self, sigma, noise):
        sigma = reshape_sigma(sigma, noise.ndim)
        return noise / (sigma**2 + self.sigma_data**2) ** 0.5

    def calculate_denoised(self, sigma, model_output, model_input):
        sigma = reshape_sigma(sigma, model_output.ndim)
        return model_input - model_output * sigma

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        return noise * reshape_sigma(sigma, noise.ndim) + latent_image


class V_PREDICTION(EPS):
    def calculate_denoised(self, sigma, model_output, model_input):
        sigma = reshape_sigma(sigma, model_output.ndim)
        sd2 = self.sigma_data**2
        return model_input * sd2 / (sigma**2 + sd2) - model_output * sigma * self.sigma_data / (sigma**2 + sd2) ** 0.5


class CONST:
    def calculate_input(self, sigma, noise):
        return noise

    def calculate_denoised(self, sigma, model_output, model_input):
        sigma = reshape_sigma(sigma, model_output.ndim)
        return model_input - model_output * sigma

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        sigma = reshape_sigma(sigma, noise.ndim)
        return sigma * noise + (1.0 - sigma) * latent_image


class COSMOS_RFLOW:
    pass


class ModelSamplingDiscrete(torch.nn.Module):
    def __init__(self, model_config=None, linear_start=0.00085, linear_end=0.012, timesteps=1000):
        super().__init__()
        betas = torch.linspace(linear_start**0.5, linear_end**0.5, timesteps, dtype=torch.float64) ** 2
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.sigma_data = 1.0
        self.set_sigmas(((1 - alphas_cumprod) / alphas_cumprod) ** 0.5)

    def set_sigmas(self, sigmas):
        self.register_buffer("sigmas", sigmas.float())
        self.register_buffer("log_sigmas", sigmas.log().float())

    @property
    def sigma_min(self):
        return self.sigmas[0]

    @property
    def sigma_max(self):
        return self.sigmas[-1]

    def timestep(self, sigma):
        dists = sigma.log().to(self.log_sigmas.device) - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape).to(sigma.device)


def time_snr_shift(alpha, t):
    if alpha == 1.0:
        return t
    return alpha * t / (1 + (alpha - 1) * t)


class ModelSamplingDiscreteFlow(torch.nn.Module):
    def __init__(self, model_config=None, shift=3.0, multiplier=1000, timesteps=1000):
        super().__init__()
        self.sigma_data = 1.0
        self.shift, self.multiplier = shift, multiplier
        self.register_buffer("sigmas", self.sigma(torch.arange(1, timesteps + 1, 1) / timesteps * multiplier))

    def timestep(self, sigma):
        return sigma * self.multiplier

    def sigma(self, timestep):
        return time_snr_shift(self.shift, timestep / self.multiplier)


def model_sampling(kind):
    """comfy.model_base.model_sampling (79): `class ModelSampling(s, c)` for a model type."""
    s, c = {
        "eps": (ModelSamplingDiscrete, EPS),
        "v": (ModelSamplingDiscrete, V_PREDICTION),
        "flow": (ModelSamplingDiscreteFlow, CONST),
        "cosmos": (ModelSamplingDiscrete, COSMOS_RFLOW),
    }[kind]

    class ModelSampling(s, c):
        pass

    return ModelSampling()
