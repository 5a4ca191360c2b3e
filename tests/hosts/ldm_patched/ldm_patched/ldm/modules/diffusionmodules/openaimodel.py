# Stand-in for ldm_patched/ldm/modules/diffusionmodules/openaimodel.py:
#  * old Forge @ bfee03d8: forward_timestep_embed (39-66) calls every transformer_options["block_inner_modifiers"]
#    entry as modifier(x, 'before' | 'after', layer, layer_index, ts, transformer_options) around each layer;
#    UNetModel.forward sets transformer_options["block"] = ("input", id) / ("middle", 0) / ("output", id) (862-896).
#  * reForge @ 3b56b268 (since 53f43166): forward_timestep_embed calls no modifier (forward_timestep_embed_reforge;
#    a test swaps it in).
# Test code: the layers are plain callables x -> x.


def forward_timestep_embed(ts, x, emb, context=None, transformer_options={}):
    block_inner_modifiers = transformer_options.get("block_inner_modifiers", [])
    for layer_index, layer in enumerate(ts):
        for modifier in block_inner_modifiers:
            x = modifier(x, "before", layer, layer_index, ts, transformer_options)
        x = layer(x)
        for modifier in block_inner_modifiers:
            x = modifier(x, "after", layer, layer_index, ts, transformer_options)
    return x


def forward_timestep_embed_reforge(ts, x, emb, context=None, transformer_options={}):
    for layer in ts:
        x = layer(x)
    return x
