"""The script's UI built by the stand-in ScriptRunner under gradio (A1111 pins gradio 3.41.2).

gradio is not in the default test environment (installing 3.41.2 would pin old numpy/fastapi for everyone),
so this module is skipped there (CI runs it, see .ci/run). Run it with the gradio 3.41.2 environment that the
slow test tests/test_forge_gradio_ui.py builds (it also sees the running interpreter's torch and pytest):

    python -m pytest -m slow tests/test_forge_gradio_ui.py
    ~/.cache/upsample-guidance-test-venvs/gradio-3.41.2/bin/python -m pytest tests/test_a1111_ui.py
"""

import importlib.util
import os
from pathlib import Path

import pytest

if os.environ.get("UG_REQUIRE_GRADIO"):  # CI: a missing gradio is a failure, not a skip
    import gradio as gr
else:
    gr = pytest.importorskip("gradio", reason="needs gradio (A1111 pins 3.41.2): see this module's docstring")

_spec = importlib.util.spec_from_file_location(
    "ug_a1111_helpers", Path(__file__).parent / "hosts" / "a1111" / "conftest_helpers.py"
)
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)


@pytest.fixture
def host():
    with helpers.a1111_host() as h:
        yield h


def build(host, is_img2img=False, with_size=True):
    runner = host.scripts.ScriptRunner()
    runner.initialize_scripts(is_img2img)
    script = runner.alwayson_scripts[0]
    tab = "img2img" if is_img2img else "txt2img"
    with gr.Blocks() as demo:
        width = gr.Slider(minimum=64, maximum=2048, value=1536, label="Width", elem_id=f"{tab}_width")
        height = gr.Slider(minimum=64, maximum=2048, value=1024, label="Height", elem_id=f"{tab}_height")
        if with_size:
            script.after_component(width, elem_id=f"{tab}_width")
            script.after_component(height, elem_id=f"{tab}_height")
        runner.create_script_ui(script)
    return demo, runner, script, (width, height)


def test_ui_builds_with_the_controls_in_arg_order(host):
    demo, runner, script, _ = build(host)
    controls = script.controls
    assert script.args_to - script.args_from == 7
    from modules.ui_components import InputAccordion

    assert isinstance(controls[0], InputAccordion) and controls[0].value is False
    assert controls[0].accordion.label == "Upsample guidance"
    kinds = ["Slider", "Slider", "Dropdown", "Radio", "Checkbox", "Dropdown"]
    assert [type(c).__name__ for c in controls[1:]] == kinds
    assert [c.value for c in controls[1:]] == [1.0, 0.6, "Auto", "auto", True, "Auto"]
    assert controls[-1].visible is False  # temporal factor: AnimateDiff is not installed here
    assert all(c.label for c in controls)  # the API's script-info uses labels
    assert len(runner.infotext_fields) == 7 and script.paste_field_names
    from lib_upsample_guidance.webui.settings import UGSettings

    assert UGSettings.from_script_args([c.value for c in controls]) == UGSettings()
    demo.close() if hasattr(demo, "close") else None


def test_ui_is_rebuildable_like_the_api_does(host):
    build(host)
    _, _, script, _ = build(host, is_img2img=True, with_size=False)
    assert script.controls[3].value == "Auto"


def test_ui_defaults_from_settings_tab(host):
    host.shared.opts.ug_default_scale = 1.3
    host.shared.opts.ug_default_resampler = "spectral"
    _, _, script, _ = build(host)
    assert script.controls[1].value == 1.3 and script.controls[4].value == "spectral"


def test_readout_line(host):
    host.shared.opts.ug_base_sd1 = 512
    _, _, script, _ = build(host)
    text = script_readout_value(script)
    assert "1536x1024 -&gt; guided from 768x512 (2x, box)" in text and "first 60% of the noise range" in text


def script_readout_value(script):
    # the readout HTML is the component right after the base dropdown in the accordion
    blocks = script.controls[0].accordion.children
    for block in _walk(blocks):
        if getattr(block, "elem_id", "") and block.elem_id.endswith("_readout"):
            return block.value
    raise AssertionError("no readout component")


def _walk(blocks):
    for b in blocks:
        yield b
        yield from _walk(getattr(b, "children", []) or [])


def test_paste_fields_through_the_paste_logic(host):
    from modules import infotext_utils

    _, runner, script, _ = build(host)
    text = "a cat\nSteps: 20, Sampler: Euler, UG scale: 1.1, UG eta: 0.5, UG base: 640, UG resampler: box"
    params = infotext_utils.parse_generation_parameters(text)
    values = [v for _, v in infotext_utils.paste_values(runner.infotext_fields, params)]
    assert values[:5] == [True, 1.1, 0.5, "640", "box"]
    assert values[5] is infotext_utils.UNCHANGED
    params = infotext_utils.parse_generation_parameters("a cat\nSteps: 20, Sampler: Euler, Seed: 1")
    values = [v for _, v in infotext_utils.paste_values(runner.infotext_fields, params)]
    assert values[0] is False and all(v is infotext_utils.UNCHANGED for v in values[1:])


def test_api_default_args_call_ui_again(host):
    """The API's init_default_script_args calls ui() twice more on the same script inside a new Blocks."""
    _, runner, script, _ = build(host)
    with gr.Blocks():
        first = script.ui(script.is_img2img)
        second = script.ui(script.is_img2img)
    assert (
        [c.value for c in first]
        == [c.value for c in second]
        == [False, 1.0, 0.6, "Auto", "auto", True, "Auto"]
    )
