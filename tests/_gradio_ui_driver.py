"""Build the script's UI with the real gradio installed in the running interpreter; print "OK gradio <v>".

Run by tests/test_forge_gradio_ui.py inside a throwaway virtual environment that holds one gradio version
(4.40.0 = Forge main's pin, 3.41.2 = A1111's and reForge's). Loads the real script through the A1111
stand-ins (modules.scripts / shared / script_callbacks), with the InputAccordion stand-in of
tests/hosts/forge/ui, then: runs the Settings-tab and XYZ callbacks, creates the txt2img and img2img UIs
inside gr.Blocks (as the WebUI does), creates them again in a second Blocks (as the HTTP API does),
serialises the page config, and calls the readout's change handler.

With ``--serve PORT`` it instead serves that page (txt2img and img2img tabs, with the extension's
javascript/upsample_guidance.js loaded; the accordion starts enabled and open, as the stand-in has no
script linking it to its checkbox) on 127.0.0.1:PORT until killed, printing "SERVING <url>" when it answers:
tests/test_browser_page.py drives it in headless Chromium.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE / "hosts" / "a1111"), str(REPO)]

import gradio as gr  # noqa: E402
from conftest_helpers import a1111_host  # noqa: E402


def _install_ui_components() -> None:
    import modules

    path = HERE / "hosts" / "forge" / "ui" / "modules" / "ui_components.py"
    spec = importlib.util.spec_from_file_location("modules.ui_components", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["modules.ui_components"] = module
    spec.loader.exec_module(module)
    modules.ui_components = module


def _functions(blocks) -> list:
    fns = blocks.fns
    return list(fns.values()) if isinstance(fns, dict) else list(fns)


def main() -> int:
    with a1111_host() as host:
        _install_ui_components()
        from lib_upsample_guidance.webui import settings_tab

        assert host.shared.opts.data_labels.get(settings_tab.OPTION_SCALE) is not None, (
            "settings not registered"
        )
        axes = [getattr(o, "label", "") for o in host.xyz.axis_options]
        assert any("Upsample" in a or "UG" in a for a in axes), f"no XYZ axes: {axes}"

        demo = build_page(host)
        config = demo.get_config_file()
        assert any(c.get("props", {}).get("label") == "Guidance scale" for c in config["components"])

        texts = []
        for fn in _functions(demo):
            if fn.fn is not None and getattr(fn.fn, "__name__", "") == "refresh":
                texts.append(fn.fn(1536, 1024, True, 1.0, 0.6, "Auto", "auto"))
        assert texts and all("guided from" in t for t in texts), texts

        with gr.Blocks():  # the HTTP API builds the script's UI again for its defaults
            runner = host.scripts.ScriptRunner()
            runner.initialize_scripts(False)
            script = next(s for s in runner.alwayson_scripts if s.title() == "Upsample guidance")
            runner.create_script_ui(script)
            assert [c.value for c in runner.inputs[script.args_from : script.args_to]][1:] == [
                1.0,
                0.6,
                "Auto",
                "auto",
                True,
                "Auto",
            ]
    print(f"OK gradio {gr.__version__}")
    return 0


def build_page(host, js: str | None = None, enabled: bool = False):
    """The txt2img and img2img UIs of the script, as the WebUI builds them, inside one gr.Blocks."""
    kwargs = {"js": f"() => {{ {js} }}"} if js is not None and _major() >= 4 else {}
    with gr.Blocks(**kwargs) as demo:
        tabs = gr.Tabs()
        with tabs:
            for is_img2img, tab in ((False, "txt2img"), (True, "img2img")):
                with gr.Tab(tab, elem_id=f"tab_{tab}"):
                    _build_tab(host, is_img2img, tab, enabled)
        if js is not None and _major() < 4:
            demo.load(fn=None, _js=f"() => {{ {js} }}")
    return demo


def _major() -> int:
    return int(gr.__version__.split(".")[0])


def _build_tab(host, is_img2img: bool, tab: str, enabled: bool) -> None:
    runner = host.scripts.ScriptRunner()
    runner.initialize_scripts(is_img2img)
    script = next(s for s in runner.alwayson_scripts if s.title() == "Upsample guidance")
    width = gr.Slider(minimum=64, maximum=2048, value=1536, label="Width", elem_id=f"{tab}_width")
    height = gr.Slider(minimum=64, maximum=2048, value=1024, label="Height", elem_id=f"{tab}_height")
    script.after_component(width, elem_id=f"{tab}_width")
    script.after_component(height, elem_id=f"{tab}_height")
    runner.create_script_ui(script)
    inputs = runner.inputs[script.args_from : script.args_to]
    kinds = [type(c).__name__ for c in inputs]
    assert len(inputs) == 7, kinds
    assert isinstance(inputs[0], gr.Checkbox) and inputs[0].value is enabled, kinds
    assert [type(c) for c in inputs[1:]] == [
        gr.Slider,
        gr.Slider,
        gr.Dropdown,
        gr.Radio,
        gr.Checkbox,
        gr.Dropdown,  # temporal factor (AnimateDiff; hidden where it is not installed)
    ], kinds
    assert len(script.infotext_fields) == 7
    assert [c.value for c in inputs[1:]] == [1.0, 0.6, "Auto", "auto", True, "Auto"], [
        c.value for c in inputs
    ]


def serve(port: int) -> int:
    """Serve the page on 127.0.0.1:port until killed."""
    import time

    js = (REPO / "javascript" / "upsample_guidance.js").read_text()
    with a1111_host() as host:
        _install_ui_components()
        import modules.ui_components as ui_components

        # the stand-in has no JS linking the accordion to its hidden checkbox: serve it enabled (and open)
        accordion = ui_components.InputAccordion
        ui_components.InputAccordion = lambda value, **kwargs: accordion(True, **kwargs)
        demo = build_page(host, js=js, enabled=True)
        demo.queue()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        print(f"SERVING http://127.0.0.1:{port}/", flush=True)
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        sys.exit(serve(int(sys.argv[2])))
    sys.exit(main())
