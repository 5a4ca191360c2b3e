"""Stand-in for modules/scripts.py (v1.10.1 @ 82a973c0).

Kept: Script and its hook signatures, AlwaysVisible, ScriptClassData/scripts_data, load_scripts (the script's
extension root is on sys.path only while its file is imported), ScriptRunner with alwayson_scripts,
args_from/args_to slicing of p.script_args, and every runner method catching and reporting a script's
exception instead of propagating it. Left out: selectable-script UI, sorting by metadata, postprocessing scripts.
"""
import os
import sys
from collections import namedtuple

from modules import errors, script_callbacks, script_loading

AlwaysVisible = object()

ScriptClassData = namedtuple("ScriptClassData", ["script_class", "path", "basedir", "module"])
scripts_data = []
current_basedir = os.getcwd()


def basedir():
    return current_basedir


class PostprocessImageArgs:
    def __init__(self, image):
        self.image = image


class Script:
    name = None
    section = None
    filename = None
    args_from = None
    args_to = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    tabname = None
    group = None
    create_group = True
    infotext_fields = None
    paste_field_names = None
    api_info = None
    setup_for_ui_only = False
    controls = None

    def title(self):
        raise NotImplementedError()

    def ui(self, is_img2img):
        pass

    def show(self, is_img2img):
        return True

    def run(self, p, *args):
        pass

    def setup(self, p, *args):
        pass

    def before_process(self, p, *args):
        pass

    def process(self, p, *args):
        pass

    def before_process_batch(self, p, *args, **kwargs):
        pass

    def process_before_every_sampling(self, p, *args, **kwargs):
        pass

    def process_batch(self, p, *args, **kwargs):
        pass

    def postprocess_batch(self, p, *args, **kwargs):
        pass

    def postprocess(self, p, processed, *args):
        pass

    def before_hr(self, p, *args):
        pass

    def elem_id(self, item_id):
        need_tabname = self.show(True) == self.show(False)
        tabkind = 'img2img' if self.is_img2img else 'txt2img'
        tabname = f"{tabkind}_" if need_tabname else ""
        title = self.title().lower().replace(" ", "_")
        return f'script_{tabname}{title}_{item_id}'


def load_scripts(paths):
    """Load script files the way A1111 does (each with its extension root on sys.path while importing)."""
    global current_basedir
    syspath = sys.path
    for path in paths:
        base = os.path.dirname(os.path.dirname(os.path.abspath(path)))
        try:
            sys.path = [base] + sys.path
            current_basedir = base
            module = script_loading.load_module(path)
            for value in module.__dict__.values():
                if isinstance(value, type) and issubclass(value, Script) and value is not Script:
                    scripts_data.append(ScriptClassData(value, path, base, module))
        except Exception:
            errors.report(f"Error loading script: {path}", exc_info=True)
        finally:
            sys.path = syspath
            current_basedir = os.getcwd()


class ScriptRunner:
    def __init__(self):
        self.scripts = []
        self.selectable_scripts = []
        self.alwayson_scripts = []
        self.inputs = [None]
        self.infotext_fields = []
        self.paste_field_names = []

    def initialize_scripts(self, is_img2img):
        self.scripts.clear()
        self.alwayson_scripts.clear()
        self.selectable_scripts.clear()
        for script_data in scripts_data:
            script = script_data.script_class()
            script.filename = script_data.path
            script.is_txt2img = not is_img2img
            script.is_img2img = is_img2img
            script.tabname = "img2img" if is_img2img else "txt2img"
            visibility = script.show(script.is_img2img)
            if visibility == AlwaysVisible:
                self.scripts.append(script)
                self.alwayson_scripts.append(script)
                script.alwayson = True
            elif visibility:
                self.scripts.append(script)
                self.selectable_scripts.append(script)

    def create_script_ui(self, script):
        """Needs gradio: calls ui() and records args_from/args_to and infotext_fields like the real one."""
        script.args_from = len(self.inputs)
        script.args_to = len(self.inputs)
        controls = script.ui(script.is_img2img)
        script.controls = controls
        if controls is None:
            return
        script.name = script.title().lower()
        if script.infotext_fields is not None:
            self.infotext_fields += script.infotext_fields
        if script.paste_field_names is not None:
            self.paste_field_names += script.paste_field_names
        self.inputs += controls
        script.args_to = len(self.inputs)

    def set_args_range(self, script, n):
        """Without gradio: reserve n positional args for an alwayson script (what create_script_ui does)."""
        script.args_from = len(self.inputs)
        self.inputs += [None] * n
        script.args_to = len(self.inputs)

    def _each(self, method, p, *extra, **kwargs):
        for script in self.alwayson_scripts:
            try:
                script_args = p.script_args[script.args_from:script.args_to]
                getattr(script, method)(p, *extra, *script_args, **kwargs)
            except Exception:
                errors.report(f"Error running {method}: {script.filename}", exc_info=True)

    def setup_scrips(self, p, *, is_ui=True):
        self._each("setup", p)

    def before_process(self, p):
        self._each("before_process", p)

    def process(self, p):
        self._each("process", p)

    def process_before_every_sampling(self, p, **kwargs):
        self._each("process_before_every_sampling", p, **kwargs)

    def before_process_batch(self, p, **kwargs):
        self._each("before_process_batch", p, **kwargs)

    def process_batch(self, p, **kwargs):
        self._each("process_batch", p, **kwargs)

    def postprocess_batch(self, p, images, **kwargs):
        self._each("postprocess_batch", p, images=images, **kwargs)

    def postprocess(self, p, processed):
        for script in self.alwayson_scripts:
            try:
                script_args = p.script_args[script.args_from:script.args_to]
                script.postprocess(p, processed, *script_args)
            except Exception:
                errors.report(f"Error running postprocess: {script.filename}", exc_info=True)

    def before_hr(self, p):
        self._each("before_hr", p)


scripts_txt2img = None
scripts_img2img = None
_ = script_callbacks  # the real module imports it too
