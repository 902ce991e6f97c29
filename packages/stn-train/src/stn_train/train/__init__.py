"""Training: the loop, its objective, optimiser, data, processes and run log."""

from stn_train.train.loop import RunResult, train
from stn_train.train.losses import LossWeights, training_objective

__all__ = ["RunResult", "train", "LossWeights", "training_objective"]
