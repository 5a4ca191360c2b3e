# Stand-in for Panchovix/stable-diffusion-webui-reForge
# extensions-builtin/reForge-APGIsYourCFG/APGIsYourCFG/nodes_APGImYourCFGNow.py @ 3b56b268: APG as a custom CFG
# function (model_options["sampler_cfg_function"]) that keeps state across calls: a momentum buffer of the
# guidance difference, reset when the width of `cond` differs from the buffer's (or at t == 999), and the
# adaptive momentum from t = model_sampling.timestep(sigma). Test code, simplified (no guidance limiter, no
# printing); the state and reset rules are upstream's.
import torch


class MomentumBuffer:
    def __init__(self, momentum):
        self.momentum = momentum
        self.running_average = 0

    def update(self, value):
        self.running_average = value + self.momentum * self.running_average


def _project(v0, v1):
    v1 = torch.nn.functional.normalize(v1, dim=[-1, -2, -3])
    parallel = (v0 * v1).sum(dim=[-1, -2, -3], keepdim=True) * v1
    return parallel, v0 - parallel


def normalized_guidance(pred_cond, pred_uncond, scale, buffer, eta=1.0, norm_threshold=0.0):
    diff = pred_cond - pred_uncond
    buffer.update(diff)
    diff = buffer.running_average
    if norm_threshold > 0:
        norm = diff.norm(p=2, dim=[-1, -2, -3], keepdim=True)
        diff = diff * torch.minimum(torch.ones_like(norm), norm_threshold / norm)
    parallel, orthogonal = _project(diff, pred_cond)
    return pred_cond + (scale - 1) * (orthogonal + eta * parallel)


class APG_ImYourCFGNow:
    def patch(self, model, momentum=0.5, adaptive_momentum=0.18, norm_threshold=15.0, eta=1.0):
        extras = [MomentumBuffer(momentum), momentum, adaptive_momentum]
        self.extras = extras  # for the tests: the state the host keeps

        def apg_function(args):
            cond, uncond, sigma, cond_scale = args["cond"], args["uncond"], args["sigma"], args["cond_scale"]
            t = args["model"].model_sampling.timestep(sigma)[0].item()
            buffer = extras[0]
            if (torch.is_tensor(buffer.running_average) and cond.shape[3] != buffer.running_average.shape[3]) or t == 999:
                extras[0] = buffer = MomentumBuffer(extras[1])
            else:
                scale = extras[1] - extras[1] * (extras[2] ** 4) * (1000 - t)
                buffer.momentum = max(scale, 0)
            return normalized_guidance(cond, uncond, cond_scale, buffer, eta, norm_threshold)

        m = model.clone()
        m.set_model_sampler_cfg_function(apg_function)
        return (m,)
