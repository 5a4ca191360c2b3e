# Stand-in for ldm_patched/modules/conds.py (old Forge @ bfee03d8, reForge @ 3b56b268): CONDRegular /
# CONDCrossAttn with .cond, _copy_with, process_cond, can_concat, concat. Test code.
import math

import torch


def repeat_to_batch_size(tensor, batch_size):
    if tensor.shape[0] >= batch_size:
        return tensor[:batch_size]
    return tensor.repeat([math.ceil(batch_size / tensor.shape[0])] + [1] * (tensor.ndim - 1))[:batch_size]


class CONDRegular:
    def __init__(self, cond):
        self.cond = cond

    def _copy_with(self, cond):
        return self.__class__(cond)

    def process_cond(self, batch_size, device, **kwargs):
        return self._copy_with(repeat_to_batch_size(self.cond, batch_size).to(device))

    def can_concat(self, other):
        return self.cond.shape == other.cond.shape

    def concat(self, others):
        return torch.cat([self.cond] + [o.cond for o in others])


class CONDCrossAttn(CONDRegular):
    def concat(self, others):
        conds = [self.cond] + [o.cond for o in others]
        length = 1
        for c in conds:
            length = length * c.shape[1] // math.gcd(length, c.shape[1])
        return torch.cat([c.repeat(1, length // c.shape[1], 1) for c in conds])
