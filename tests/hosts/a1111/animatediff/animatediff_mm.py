"""Stand-in for sd-webui-animatediff's scripts/animatediff_mm.py: the module-level `mm_animatediff` whose
`ad_params` describe the running job (see README.md)."""

from dataclasses import dataclass


@dataclass
class ADParams:
    enable: bool = True
    video_length: int = 8
    batch_size: int = 4  # context length of the motion module's windows
    stride: int = 1
    overlap: int = 1
    closed_loop: str = "R-P"
    step: int = 0


class AnimateDiffMM:
    mm_injected = True

    def __init__(self):
        self.ad_params = None


mm_animatediff = AnimateDiffMM()
