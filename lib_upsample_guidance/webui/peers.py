"""Other extensions' AlwaysOn scripts in this generation, as both WebUIs' script runners list them.

A1111, Forge and reForge share the script runner (`p.scripts.alwayson_scripts`, each script's positional
arguments at `p.script_args[script.args_from:script.args_to]`), so the checks that only look at another
extension's script object live here, for both adapters. What each extension is and why it is refused is in
the README's compatibility table; the host-specific checks (patched UNet modules, model_options) live in
the adapters' helpers (adapters/a1111_extensions.py, adapters/forge_extensions.py).

Nothing here imports a host module.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["alwayson_scripts", "find_script", "script_args", "module_global", "refusal_by_scripts"]

REGIONAL_PROMPTER = "Regional Prompter"
ANIMATEDIFF = "AnimateDiff"


def alwayson_scripts(p: Any) -> Iterator[Any]:
    """The AlwaysOn script objects of this generation's runner (none when p has no runner)."""
    runner = getattr(p, "scripts", None)
    yield from list(getattr(runner, "alwayson_scripts", None) or [])


def _title(script: Any) -> str:
    try:
        return str(script.title())
    except Exception:  # another extension's title() must never break a generation
        return ""


def find_script(p: Any, title: str) -> Any | None:
    """The AlwaysOn script whose title() is `title`, or None."""
    for script in alwayson_scripts(p):
        if _title(script) == title:
            return script
    return None


def script_args(p: Any, script: Any) -> list:
    """The positional UI values the runner passes to `script`'s hooks."""
    args = list(getattr(p, "script_args", None) or [])
    start, end = getattr(script, "args_from", None), getattr(script, "args_to", None)
    if not isinstance(start, int) or not isinstance(end, int):
        return []
    return args[start:end]


def module_global(script: Any, name: str, default: Any = None) -> Any:
    """A global of the module that defines `script`'s class (WebUI script files are not in sys.modules:
    the class's methods carry the module's globals)."""
    for attr in ("process", "title"):
        fn = getattr(type(script), attr, None)
        globals_ = getattr(fn, "__globals__", None)
        if isinstance(globals_, dict) and name in globals_:
            return globals_[name]
    return default


def _enabled_flag(value: Any) -> bool:
    """AnimateDiff's unit argument: an AnimateDiffProcess (attribute enable) or, through the API, a dict."""
    if isinstance(value, dict):
        return bool(value.get("enable", False))
    return bool(getattr(value, "enable", False))


def refusal_by_scripts(p: Any, *, animatediff_guided: bool = False) -> str | None:
    """Why guidance cannot run beside an extension active in this generation (seen on its script), or None.
    animatediff_guided: the adapter sends the low-res call through AnimateDiff's own path (A1111; old Forge
    when sd-forge-animatediff's forward wrapper is on the model), so an enabled AnimateDiff is not a reason.

    * Regional Prompter (hako-mikan/sd-webui-regional-prompter, `Script.active` set in its process()):
      its regions are computed for the full-size latent (attention masks, and in Latent mode a per-region
      blend of the model outputs inside the CFG denoiser), so the low-resolution call would not see them.
    * AnimateDiff (continue-revolution/sd-webui-animatediff, unit argument `.enable`): the motion modules
      reshape the batch by the video length and its context windows slice the full-size batch.
    """
    rp = find_script(p, REGIONAL_PROMPTER)
    if rp is not None and getattr(rp, "active", False) is True:
        return (
            "Regional Prompter is active: its regions are laid out for the full-size latent and the "
            "low-resolution call would not follow them"
        )
    ad = None if animatediff_guided else find_script(p, ANIMATEDIFF)
    if ad is not None and any(_enabled_flag(arg) for arg in script_args(p, ad)[:1]):
        return (
            "AnimateDiff is enabled: its motion modules and context windows are built for the full-size "
            "frame batch"
        )
    return None
