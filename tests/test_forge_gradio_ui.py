"""The script's UI built under real gradio 4.40.0 (Forge main's pin) and 3.41.2 (A1111, reForge).

Marked slow (outside the default run): each gradio version lives in a throwaway virtual environment created
on first use with `python -m venv` and `pip install gradio==<version>` plus the host's pins of fastapi,
pydantic, huggingface-hub and httpx (~2 minutes each, needs PyPI), cached under $UG_GRADIO_VENVS (default
~/.cache/upsample-guidance-test-venvs). It sees the packages of the interpreter running the tests (torch,
pytest: a virtual environment's or the system's alike) through a `.pth` file rewritten on every use, after its
own, so its gradio pins win. An environment is used only once it is complete (a marker written last); a
half-made one from an interrupted build is removed and built again. Run it with

    python -m pytest -m slow tests/test_forge_gradio_ui.py

The UI build itself runs in a subprocess (tests/_gradio_ui_driver.py) with that environment's python.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "_gradio_ui_driver.py"
VENVS = Path(os.environ.get("UG_GRADIO_VENVS", Path.home() / ".cache" / "upsample-guidance-test-venvs"))
PINS = {
    # Forge main requirements_versions.txt @ dfdcbab6
    "4.40.0": [
        "gradio==4.40.0",
        "fastapi==0.104.1",
        "pydantic==2.8.2",
        "huggingface-hub==0.26.2",
        "httpx==0.24.1",
    ],
    # A1111 v1.10.1 / reForge: gradio 3.41.2 with fastapi 0.94 and pydantic 1.x
    "3.41.2": [
        "gradio==3.41.2",
        "fastapi==0.94.0",
        "pydantic==1.10.15",
        "huggingface-hub==0.25.0",
        "httpx==0.24.1",
    ],
}


COMPLETE = ".ug-complete"


def running_site_dirs() -> list[str]:
    """site-packages of the interpreter running the tests (venv or system), in its own order."""
    dirs = [*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    return list(dict.fromkeys(d for d in dirs if os.path.isdir(d)))


def link_running_packages(python: Path) -> None:
    """Point the gradio venv at the running interpreter's packages with a .pth in its own site-packages
    (processed after the venv's own directory, so the venv's pins take precedence)."""
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(purelib) / "zz-ug-running-env.pth").write_text("\n".join(running_site_dirs()) + "\n")


def _fail_or_skip(why: str) -> None:
    if os.environ.get("UG_REQUIRE_GRADIO"):  # CI: fail rather than skip
        pytest.fail(why)
    pytest.skip(why)


def _gradio_python(version: str) -> Path:
    """The python of a complete venv holding gradio==version that also sees the running interpreter's
    packages (built on first use); skip (fail in CI) if it cannot be made."""
    venv = VENVS / f"gradio-{version}"
    python = venv / "bin" / "python"
    check = [
        str(python),
        "-c",
        f"import gradio, torch, pytest, sys; sys.exit(gradio.__version__ != {version!r})",
    ]
    if (venv / COMPLETE).is_file() and python.exists():
        link_running_packages(python)
        if subprocess.run(check, capture_output=True).returncode == 0:
            return python
    shutil.rmtree(venv, ignore_errors=True)  # half-made, stale or broken: never reused
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "-q", *PINS[version]],
    ]
    for i, step in enumerate(steps):
        result = subprocess.run(step, capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            _fail_or_skip(f"could not set up gradio {version}: {(result.stderr or result.stdout)[-500:]}")
        if i == 0:
            link_running_packages(python)  # before pip: it then keeps what the running env already satisfies
    result = subprocess.run(check, capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        _fail_or_skip(
            f"gradio {version} environment does not import gradio, torch and pytest: {result.stderr[-500:]}"
        )
    (venv / COMPLETE).write_text(version + "\n")
    return python


@pytest.mark.slow
@pytest.mark.parametrize("version", ["4.40.0", "3.41.2"])
def test_ui_builds_under_gradio(version):
    python = _gradio_python(version)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["GRADIO_ANALYTICS_ENABLED"] = "False"
    result = subprocess.run(
        [str(python), str(DRIVER)], capture_output=True, text=True, timeout=600, cwd=str(HERE.parent), env=env
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"OK gradio {version}" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
