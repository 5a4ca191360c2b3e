# Stand-in for lllyasviel/stable-diffusion-webui-forge backend/sampling/condition.py @ dfdcbab6:
# Condition objects (.cond tensor, _copy_with, process_cond repeating to the batch size, concat) and the
# compiled condition dicts {"cross_attn", "pooled_output", "model_conds": {...}, "strength"}. Test code.
import math

import torch


def repeat_to_batch_size(tensor, batch_size):
    if tensor.shape[0] > batch_size:
        return tensor[:batch_size]
    if tensor.shape[0] < batch_size:
        reps = math.ceil(batch_size / tensor.shape[0])
        return tensor.repeat([reps] + [1] * (tensor.ndim - 1))[:batch_size]
    return tensor


class Condition:
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


class ConditionCrossAttn(Condition):
    def can_concat(self, other):
        return self.cond.shape[0] == other.cond.shape[0] and self.cond.shape[2] == other.cond.shape[2]

    def concat(self, others):
        conds = [self.cond] + [o.cond for o in others]
        length = 1
        for c in conds:
            length = length * c.shape[1] // math.gcd(length, c.shape[1])
        return torch.cat([c.repeat(1, length // c.shape[1], 1) for c in conds])


def compile_conditions(cond):
    if cond is None:
        return None
    if isinstance(cond, torch.Tensor):
        return [dict(cross_attn=cond, model_conds=dict(c_crossattn=ConditionCrossAttn(cond)))]
    result = dict(
        cross_attn=cond["crossattn"],
        pooled_output=cond["vector"],
        model_conds=dict(c_crossattn=ConditionCrossAttn(cond["crossattn"]), y=Condition(cond["vector"])),
    )
    if "guidance" in cond:
        result["model_conds"]["guidance"] = Condition(cond["guidance"])
    return [result]


def compile_weighted_conditions(cond, weights):
    # weights: A1111's cond composition, one list of (row index, weight) per image; upstream transposes it
    # so that entry j holds the j-th sub-prompt of every image, with that sub-prompt's weight as 'strength'
    results = []
    for cond_pre in map(list, zip(*weights)):
        indices = [i for i, _ in cond_pre]
        weight = cond_pre[-1][1]
        feed = {k: v[indices] for k, v in cond.items()} if isinstance(cond, dict) else cond[indices]
        entry = compile_conditions(feed)[0]
        entry["strength"] = weight
        results.append(entry)
    return results
