"""The data of a training run, built from its settings: training set (pairs or samples),
validation set and the fixed images drawn every epoch.

- ``--data manifest.jsonl``: :class:`stn_train.data.ManifestDataset` (augmented when
  ``--augment``: crop jitter, flips, colour; per-sample randomness from (seed, epoch, index));
  validation from ``--val`` (no augmentation) if given.
- ``--synthetic N``: :class:`stn_train.data.synthetic.SyntheticFaces`, faces rendered from the
  grid model with random pose, shape, expression, colour, lighting and background, seeded by
  ``--seed``; validation from ``--val-synthetic M`` (default 64) faces of a disjoint seed.
- ``--pairs``: :class:`stn_train.data.SiamesePairs` (two images of a subject when the manifest
  has subject ids, else an image and its mirror).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset

from stn_train.config import RunConfig
from stn_train.data import ManifestDataset, SiamesePairs, collate_batch
from stn_train.data.synthetic import VAL_SEED_OFFSET, synthetic_faces
from stn_train.errors import TrainError

__all__ = ["RunData", "DEFAULT_VAL_SYNTHETIC", "build_data", "take_batch"]

DEFAULT_VAL_SYNTHETIC = 64


@dataclass
class RunData:
    """train: items are samples, or pairs ``{"a", "b", "mirrored"}`` with ``config.pairs``.
    val: samples (no augmentation) or None. picture_batch: a collated batch of the fixed
    images drawn every epoch, or None."""

    train: Dataset
    val: Dataset | None
    picture_batch: dict[str, Any] | None
    synthetic: bool

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.train, "set_epoch"):
            self.train.set_epoch(epoch)


def take_batch(dataset: Dataset, n: int) -> dict | None:
    """The first ``n`` items of ``dataset`` collated (None when ``n`` is 0)."""
    n = min(n, len(dataset))
    if n <= 0:
        return None
    batch = collate_batch([dataset[i] for i in range(n)])
    batch.pop("bad_samples", None)
    return batch


def build_data(config: RunConfig, model) -> RunData:
    """The datasets of a run (module docstring)."""
    size = config.image_size
    if config.synthetic is not None:
        framing = (config.synthetic_margin, config.synthetic_anchor)
        base = synthetic_faces(
            model, config.synthetic, size, config.seed, config.landmarks, *framing
        )
        n_val = config.val_synthetic or DEFAULT_VAL_SYNTHETIC
        val = synthetic_faces(
            model, n_val, size, config.seed + VAL_SEED_OFFSET, config.landmarks, *framing
        )
        synthetic = True
    else:
        base = ManifestDataset(
            config.data, size, config.landmarks, train=config.augment, seed=config.seed
        )
        val = None
        if config.val is not None:
            val = ManifestDataset(config.val, size, config.landmarks, train=False)
        elif config.val_synthetic is not None:
            val = synthetic_faces(
                model,
                config.val_synthetic,
                size,
                config.seed + VAL_SEED_OFFSET,
                config.landmarks,
                config.synthetic_margin,
                config.synthetic_anchor,
            )
        synthetic = False
    n_landmarks = int(model.landmark_indices(config.landmarks).numel())
    probe = base[0]
    if probe["landmarks"].shape[0] != n_landmarks:
        raise TrainError(
            f"the training samples have {probe['landmarks'].shape[0]} landmarks but the model's "
            f"landmark set {config.landmarks!r} has {n_landmarks}; pass the matching {{0}}.",
            ("landmarks",),
        )
    train = (
        SiamesePairs(base, seed=config.seed, landmarks=config.landmarks) if config.pairs else base
    )
    if val is not None:
        pictures = take_batch(val, config.pictures)
    elif config.data is not None:
        plain = ManifestDataset(config.data, size, config.landmarks, train=False)
        pictures = take_batch(plain, config.pictures)
    else:
        pictures = None
    return RunData(train, val, pictures, synthetic)
