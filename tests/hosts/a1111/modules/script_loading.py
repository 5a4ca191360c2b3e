"""Stand-in for modules/script_loading.py (v1.10.1): a script file is loaded as a module named by its
file name (e.g. "xyz_grid.py"), not a dotted package name."""
import importlib.util
import os


def load_module(path):
    module_spec = importlib.util.spec_from_file_location(os.path.basename(path), path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module
