"""Stand-in for modules/sd_samplers.py (v1.10.1): create_sampler(name, model) sets sampler.config."""
from modules import sd_samplers_kdiffusion, sd_samplers_lcm, sd_samplers_timesteps

all_samplers = [
    *sd_samplers_kdiffusion.samplers_data_k_diffusion,
    *sd_samplers_timesteps.samplers_data_timesteps,
    *sd_samplers_lcm.samplers_data_lcm,
]
all_samplers_map = {x.name: x for x in all_samplers}


def create_sampler(name, model):
    config = all_samplers_map.get(name)
    if config is None:
        raise ValueError(f"bad sampler name: {name}")
    sampler = config.constructor(model)
    sampler.config = config
    return sampler
