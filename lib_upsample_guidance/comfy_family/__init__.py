"""Host glue shared by the adapters of the ComfyUI family of sampling backends (ComfyUI, Forge main, old
Forge / ldm_patched, reForge): `postcfg`, the post-CFG guidance function. Imports the core and the per-generation
guard of `webui.generation`; never an adapter, never a host module at module level."""
