"""stn-train: training, evaluation and application of the 3DMM-STN localiser."""

__version__ = "0.1.0"
