"""Training: distributed setup (distributed), the shared loop with resume (trainer,
checkpointing), lr schedules (schedule), and the two tasks (distill, finetune)."""

from lipsim.train.distributed import DistEnv, detect_env, init_distributed
from lipsim.train.trainer import TrainConfig, Trainer, add_training_options, config_from_args

__all__ = [
    "DistEnv",
    "TrainConfig",
    "Trainer",
    "add_training_options",
    "config_from_args",
    "detect_env",
    "init_distributed",
]
