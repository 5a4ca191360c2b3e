"""The core is host-free: importable and usable with torch alone (no numpy, gradio, safetensors or any
WebUI module), and its modules import nothing outside the standard library, torch and the package."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = [
    "__init__",
    "__main__",
    "resample",
    "conventions",
    "guidance",
    "schedule",
    "planner",
    "step",
    "denoiser",
]
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


def test_core_modules_import_only_stdlib_and_torch():
    for name in CORE:
        tree = ast.parse((ROOT / "lib_upsample_guidance" / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                tops = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: inside the package
                    continue
                tops = [node.module.split(".")[0]]
            else:
                continue
            for top in tops:
                assert top in ALLOWED_TOP, f"{name}.py imports {top}"
