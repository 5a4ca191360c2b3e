"""Load the A1111 stand-ins and the real extension script in isolation, and run generations.

Usage (from a test):  with a1111_host() as host: p = host.txt2img(...); processed = host.run(p)
Inside the context, `modules`, `k_diffusion` and the xyz_grid script come from this directory; on exit every
module imported from it (and lib_upsample_guidance modules bound to it) is dropped and sys.path restored, so
another host's stand-ins can be used in the same pytest session.
"""
import contextlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
SCRIPT = REPO / "scripts" / "upsample_guidance.py"
XYZ = HERE / "scripts" / "xyz_grid.py"
_HOST_MODULES = ("modules", "k_diffusion", "tiny_sd", "sgm_conditioner", "backend", "ldm_patched", "modules_forge")
_BOUND = ("lib_upsample_guidance.adapters.a1111", "upsample_guidance.py", "xyz_grid.py")


def _is_host(name):
    return any(name == m or name.startswith(m + ".") for m in _HOST_MODULES) or name in _BOUND


class Host:
    def __init__(self, model):
        import modules.processing as processing
        import modules.script_callbacks as script_callbacks
        import modules.scripts as scripts
        import modules.shared as shared

        import tiny_sd

        self.shared, self.scripts, self.processing, self.callbacks = shared, scripts, processing, script_callbacks
        self.tiny_sd = tiny_sd
        shared.sd_model = model
        scripts.scripts_data.clear()
        script_callbacks.clear_callbacks()
        scripts.load_scripts([str(XYZ), str(SCRIPT)])
        script_callbacks.ui_settings_callback() if _has_gradio() else self._register_settings_without_gradio()
        script_callbacks.before_ui_callback()
        self.runners = {}
        for is_img2img in (False, True):
            runner = scripts.ScriptRunner()
            runner.initialize_scripts(is_img2img)
            for script in runner.alwayson_scripts:
                from lib_upsample_guidance.webui.settings import ARG_ORDER

                runner.set_args_range(script, len(ARG_ORDER))
            self.runners[is_img2img] = runner
        self.script = self.runners[False].alwayson_scripts[0]
        self.script_module = sys.modules.get("upsample_guidance.py") or next(
            d.module for d in scripts.scripts_data if d.script_class.__name__ == "UpsampleGuidanceScript")
        self.xyz = next(d.module for d in scripts.scripts_data if d.script_class.__module__ == "xyz_grid.py")

    def _register_settings_without_gradio(self):
        """on_ui_settings needs gradio for the component classes; without it, register the same options
        with the component left out (the values/defaults are what the tests need)."""
        import types
        fake = types.ModuleType("gradio")
        fake.Slider = fake.Radio = fake.Checkbox = object
        sys.modules["gradio"] = fake
        try:
            self.callbacks.ui_settings_callback()
        finally:
            del sys.modules["gradio"]

    def set_model(self, model):
        self.shared.sd_model = model

    def script_args(self, ug_args, is_img2img=False):
        runner = self.runners[is_img2img]
        script = runner.alwayson_scripts[0]
        args = [None] * len(runner.inputs)
        args[0] = 0
        defaults = [False, 1.0, 0.6, "Auto", "auto", True, "Auto"]  # what ui() gives (the API fills missing args so)
        for i, value in enumerate(defaults):
            args[script.args_from + i] = value
        for i, value in enumerate(ug_args):
            args[script.args_from + i] = value
        return args

    def txt2img(self, ug_args=(), **kwargs):
        kwargs.setdefault("width", 128)
        kwargs.setdefault("height", 128)
        return self.processing.StableDiffusionProcessingTxt2Img(
            scripts=self.runners[False], script_args=self.script_args(list(ug_args)), **kwargs)

    def img2img(self, ug_args=(), **kwargs):
        kwargs.setdefault("width", 128)
        kwargs.setdefault("height", 128)
        return self.processing.StableDiffusionProcessingImg2Img(
            scripts=self.runners[True], script_args=self.script_args(list(ug_args), True), **kwargs)

    def run(self, p):
        return self.processing.process_images(p)


def _has_gradio():
    try:
        import gradio  # noqa: F401
        return hasattr(gradio, "Blocks")
    except Exception:
        return False


def _drop_bound_submodules():
    """`from lib_upsample_guidance.adapters import a1111` reads the parent package's attribute before
    sys.modules: drop both."""
    for name in _BOUND:
        if not name.startswith("lib_upsample_guidance."):
            continue
        parent_name, attr = name.rsplit(".", 1)
        parent = sys.modules.get(parent_name)
        if parent is not None and attr in parent.__dict__:
            delattr(parent, attr)


@contextlib.contextmanager
def a1111_host(model=None):
    """Context with the stand-in A1111 loaded and our script registered; yields a Host."""
    saved_modules = {k: v for k, v in sys.modules.items() if _is_host(k)}
    for k in saved_modules:
        del sys.modules[k]
    _drop_bound_submodules()
    saved_path = list(sys.path)
    sys.path[:] = [str(HERE), str(REPO)] + [p for p in saved_path if "tests/hosts" not in p.replace("\\", "/")]
    try:
        if model is None:
            import tiny_sd
            model = tiny_sd.TinySDModel()
        yield Host(model)
    finally:
        for k in [k for k in sys.modules if _is_host(k)]:
            del sys.modules[k]
        _drop_bound_submodules()
        sys.modules.update(saved_modules)
        sys.path[:] = saved_path
