"""Stand-in for modules/script_callbacks.py (v1.10.1 @ 82a973c0).

Same params classes (constructor signatures and fields), the same global callback lists, the same
registration functions (keyword `name`), and the same "catch, report, continue" behaviour of the runners:
an exception in a callback is reported and never propagates. The canonical-name / sort machinery is reduced
to registration order.
"""
import inspect
import os

from modules import errors


def report_exception(c, job):
    errors.report(f"Error executing callback {job} for {c.script}", exc_info=True)


class CFGDenoiserParams:
    def __init__(self, x, image_cond, sigma, sampling_step, total_sampling_steps, text_cond, text_uncond, denoiser=None):
        self.x = x
        self.image_cond = image_cond
        self.sigma = sigma
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps
        self.text_cond = text_cond
        self.text_uncond = text_uncond
        self.denoiser = denoiser


class CFGDenoisedParams:
    def __init__(self, x, sampling_step, total_sampling_steps, inner_model):
        self.x = x
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps
        self.inner_model = inner_model


class AfterCFGCallbackParams:
    def __init__(self, x, sampling_step, total_sampling_steps):
        self.x = x
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps


class ScriptCallback:
    def __init__(self, script, callback, name="unnamed"):
        self.script = script
        self.callback = callback
        self.name = name


callback_map = dict(
    callbacks_app_started=[],
    callbacks_model_loaded=[],
    callbacks_ui_settings=[],
    callbacks_cfg_denoiser=[],
    callbacks_cfg_denoised=[],
    callbacks_cfg_after_cfg=[],
    callbacks_infotext_pasted=[],
    callbacks_script_unloaded=[],
    callbacks_before_ui=[],
)


def add_callback(callbacks, fun, *, name=None, category='unknown', filename=None):
    if filename is None:
        stack = [x for x in inspect.stack() if x.filename != __file__]
        filename = stack[0].filename if stack else 'unknown file'
    callback_name = f"base/{os.path.basename(filename)}/{category}" + (f"/{name}" if name else "")
    unique = callback_name
    for index in range(1000):
        if not any(x.name == unique for x in callbacks):
            break
        unique = f"{callback_name}-{index + 1}"
    callbacks.append(ScriptCallback(filename, fun, unique))


def clear_callbacks():
    for callback_list in callback_map.values():
        callback_list.clear()


def _run(category, *args):
    for c in list(callback_map['callbacks_' + category]):
        try:
            c.callback(*args)
        except Exception:
            report_exception(c, category)


def cfg_denoiser_callback(params):
    _run('cfg_denoiser', params)


def cfg_denoised_callback(params):
    _run('cfg_denoised', params)


def cfg_after_cfg_callback(params):
    _run('cfg_after_cfg', params)


def ui_settings_callback():
    _run('ui_settings')


def infotext_pasted_callback(infotext, params):
    _run('infotext_pasted', infotext, params)


def model_loaded_callback(sd_model):
    _run('model_loaded', sd_model)


def before_ui_callback():
    for c in reversed(list(callback_map['callbacks_before_ui'])):
        try:
            c.callback()
        except Exception:
            report_exception(c, 'before_ui')


def script_unloaded_callback():
    for c in reversed(list(callback_map['callbacks_script_unloaded'])):
        try:
            c.callback()
        except Exception:
            report_exception(c, 'script_unloaded')


def remove_current_script_callbacks():
    stack = [x for x in inspect.stack() if x.filename != __file__]
    filename = stack[0].filename if stack else 'unknown file'
    for callback_list in callback_map.values():
        for callback_to_remove in [cb for cb in callback_list if cb.script == filename]:
            callback_list.remove(callback_to_remove)


def remove_callbacks_for_function(callback_func):
    for callback_list in callback_map.values():
        for callback_to_remove in [cb for cb in callback_list if cb.callback == callback_func]:
            callback_list.remove(callback_to_remove)


def on_app_started(callback, *, name=None):
    add_callback(callback_map['callbacks_app_started'], callback, name=name, category='app_started')


def on_model_loaded(callback, *, name=None):
    add_callback(callback_map['callbacks_model_loaded'], callback, name=name, category='model_loaded')


def on_ui_settings(callback, *, name=None):
    add_callback(callback_map['callbacks_ui_settings'], callback, name=name, category='ui_settings')


def on_cfg_denoiser(callback, *, name=None):
    add_callback(callback_map['callbacks_cfg_denoiser'], callback, name=name, category='cfg_denoiser')


def on_cfg_denoised(callback, *, name=None):
    add_callback(callback_map['callbacks_cfg_denoised'], callback, name=name, category='cfg_denoised')


def on_cfg_after_cfg(callback, *, name=None):
    add_callback(callback_map['callbacks_cfg_after_cfg'], callback, name=name, category='cfg_after_cfg')


def on_infotext_pasted(callback, *, name=None):
    add_callback(callback_map['callbacks_infotext_pasted'], callback, name=name, category='infotext_pasted')


def on_script_unloaded(callback, *, name=None):
    add_callback(callback_map['callbacks_script_unloaded'], callback, name=name, category='script_unloaded')


def on_before_ui(callback, *, name=None):
    add_callback(callback_map['callbacks_before_ui'], callback, name=name, category='before_ui')
