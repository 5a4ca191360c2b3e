"""One module per host: `a1111` (CFG denoiser callbacks), `forge` (post-CFG function on a UNet patcher
clone; Forge main, old Forge, reForge) and `comfyui` (the "Upsample Guidance" model patch node; the repository
root __init__.py is its ComfyUI entry point). The last two share comfy_family.postcfg. An adapter maps the host's hook onto `core.step` and never re-derives
the math; adapters never import each other."""
