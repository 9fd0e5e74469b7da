"""The LipSim backbone: SLL layers, LipSimNet, presets, projection and checkpoints."""

from lipsim.models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_torch_file,
    save_checkpoint,
)
from lipsim.models.net import (
    METRICS,
    LipSimNet,
    ball_distance,
    build_model,
    project,
    project_to_ball,
)
from lipsim.models.presets import PRESETS
from lipsim.models.released import Imported, import_released
from lipsim.models.sll import SLLConv2d, SLLLinear

__all__ = [
    "METRICS",
    "PRESETS",
    "CheckpointError",
    "Imported",
    "project",
    "read_torch_file",
    "LipSimNet",
    "SLLConv2d",
    "SLLLinear",
    "build_model",
    "ball_distance",
    "import_released",
    "load_checkpoint",
    "project_to_ball",
    "save_checkpoint",
]
