"""One module per host: `a1111` (CFG denoiser callbacks) and `forge` (post-CFG function on a UNet patcher
clone; Forge main, old Forge, reForge). An adapter maps the host's hook onto `core.step` and never re-derives
the math; adapters never import each other."""
