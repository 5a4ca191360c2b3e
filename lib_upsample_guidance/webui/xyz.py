"""X/Y/Z plot axes: "[Upsample guidance] Enabled / Scale / Eta / Base resolution / Temporal factor".

Registered from an ``on_before_ui`` callback (all scripts are loaded by then) by extending the built-in
xyz_grid script module's ``axis_options``; the module is found among ``modules.scripts.scripts_data`` by its
module name ("xyz_grid.py", the way the WebUI loads script files). Each axis stores its value on the
per-cell copy of ``p`` (attributes of :data:`settings.OVERRIDE_ATTRS`); the AlwaysOn script reads them in
process() and validates them there like any other input. ``confirm`` checks all values before the grid runs.
"""

from __future__ import annotations

from typing import Any

from .settings import (
    ETA_RANGE,
    SCALE_RANGE,
    WARNING_PREFIX,
    parse_base_resolution,
    parse_bool,
    parse_float,
    parse_temporal_factor,
)

__all__ = ["AXIS_LABELS", "find_xyz_module", "register_axes", "axis_specs"]

AXIS_LABELS = {
    "ug_enabled": "[Upsample guidance] Enabled",
    "ug_scale": "[Upsample guidance] Scale",
    "ug_eta": "[Upsample guidance] Eta",
    "ug_base": "[Upsample guidance] Base resolution",
    "ug_temporal": "[Upsample guidance] Temporal factor",
}


def _setter(attr: str, parse):
    def apply(p: Any, x: Any, xs: Any) -> None:
        setattr(p, attr, parse(x))

    apply.__name__ = f"apply_{attr}"
    return apply


def _confirm(label: str, parse):
    def confirm(p: Any, xs: Any) -> None:
        for x in xs:
            try:
                parse(x)
            except ValueError as error:
                raise ValueError(f"{label}: {error}") from None

    return confirm


def axis_specs() -> list[dict[str, Any]]:
    """The axes as plain data: attr, label, type, parse, choices (None = free text)."""
    scale = lambda v: parse_float(v, "scale", *SCALE_RANGE)  # noqa: E731
    eta = lambda v: parse_float(v, "eta", *ETA_RANGE)  # noqa: E731
    enabled = lambda v: parse_bool(v, "enabled")  # noqa: E731
    base = lambda v: parse_base_resolution(v, "base_resolution")  # noqa: E731
    temporal = lambda v: parse_temporal_factor(v, "temporal_factor")  # noqa: E731
    return [
        {"attr": "ug_enabled", "type": str, "parse": enabled, "choices": lambda: ["True", "False"]},
        {"attr": "ug_scale", "type": float, "parse": scale, "choices": None},
        {"attr": "ug_eta", "type": float, "parse": eta, "choices": None},
        {"attr": "ug_base", "type": str, "parse": base, "choices": lambda: ["Auto", "512", "768", "1024"]},
        # AnimateDiff jobs only (frames / the low-res clip's frames); images ignore it
        {"attr": "ug_temporal", "type": str, "parse": temporal, "choices": lambda: ["Auto", "1", "2", "4"]},
    ]


def find_xyz_module(scripts_data: Any) -> Any | None:
    """The loaded xyz_grid script module (module name "xyz_grid.py", or "xy_grid.py" in old WebUIs)."""
    for data in scripts_data or []:
        module_name = getattr(getattr(data, "script_class", None), "__module__", "")
        if module_name in ("xyz_grid.py", "xy_grid.py"):
            return data.module
    return None


def register_axes() -> None:
    """Add our axes to the XYZ plot (an on_before_ui callback); idempotent; never raises."""
    try:
        from modules import scripts

        module = find_xyz_module(getattr(scripts, "scripts_data", None))
        if module is None or not hasattr(module, "axis_options") or not hasattr(module, "AxisOption"):
            return
        existing = {getattr(o, "label", None) for o in module.axis_options}
        for spec in axis_specs():
            label = AXIS_LABELS[spec["attr"]]
            if label in existing:
                continue
            module.axis_options.append(
                module.AxisOption(
                    label,
                    spec["type"],
                    _setter(spec["attr"], spec["parse"]),
                    confirm=_confirm(label, spec["parse"]),
                    choices=spec["choices"],
                )
            )
    except Exception as error:  # an optional feature: never break UI start-up
        print(f"{WARNING_PREFIX} could not add the X/Y/Z plot axes: {error}")
