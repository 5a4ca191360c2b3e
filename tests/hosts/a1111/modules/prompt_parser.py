"""Stand-in for modules/prompt_parser.py (v1.10.1): AND-composable prompts and batch reconstruction.

Kept: "AND" splitting with ":weight", MulticondLearnedConditioning(shape, batch), reconstruct_multicond_batch
returning (conds_list, tensor) with conds_list[i] = [(row index in tensor, weight), ...] and rows padded to
the longest token count by repeating the last token vector, dict conds (SDXL) stacked per key,
reconstruct_cond_batch for the negative prompt. Left out: prompt editing schedules ([from:to:when]).
"""
import re
from collections import namedtuple

import torch

ComposableScheduledPromptConditioning = namedtuple("ComposableScheduledPromptConditioning", ["cond", "weight"])
MulticondLearnedConditioning = namedtuple("MulticondLearnedConditioning", ["shape", "batch"])

re_AND = re.compile(r"\bAND\b")
re_weight = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")


class SdConditioning(list):
    """A list of prompts that also carries the generation's size and whether it is the negative prompt
    (A1111 passes it to get_learned_conditioning; SDXL embeds the size)."""

    def __init__(self, prompts, is_negative_prompt=False, width=None, height=None, copy_from=None):
        super().__init__(prompts)
        source = prompts if copy_from is None else copy_from
        self.is_negative_prompt = is_negative_prompt or getattr(source, "is_negative_prompt", False)
        self.width = width or getattr(source, "width", None)
        self.height = height or getattr(source, "height", None)


def get_multicond_prompt_list(prompts):
    res_indexes = []
    prompt_flat_list = []
    for prompt in prompts:
        indexes = []
        for subprompt in re_AND.split(prompt):
            match = re_weight.search(subprompt)
            text, weight = match.groups() if match is not None else (subprompt, 1.0)
            weight = float(weight) if weight is not None else 1.0
            indexes.append((len(prompt_flat_list), weight))
            prompt_flat_list.append(text.strip())
        res_indexes.append(indexes)
    return res_indexes, prompt_flat_list


def get_multicond_learned_conditioning(model, prompts, steps, hires_steps=None, use_old_scheduling=False):
    res_indexes, prompt_flat_list = get_multicond_prompt_list(prompts)
    learned = [model.get_learned_conditioning(SdConditioning([text], copy_from=prompts)) for text in prompt_flat_list]
    res = []
    for indexes in res_indexes:
        res.append([ComposableScheduledPromptConditioning(_row(learned[i]), weight) for i, weight in indexes])
    return MulticondLearnedConditioning(shape=(len(prompts),), batch=res)


def get_learned_conditioning(model, prompts, steps, hires_steps=None, use_old_scheduling=False):
    return [_row(model.get_learned_conditioning(SdConditioning([text], copy_from=prompts))) for text in prompts]


def _row(c):
    if isinstance(c, dict):
        return {k: v[0] for k, v in c.items()}
    return c[0]


def _stack(tensors):
    if isinstance(tensors[0], dict):
        keys = tensors[0].keys()
        return {k: _stack([t[k] for t in tensors]) for k in keys}
    if tensors[0].ndim == 1:
        return torch.stack(tensors)
    token_count = max(t.shape[0] for t in tensors)
    padded = []
    for t in tensors:
        if t.shape[0] != token_count:
            t = torch.vstack([t, t[-1:].repeat([token_count - t.shape[0], 1])])
        padded.append(t)
    return torch.stack(padded)


def reconstruct_cond_batch(c, current_step):
    return _stack(list(c))


def reconstruct_multicond_batch(c, current_step):
    tensors = []
    conds_list = []
    for composable_prompts in c.batch:
        conds_for_batch = []
        for composable_prompt in composable_prompts:
            conds_for_batch.append((len(tensors), composable_prompt.weight))
            tensors.append(composable_prompt.cond)
        conds_list.append(conds_for_batch)
    return conds_list, _stack(tensors)
