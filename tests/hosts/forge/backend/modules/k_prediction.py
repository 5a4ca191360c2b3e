# Stand-in for lllyasviel/stable-diffusion-webui-forge backend/modules/k_prediction.py @ dfdcbab6:
# AbstractPrediction (prediction_type 'epsilon' | 'v_prediction' | 'const' | 'edm', calculate_input,
# calculate_denoised, noise_scaling), Prediction (SD1/SD2/SDXL discrete schedule: alphas_cumprod, sigmas,
# timestep = nearest index), PredictionFlux (flow, timestep = sigma). Formulas as upstream; test code.
import torch


class AbstractPrediction(torch.nn.Module):
    def __init__(self, sigma_data=1.0, prediction_type="epsilon"):
        super().__init__()
        self.sigma_data = sigma_data
        self.prediction_type = prediction_type
        assert prediction_type in ["epsilon", "const", "v_prediction", "edm"]

    def calculate_input(self, sigma, noise):
        if self.prediction_type == "const":
            return noise
        sigma = sigma.view(sigma.shape[:1] + (1,) * (noise.ndim - 1))
        return noise / (sigma**2 + self.sigma_data**2) ** 0.5

    def calculate_denoised(self, sigma, model_output, model_input):
        sigma = sigma.view(sigma.shape[:1] + (1,) * (model_output.ndim - 1))
        sd2 = self.sigma_data**2
        if self.prediction_type == "v_prediction":
            return model_input * sd2 / (sigma**2 + sd2) - model_output * sigma * self.sigma_data / (sigma**2 + sd2) ** 0.5
        if self.prediction_type == "edm":
            return model_input * sd2 / (sigma**2 + sd2) + model_output * sigma * self.sigma_data / (sigma**2 + sd2) ** 0.5
        return model_input - model_output * sigma  # epsilon and const (flow: velocity-like output)

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        if self.prediction_type == "const":
            return sigma * noise + (1.0 - sigma) * latent_image
        return latent_image + noise * sigma


class Prediction(AbstractPrediction):
    def __init__(self, sigma_data=1.0, prediction_type="epsilon", linear_start=0.00085, linear_end=0.012, timesteps=1000):
        super().__init__(sigma_data=sigma_data, prediction_type=prediction_type)
        betas = torch.linspace(linear_start**0.5, linear_end**0.5, timesteps, dtype=torch.float64) ** 2
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        self.register_buffer("alphas_cumprod", alphas_cumprod.float())
        self.register_buffer("sigmas", sigmas.float())
        self.register_buffer("log_sigmas", sigmas.log().float())

    @property
    def sigma_min(self):
        return self.sigmas[0]

    @property
    def sigma_max(self):
        return self.sigmas[-1]

    def timestep(self, sigma):
        # upstream: nearest table index in log sigma (argmin), no interpolation
        dists = sigma.log().to(self.log_sigmas.device) - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape).to(sigma.device)

    def sigma(self, timestep):
        t = torch.clamp(timestep.float(), min=0, max=len(self.sigmas) - 1)
        lo, hi, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[lo] + w * self.log_sigmas[hi]).exp()

    def percent_to_sigma(self, percent):
        # upstream 161-167: 0 -> a huge sigma, 1 -> 0, else sigma at (1 - percent) * 999
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return self.sigma(torch.tensor((1.0 - percent) * 999.0)).item()


class PredictionFlux(AbstractPrediction):
    def __init__(self, shift=1.15, pseudo_timestep_range=1000):
        super().__init__(sigma_data=1.0, prediction_type="const")
        t = torch.arange(1, pseudo_timestep_range + 1, 1) / pseudo_timestep_range
        self.register_buffer("sigmas", torch.exp(torch.tensor(shift)) / (torch.exp(torch.tensor(shift)) + (1 / t - 1)))

    @property
    def sigma_min(self):
        return self.sigmas[0]

    @property
    def sigma_max(self):
        return self.sigmas[-1]

    def timestep(self, sigma):
        return sigma

    def sigma(self, timestep):
        return timestep
