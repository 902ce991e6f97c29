"""Training: the loop, its objective, checkpoints, processes, metrics and pictures."""

from stn_train.train.loop import RunResult, train
from stn_train.train.losses import LossWeights, training_objective

__all__ = ["RunResult", "train", "LossWeights", "training_objective"]
