"""Which WebUI is running this extension: one small place, decided by what is importable.

* ``"forge"``: Forge main (2.x) — ``backend.sampling.sampling_function`` is importable.
* ``"forge_legacy"``: old Forge (tag ``previous``) and reForge — ``ldm_patched.modules.samplers``.
* ``"a1111"``: everything else (AUTOMATIC1111 1.9.x, 1.10.x, dev).

A loaded model that carries ``forge_objects`` confirms a Forge family host per generation
(:func:`is_forge_model`).
"""

from __future__ import annotations

import importlib.util
from typing import Any

__all__ = ["A1111", "FORGE", "FORGE_LEGACY", "detect_host", "is_forge_family", "is_forge_model"]

A1111 = "a1111"
FORGE = "forge"
FORGE_LEGACY = "forge_legacy"


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError, AttributeError):
        return False


def detect_host() -> str:
    """ "forge", "forge_legacy" or "a1111" (see module docstring). Cheap: finds specs, imports nothing."""
    if _importable("backend") and _importable("backend.sampling.sampling_function"):
        return FORGE
    if _importable("ldm_patched") and _importable("ldm_patched.modules.samplers"):
        return FORGE_LEGACY
    return A1111


def is_forge_family(host: str) -> bool:
    """True for Forge main, old Forge and reForge."""
    return host in (FORGE, FORGE_LEGACY)


def is_forge_model(sd_model: Any) -> bool:
    """True when the loaded model is a Forge one (it carries ``forge_objects``)."""
    return sd_model is not None and hasattr(sd_model, "forge_objects")
