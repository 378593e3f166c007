"""The one training loop: `pretrain(cfg, report, out_dir)` and `finetune(cfg, report, out_dir)`."""

from ssrl.train.checkpoint import CheckpointError, load_encoder, read_checkpoint, save_encoder
from ssrl.train.finetuning import finetune
from ssrl.train.loop import TrainingDiverged
from ssrl.train.pretraining import HANDED_ON, LAST, pretrain

__all__ = [
    "HANDED_ON", "LAST", "CheckpointError", "TrainingDiverged", "finetune", "load_encoder", "pretrain",
    "read_checkpoint", "save_encoder",
]
