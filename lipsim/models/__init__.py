"""The LipSim backbone: SLL layers, LipSimNet, presets, projection and checkpoints."""

from lipsim.models.checkpoint import import_released, load_checkpoint, save_checkpoint
from lipsim.models.net import (
    METRICS,
    LipSimNet,
    ball_distance,
    build_model,
    project,
    project_to_ball,
)
from lipsim.models.presets import PRESETS
from lipsim.models.sll import SLLConv2d, SLLLinear

__all__ = ["METRICS", "PRESETS", "project", "LipSimNet", "SLLConv2d", "SLLLinear", "build_model",
           "ball_distance", "import_released", "load_checkpoint", "project_to_ball", "save_checkpoint"]
