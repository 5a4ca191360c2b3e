# Stand-in for comfy/conds.py (ComfyUI v0.8.0): CONDRegular / CONDCrossAttn with .cond, _copy_with,
# process_cond(batch_size, area), can_concat, concat. Test code.
import math


def repeat_to_batch_size(tensor, batch_size):
    if tensor.shape[0] >= batch_size:
        return tensor[:batch_size]
    return tensor.repeat([math.ceil(batch_size / tensor.shape[0])] + [1] * (tensor.ndim - 1))[:batch_size]


class CONDRegular:
    def __init__(self, cond):
        self.cond = cond

    def _copy_with(self, cond):
        return self.__class__(cond)

    def process_cond(self, batch_size, area=None, **kwargs):
        return self._copy_with(repeat_to_batch_size(self.cond, batch_size))

    def can_concat(self, other):
        return self.cond.shape == other.cond.shape

    def concat(self, others):
        import torch

        return torch.cat([self.cond] + [o.cond for o in others])


class CONDNoiseShape(CONDRegular):
    """Spatial conditions (c_concat): cropped to the area like the latent."""

    def process_cond(self, batch_size, area=None, **kwargs):
        data = self.cond
        if area is not None:
            dims = len(area) // 2
            for i in range(dims):
                data = data.narrow(i + 2, area[i + dims], area[i])
        return self._copy_with(repeat_to_batch_size(data, batch_size))


class CONDCrossAttn(CONDRegular):
    def concat(self, others):
        import torch

        conds = [self.cond] + [o.cond for o in others]
        length = 1
        for c in conds:
            length = length * c.shape[1] // math.gcd(length, c.shape[1])
        return torch.cat([c.repeat(1, length // c.shape[1], 1) for c in conds])
