# Stand-in for modules/ui_components.py InputAccordion of lllyasviel/stable-diffusion-webui-forge @ dfdcbab6
# (lines 102-170; A1111 v1.10.1 has the same class for gradio 3): a hidden gr.Checkbox (the input value) that
# opens a gr.Accordion when entered as a context manager. Only what an extension can observe is kept; the
# JavaScript link between checkbox and accordion is left out. Works with gradio 3.41.2 and 4.40.0.
# Test code, not Forge's.
import gradio as gr


class InputAccordionImpl(gr.Checkbox):
    webui_do_not_create_gradio_pyi_thank_you = True
    global_index = 0

    def __init__(self, value=None, setup=False, **kwargs):
        if not setup:
            super().__init__(value=value, **kwargs)
            return
        self.accordion_id = kwargs.get("elem_id")
        if self.accordion_id is None:
            self.accordion_id = f"input-accordion-{InputAccordionImpl.global_index}"
            InputAccordionImpl.global_index += 1
        super().__init__(value=value, **{**kwargs, "elem_id": f"{self.accordion_id}-checkbox", "visible": False})
        self.accordion = gr.Accordion(
            **{**kwargs, "elem_id": self.accordion_id, "label": kwargs.get("label", "Accordion"),
               "elem_classes": ["input-accordion"], "open": value}
        )

    def extra(self):
        return gr.Column(elem_id=self.accordion_id + "-extra", elem_classes="input-accordion-extra", min_width=0)

    def __enter__(self):
        self.accordion.__enter__()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.accordion.__exit__(exc_type, exc_val, exc_tb)

    def get_block_name(self):
        return "checkbox"


def InputAccordion(value=None, **kwargs):
    return InputAccordionImpl(value=value, setup=True, **kwargs)
