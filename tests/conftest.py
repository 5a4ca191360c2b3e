"""Shared pytest setup: make tests/ importable (for the _reference helpers) and the repository root
importable (for lib_upsample_guidance) without installing anything."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
