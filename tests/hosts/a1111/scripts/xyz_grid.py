"""Stand-in for scripts/xyz_grid.py (v1.10.1): AxisOption(label, type, apply, format_value, confirm, cost,
choices, prepare), the Img2Img/Txt2Img subclasses, the module-level axis_options list that extensions
extend, and the per-cell flow: values parsed with opt.type, opt.confirm(p, xs), then for each value
pc = copy(p); opt.apply(pc, x, xs); process_images(pc). Loaded as module "xyz_grid.py" like the real one."""
from copy import copy

from modules import processing, scripts


def format_value_add_label(p, opt, x):
    if type(x) == float:
        x = round(x, 8)
    return f"{opt.label}: {x}"


def do_nothing(p, x, xs):
    pass


class AxisOption:
    def __init__(self, label, type, apply, format_value=format_value_add_label, confirm=None, cost=0.0, choices=None, prepare=None):
        self.label = label
        self.type = type
        self.apply = apply
        self.format_value = format_value
        self.confirm = confirm
        self.cost = cost
        self.prepare = prepare
        self.choices = choices


class AxisOptionImg2Img(AxisOption):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.is_img2img = True


class AxisOptionTxt2Img(AxisOption):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.is_img2img = False


axis_options = [
    AxisOption("Nothing", str, do_nothing),
]


def run_axis(p, label, values_text):
    """One XYZ axis: values from comma-separated text, confirm, one process_images per value."""
    opt = next(o for o in axis_options if o.label == label)
    xs = [x.strip() for x in values_text.split(",") if x.strip()]
    if opt.prepare is not None:
        xs = opt.prepare(xs)
    xs = [opt.type(x) for x in xs]
    if opt.confirm:
        opt.confirm(p, xs)
    results = []
    for x in xs:
        pc = copy(p)  # like the real cell(): a shallow copy, so extra_generation_params is shared with p
        opt.apply(pc, x, xs)
        results.append((opt.format_value(pc, opt, x), processing.process_images(pc)))
    return results


class Script(scripts.Script):
    def title(self):
        return "X/Y/Z plot"
