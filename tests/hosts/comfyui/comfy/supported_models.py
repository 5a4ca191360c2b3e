# Stand-in for comfy/supported_models.py (ComfyUI v0.8.0): the model_config classes (names and inheritance
# only). Test code.
class BASE:
    pass


class SD15(BASE):
    pass


class SD20(BASE):
    pass


class SD_X4Upscaler(SD20):
    pass


class SDXLRefiner(BASE):
    pass


class SDXL(BASE):
    pass


class SSD1B(SDXL):
    pass


class SD3(BASE):
    pass


class Flux(BASE):
    pass


class FluxSchnell(Flux):
    pass


class WAN21_T2V(BASE):
    pass
