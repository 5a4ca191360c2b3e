# Stand-in for ldm_patched/modules/model_patcher.py (old Forge @ bfee03d8, set_model_sampler_post_cfg_function
# line 70, set_model_unet_function_wrapper line 75): model_options, clone, post-CFG list. Test code.
import copy


class ModelPatcher:
    def __init__(self, model, load_device="cpu", offload_device="cpu", size=0, current_device=None, weight_inplace_update=False):
        self.model = model
        self.size = size
        self.model_options = {"transformer_options": {}}
        self.load_device = load_device
        self.offload_device = offload_device
        self.current_device = offload_device if current_device is None else current_device

    def clone(self):
        n = ModelPatcher(self.model, self.load_device, self.offload_device, self.size, self.current_device)
        n.model_options = copy.deepcopy(self.model_options)
        return n

    def set_model_sampler_cfg_function(self, sampler_cfg_function, disable_cfg1_optimization=False):
        self.model_options["sampler_cfg_function"] = sampler_cfg_function
        if disable_cfg1_optimization:
            self.model_options["disable_cfg1_optimization"] = True

    def set_model_sampler_post_cfg_function(self, post_cfg_function, disable_cfg1_optimization=False):
        self.model_options["sampler_post_cfg_function"] = list(self.model_options.get("sampler_post_cfg_function", [])) + [post_cfg_function]
        if disable_cfg1_optimization:
            self.model_options["disable_cfg1_optimization"] = True

    def set_model_unet_function_wrapper(self, unet_wrapper_function):
        self.model_options["model_function_wrapper"] = unet_wrapper_function
