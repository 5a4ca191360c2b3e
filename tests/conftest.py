"""Shared pytest setup: make tests/ importable (for the _reference helpers) and the repository root
importable (for lib_upsample_guidance) without installing anything."""

import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module (far faster on shared cores); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
