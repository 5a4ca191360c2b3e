"""Import rules of the layers, and the core is host-free: importable and usable with torch alone (no numpy, gradio, safetensors or any
WebUI module), and its modules import nothing outside the standard library, torch and the package."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "lib_upsample_guidance"
ALLOWED_TOP = {
    "torch",
    "math",
    "dataclasses",
    "functools",
    "collections",
    "typing",
    "__future__",
    "importlib",
    "sys",
}

BLOCKER = r"""
import sys, importlib.abc
BLOCKED = ("numpy", "gradio", "safetensors", "modules", "backend", "ldm_patched", "modules_forge", "PIL")
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError("blocked for this test: " + name, name=name)
sys.meta_path.insert(0, Block())
import warnings; warnings.simplefilter("ignore")
import torch
import lib_upsample_guidance as ug
den = ug.UpsampleGuidedDenoiser(lambda x, s: x / (1 + s.reshape(-1, 1, 1, 1) ** 2), base_size=8)
out = den(torch.randn(2, 3, 16, 12), torch.tensor([2.0, 2.0]))
assert out.shape == (2, 3, 16, 12)
print("ok", sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
"""


def test_core_runs_with_torch_alone():
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKER], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok []"


def imports_of(path: Path, source: str | None = None) -> list[tuple[str, bool]]:
    """(absolute module name, at module level?) for every import in a file of the package."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    if path.name == "__init__.py":
        package = ".".join(path.relative_to(ROOT).parts[:-1])
    tree = ast.parse(path.read_text() if source is None else source)
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base)
                if node.module:
                    names = [f"{prefix}.{node.module}"]
                else:
                    names = [f"{prefix}.{alias.name}" for alias in node.names]
            else:
                names = [node.module]
        else:
            continue
        found += [(name, id(node) in top_level) for name in names]
    return found


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "lib_upsample_guidance" and len(parts) > 1 else None


def package_files(sub: str = "") -> list[Path]:
    return sorted((PACKAGE / sub).rglob("*.py"))


def test_core_modules_import_only_stdlib_torch_and_core():
    files = package_files("core")
    assert {f.stem for f in files} >= {"resample", "conventions", "guidance", "step", "denoiser"}
    for path in files:
        for name, _ in imports_of(path):
            top = name.split(".")[0]
            if top == "lib_upsample_guidance":
                assert name.startswith("lib_upsample_guidance.core"), f"{path.name} imports {name}"
            else:
                assert top in ALLOWED_TOP, f"core/{path.name} imports {name}"


ADAPTERS = {"a1111", "forge", "comfyui"}


def adapter_of(stem: str) -> str | None:
    """The adapter a module of adapters/ belongs to: the adapter itself (a1111.py) or one of its private
    helpers, named after it (a1111_extensions.py belongs to a1111)."""
    return next((a for a in ADAPTERS if stem == a or stem.startswith(a + "_")), None)


def test_adapters_never_import_each_other_and_webui_never_imports_an_adapter():
    """An adapter and its private helpers (adapters/<adapter>_*.py) may import one another; nothing imports
    another adapter's modules, and every module of adapters/ belongs to one adapter."""
    adapters = {f.stem for f in package_files("adapters")} - {"__init__"}
    assert ADAPTERS <= adapters
    for path in package_files("adapters"):
        if path.stem == "__init__":
            continue
        owner = adapter_of(path.stem)
        assert owner is not None, f"adapters/{path.name} belongs to no adapter (name it <adapter>_*.py)"
        for name, _ in imports_of(path):
            if layer_of(name) == "adapters" and name != "lib_upsample_guidance.adapters":
                stem = name.split(".")[2]
                assert adapter_of(stem) == owner, f"adapters/{path.name} imports {name}"
    for layer in ("webui", "core", "comfy_family", "demo", "bench"):
        for path in package_files(layer):
            for name, _ in imports_of(path):
                assert layer_of(name) != "adapters", f"{layer}/{path.name} imports {name}"


def test_lower_layers_never_import_upper_ones():
    """core <- webui <- comfy_family <- adapters; demo and bench use the core only. comfy_family is the glue
    the ComfyUI-family adapters (forge, comfyui) share, so that they never import each other."""
    may_use = {
        "core": {"core"},
        "webui": {"core", "webui"},
        "comfy_family": {"core", "webui", "comfy_family"},
        "adapters": {"core", "webui", "comfy_family", "adapters"},
        "demo": {"core", "demo"},
        "bench": {"core", "bench"},
    }
    for layer, allowed in may_use.items():
        for path in package_files(layer):
            for name, _ in imports_of(path):
                other = layer_of(name)
                assert other is None or other in allowed, f"{layer}/{path.name} imports {name}"


def test_nothing_below_the_script_imports_gradio_or_a_host_at_module_level():
    hosts = {"gradio", "modules", "backend", "ldm_patched", "modules_forge", "comfy"}
    for path in package_files():
        for name, module_level in imports_of(path):
            if name.split(".")[0] in hosts and module_level:
                # The A1111 adapter is imported only by the script, inside A1111, and needs its callbacks.
                allowed = path == PACKAGE / "adapters" / "a1111.py" and name.split(".")[0] == "modules"
                assert allowed, f"{path.relative_to(ROOT)} imports {name} at module level"


def test_the_adapter_rule_sees_a_cross_import():
    """a1111's helper importing forge (or forge importing a1111's helper) breaks the rule; its own is fine."""
    assert adapter_of("a1111_extensions") == "a1111" and adapter_of("forge_extensions") == "forge"
    assert adapter_of("a1111") == "a1111" and adapter_of("comfy") is None
    found = imports_of(PACKAGE / "adapters" / "forge.py", "from . import a1111_extensions\n")
    assert found == [("lib_upsample_guidance.adapters.a1111_extensions", True)]
    assert adapter_of(found[0][0].split(".")[2]) != adapter_of("forge")
    own = imports_of(PACKAGE / "adapters" / "a1111.py", "from .a1111_extensions import refusal\n")
    assert adapter_of(own[0][0].split(".")[2]) == "a1111"


def test_the_rule_checker_sees_a_violation():
    """The checker itself: imports in a core file are resolved (relative ones too) and placed at their level."""
    source = (
        "from ..webui import settings\nfrom .step import x\nimport gradio\ndef f():\n    import modules\n"
    )
    found = imports_of(PACKAGE / "core" / "probe.py", source)
    assert ("lib_upsample_guidance.webui", True) in found
    assert ("lib_upsample_guidance.core.step", True) in found
    assert ("gradio", True) in found
    assert ("modules", False) in found
    assert layer_of("lib_upsample_guidance.webui") == "webui"
