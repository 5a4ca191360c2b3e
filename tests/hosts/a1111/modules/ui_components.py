"""Stand-in for modules/ui_components.py (v1.10.1): InputAccordion, a gr.Checkbox subclass (the value is the
enable flag) that also creates a gr.Accordion with the checkbox's label and opens/closes with it; used as a
context manager it enters the accordion. The JS that keeps them in sync is left out."""
import gradio as gr


class FormComponent:
    def get_expected_parent(self):
        return gr.components.Form


class InputAccordion(gr.Checkbox):
    global_index = 0

    def __init__(self, value, **kwargs):
        self.accordion_id = kwargs.get('elem_id')
        if self.accordion_id is None:
            self.accordion_id = f"input-accordion-{InputAccordion.global_index}"
            InputAccordion.global_index += 1
        super().__init__(value, **{**kwargs, "elem_id": f"{self.accordion_id}-checkbox", "visible": False})
        self.accordion = gr.Accordion(**{**kwargs, "elem_id": self.accordion_id,
                                         "label": kwargs.get('label', 'Accordion'),
                                         "elem_classes": ['input-accordion'], "open": value})

    def extra(self):
        return gr.Column(elem_id=self.accordion_id + '-extra', elem_classes='input-accordion-extra', min_width=0)

    def __enter__(self):
        self.accordion.__enter__()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.accordion.__exit__(exc_type, exc_val, exc_tb)

    def get_block_name(self):
        return "checkbox"
