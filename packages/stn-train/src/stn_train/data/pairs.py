"""Siamese pairs for the siamese loss: two images of one subject when subject ids exist,
otherwise an image and its mirror image (the original 3DMM-STN's choice).

A pair is ``{"a": sample, "b": sample, "mirrored": () bool}``; ``mirrored`` is True when
``b`` is ``a`` flipped left-right (``transforms.hflip`` with the landmark permutation), so a
loss comparing flattened faces can flip ``b``'s flattened image back.
"""

from __future__ import annotations

import numpy as np
import torch

from stn_train.data.transforms import flip_permutation, hflip
from stn_train.errors import TrainError

__all__ = ["SiamesePairs"]

_MODES = ("auto", "subject", "mirror")


class SiamesePairs(torch.utils.data.Dataset):
    """Pairs built on a sample dataset (``ManifestDataset``, ``SyntheticFaces``, ...).

    Args:
        dataset: returns sample dicts (``"subject"`` -1 when unknown). Subject ids are read
            from its ``subjects`` attribute ((N,) int, -1 unknown), if it has one.
        mode: ``"auto"`` (default): a subject pair where the subject has another image, else
            a mirror pair; ``"subject"``: the same, but the dataset must have subject ids;
            ``"mirror"``: always a mirror pair.
        seed: chooses the partner image: for item i of epoch e, deterministically from
            (seed, e, i) (default: the dataset's ``seed`` or 0).
        landmarks: the landmark set for flipping (default: the dataset's ``landmarks`` name).

    Item i is ``a = dataset[i]`` and ``b`` another image of ``a``'s subject (never ``a``
    itself, never an entry known to be bad), each with its own augmentation, or ``a``
    mirrored.
    """

    def __init__(
        self, dataset, mode: str = "auto", seed: int | None = None, landmarks: str | None = None
    ):
        if mode not in _MODES:
            raise TrainError(f"pair mode must be one of {', '.join(_MODES)}, got {mode!r}.")
        self.dataset = dataset
        self.mode = mode
        self.seed = int(seed if seed is not None else getattr(dataset, "seed", 0))
        name = landmarks if landmarks is not None else getattr(dataset, "landmarks", None)
        if not isinstance(name, str):
            raise TrainError(
                "SiamesePairs needs the landmark set to mirror images; pass "
                "landmarks='aflw21' or 'ibug68'."
            )
        flip_permutation(name)  # refuses an unknown name now rather than at the first item
        self.landmarks = name
        self.epoch = 0
        subjects = getattr(dataset, "subjects", None)
        subjects = (
            np.asarray(subjects, dtype=np.int64)
            if subjects is not None
            else np.full(len(dataset), -1, dtype=np.int64)
        )
        if mode == "subject" and not (subjects >= 0).any():
            raise TrainError(
                "pair mode 'subject' needs subject ids in the manifest; add "
                "\"subject\" to its lines or use mode 'auto' or 'mirror'."
            )
        self.subjects = subjects
        self._groups: dict[int, np.ndarray] = {}
        if mode != "mirror":
            order = np.argsort(subjects, kind="stable")
            ids, starts = np.unique(subjects[order], return_index=True)
            for sid, group in zip(ids.tolist(), np.split(order, starts[1:]), strict=True):
                if sid >= 0 and len(group) > 1:
                    self._groups[sid] = group

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        """Select this epoch's partners, and the dataset's augmentation if it has epochs."""
        self.epoch = int(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def partner(self, index: int, subject: int, epoch: int | None = None) -> int | None:
        """The other image's index for an ``a`` that is entry ``index`` of ``subject``, or
        None for a mirror pair."""
        group = self._groups.get(int(subject))
        if group is None:
            return None
        bad = getattr(self.dataset, "bad_indices", ())
        candidates = [int(j) for j in group if j != index and int(j) not in bad]
        if not candidates:
            return None
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch, int(index), 1]))
        return candidates[int(rng.integers(len(candidates)))]

    def __getitem__(self, index: int) -> dict:
        a = self.dataset[index]
        # a may be a replacement for a bad entry: pair on what was actually loaded
        j = self.partner(int(a["index"]), int(a["subject"]))
        if j is not None:
            b = self.dataset[j]
            if int(b["subject"]) == int(a["subject"]) and int(b["index"]) != int(a["index"]):
                return {"a": a, "b": b, "mirrored": torch.tensor(False)}
        return {"a": a, "b": hflip(a, self.landmarks), "mirrored": torch.tensor(True)}

    def __getitems__(self, indices):
        """Items ``indices`` at once: a batch of mirror pairs comes from one batched fetch
        when the dataset has one (``SyntheticFaces.__getitems__`` renders a whole batch), so
        that the DataLoader fetches whole batches."""
        base = getattr(self.dataset, "__getitems__", None)
        if base is None or self._groups:
            return [self[i] for i in indices]
        return [
            {"a": a, "b": hflip(a, self.landmarks), "mirrored": torch.tensor(True)}
            for a in base(list(indices))
        ]
