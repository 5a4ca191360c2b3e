"""webui.conditioning (which full size the host embedded, the stateless CFG list) and core.v_prediction."""

from types import SimpleNamespace

import torch

from lib_upsample_guidance.core.conventions import DiscreteSigmaTable
from lib_upsample_guidance.core.size_conditioning import size_embedding
from lib_upsample_guidance.core.v_prediction import eps_at_fractional_t
from lib_upsample_guidance.webui.conditioning import (
    full_size_candidates,
    is_stateless_cfg_function,
    lower_size_vector,
)
from lib_upsample_guidance.webui.generation import GuardState


def _vector(h, w, rows=2):
    pooled = torch.randn(rows, 1280, generator=torch.Generator().manual_seed(0))
    sizes = size_embedding([h, w, 0, 0, h, w]).expand(rows, -1)
    return torch.cat([pooled, sizes], dim=1)


def test_full_size_candidates_first_pass_hires_and_odd_sizes():
    p = SimpleNamespace(width=1020, height=764, is_hr_pass=False)
    assert full_size_candidates(p, (95, 127), 8) == [(760, 1016), (764, 1020)]
    hr = SimpleNamespace(width=512, height=512, is_hr_pass=True, hr_upscale_to_x=1030, hr_upscale_to_y=1030)
    assert full_size_candidates(hr, (128, 128), 8) == [(1024, 1024), (1030, 1030), (512, 512)]
    assert full_size_candidates(None, (16, 16), 8) == [(128, 128)]


def test_lower_size_vector_uses_the_processing_size_when_not_a_multiple_of_8():
    """A 1020x764 generation: latent 127x95, the host embedded 764 x 1020 (not 8 x latent)."""
    vec = _vector(764, 1020)
    p = SimpleNamespace(width=1020, height=764)
    low = lower_size_vector(
        vec, full_sizes=full_size_candidates(p, (95, 127), 8), low_size_px=(504, 680), state=None
    )
    torch.testing.assert_close(low, _vector(504, 680), rtol=0, atol=1e-6)


def test_lower_size_vector_non_sdxl_untouched_and_mismatch_warns_once(capsys):
    state = GuardState()
    other = torch.randn(2, 768)
    assert lower_size_vector(other, full_sizes=[(128, 128)], low_size_px=(64, 64), state=state) is other
    vec = _vector(96, 96)
    for _ in range(3):
        assert lower_size_vector(vec, full_sizes=[(128, 128)], low_size_px=(64, 64), state=state) is vec
    assert capsys.readouterr().out.count("does not embed the generation size (128x128 px)") == 1
    assert state.warnings == 1 and not state.off


class RescaleCFG:  # module level like the real nodes: __qualname__ "RescaleCFG.patch.<locals>.rescale_cfg"
    def patch(self):
        def rescale_cfg(args):
            return args

        return rescale_cfg


class APG_ImYourCFGNow:
    def patch(self):
        def apg_function(args):
            return args

        return apg_function


def test_stateless_cfg_functions_by_qualname():
    assert is_stateless_cfg_function(RescaleCFG().patch())
    assert not is_stateless_cfg_function(APG_ImYourCFGNow().patch())
    assert not is_stateless_cfg_function(lambda args: args)


def test_eps_at_fractional_t_undoes_the_hosts_truncation():
    """A v model's eps at fractional tau from the eps the host converted at int(tau) (float64 reference)."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    ac = torch.cumprod(1 - betas, 0)
    table = DiscreteSigmaTable(ac)
    x, v = torch.randn(2, 4, 3, 3, dtype=torch.float64), torch.randn(2, 4, 3, 3, dtype=torch.float64)
    tau = torch.tensor([600.37, 12.9], dtype=torch.float64)
    ai = ac[tau.long()].reshape(-1, 1, 1, 1)
    eps_host = ai.sqrt() * v + (1 - ai).sqrt() * x
    # abar(tau) from log-sigma interpolation between the neighbours
    ls = 0.5 * torch.log((1 - ac) / ac)
    lo, frac = tau.floor().long(), tau - tau.floor()
    sigma = torch.exp((1 - frac) * ls[lo] + frac * ls[lo + 1])
    a = (1 / (1 + sigma**2)).reshape(-1, 1, 1, 1)
    want = a.sqrt() * v + (1 - a).sqrt() * x
    got = eps_at_fractional_t(eps_host, x, tau, ac, table)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert (eps_host - want).abs().max() > 1e-4
    # at an integer t it changes nothing
    t = torch.tensor([500.0, 20.0], dtype=torch.float64)
    a_t = ac[t.long()].reshape(-1, 1, 1, 1)
    e = a_t.sqrt() * v + (1 - a_t).sqrt() * x
    torch.testing.assert_close(eps_at_fractional_t(e, x, t, ac, table), e, rtol=1e-12, atol=1e-12)
