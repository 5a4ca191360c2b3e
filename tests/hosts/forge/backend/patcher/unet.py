# Stand-in for lllyasviel/stable-diffusion-webui-forge backend/patcher/unet.py @ dfdcbab6 (UnetPatcher):
# clone() returns a new patcher on the same KModel with deep-copied model_options and shared controlnet list
# / extra concat condition. Test code, not Forge's.
import copy

from backend.modules.k_model import KModel
from backend.patcher.base import ModelPatcher


class UnetPatcher(ModelPatcher):
    @classmethod
    def from_model(cls, model, diffusers_scheduler=None, config=None, k_predictor=None):
        kmodel = KModel(model=model, diffusers_scheduler=diffusers_scheduler, k_predictor=k_predictor, config=config)
        return UnetPatcher(kmodel, load_device="cpu", offload_device="cpu", current_device="cpu")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.controlnet_linked_list = None
        self.extra_preserved_memory_during_sampling = 0
        self.extra_model_patchers_during_sampling = []
        self.extra_concat_condition = None

    def clone(self):
        n = UnetPatcher(self.model, self.load_device, self.offload_device, self.size, self.current_device)
        n.lora_patches = self.lora_patches.copy()
        n.object_patches = self.object_patches.copy()
        n.model_options = copy.deepcopy(self.model_options)
        n.controlnet_linked_list = self.controlnet_linked_list
        n.extra_preserved_memory_during_sampling = self.extra_preserved_memory_during_sampling
        n.extra_model_patchers_during_sampling = self.extra_model_patchers_during_sampling.copy()
        n.extra_concat_condition = self.extra_concat_condition
        return n

    def add_patched_controlnet(self, cnet):
        cnet.set_previous_controlnet(self.controlnet_linked_list)
        self.controlnet_linked_list = cnet

    def set_model_replace_all(self, patch, target="attn1"):
        # upstream 173-178: the same replacement for every (block, number, transformer index)
        for block_name in ("input", "middle", "output"):
            for number in range(16):
                for index in range(16):
                    self.set_model_patch_replace(patch, target, block_name, number, index)
