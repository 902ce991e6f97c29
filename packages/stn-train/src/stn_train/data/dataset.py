"""``ManifestDataset``: landmark-annotated photographs from a manifest, cropped to the network
input, augmented for training, with bad samples skipped and counted.

A sample (stn_train TRAIN_API) is a dict of tensors:

- ``"image"`` (3, S, S) float32 in [0, 1];
- ``"landmarks"`` (L, 2) float32 pixels of the S x S image, our convention (x right, y down,
  (0, 0) the centre of the top-left pixel); a missing landmark (``visible`` 0) has
  meaningless but finite coordinates;
- ``"visible"`` (L,) float32 0/1;
- ``"subject"`` () int64, the subject's number (``dataset.subject_names[k]``) or -1;
- ``"index"`` () int64, the manifest entry it came from (``dataset.entries[index]``);
- ``"skipped"`` () int64, how many bad entries were passed over to produce it (0 normally):
  summed over a batch it counts bad samples in every DataLoader worker process.

Bad samples (docs/data-format.md): an entry is bad when its image is missing, cannot be
decoded or (``non_rgb="skip"``) is not RGB, when its landmark count is not the landmark set's,
when a visible landmark is NaN or infinite, or (``crop="landmarks"``) when it has fewer than
two visible landmarks. The cheap checks run when the dataset is built; image decoding is
checked when an entry is loaded (or all at once with ``validate_images``). A bad entry is
recorded in ``bad_samples`` with its reason, warned about, and replaced by the next good entry
(``index + 1``, ``index + 2``, ...), so batches stay full and a long run never stops on one
bad file. ``strict=True`` (validation, evaluation) raises ``TrainError`` instead.

Greyscale and transparent images are converted to RGB by default (stn_train.data.images),
counted in ``converted`` and warned about.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stn_train.data.images import ImageReadError, read_mask, read_rgb, to_tensor
from stn_train.data.manifest import ManifestEntry, read_manifest
from stn_train.data.transforms import (
    FLIP_PERMUTATIONS,
    color_jitter,
    crop_points,
    crop_window,
    hflip,
    resize_square,
)
from stn_train.errors import TrainError

__all__ = [
    "Jitter",
    "BadSample",
    "DataWarning",
    "sample_seed",
    "check_entry",
    "ManifestDataset",
    "collate_samples",
    "collate_batch",
]

# Individual warnings per dataset copy (each DataLoader worker has one); then one summary line.
_MAX_WARNINGS = 10


class DataWarning(UserWarning):
    """A sample was skipped or converted (filter with ``warnings.filterwarnings``)."""


@dataclass
class Jitter:
    """Training augmentation strengths (all 0: none).

    Attributes:
        scale: the crop side is multiplied by ``1 + scale * u``, u uniform in [-1, 1).
        shift: the crop centre moves by ``shift * side * u`` in x and in y.
        brightness, contrast, saturation: colour jitter strengths (transforms.color_jitter).
    """

    scale: float = 0.1
    shift: float = 0.05
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2

    @classmethod
    def none(cls) -> Jitter:
        return cls(0.0, 0.0, 0.0, 0.0, 0.0)

    @property
    def any_colour(self) -> bool:
        return self.brightness > 0 or self.contrast > 0 or self.saturation > 0


@dataclass(frozen=True)
class BadSample:
    """A skipped entry: ``kind`` is one of ``missing``, ``unreadable``, ``non_rgb``,
    ``landmark_count``, ``nan_landmarks``, ``no_face_box``."""

    index: int
    image: str
    line: int | None
    kind: str
    reason: str


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for one item's augmentation, well mixed from (seed, epoch, index)."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(index)]).generate_state(1)
    return int(state[0])


def check_entry(
    entry: ManifestEntry, n_landmarks: int, crop: str = "landmarks", check_file: bool = True
) -> tuple[str, str] | None:
    """The cheap checks of one entry: None if it passes, else (kind, reason sentence)."""
    n = entry.landmarks.shape[0]
    if n != n_landmarks:
        return "landmark_count", (
            f"it has {n} landmarks but the landmark set needs {n_landmarks}; fix the line or "
            "choose the matching landmark set"
        )
    visible = entry.visible > 0
    bad = np.flatnonzero(visible & ~np.isfinite(entry.landmarks).all(1))
    if bad.size:
        return "nan_landmarks", (
            f"visible landmark(s) {', '.join(map(str, bad.tolist()))} are NaN or infinite; "
            "give them coordinates or mark them v = 0"
        )
    if crop == "landmarks":
        pts = entry.landmarks[visible]
        if pts.shape[0] < 2 or not np.ptp(pts, axis=0).max() > 0:
            return "no_face_box", (
                "it has fewer than two distinct visible landmarks, so there is no face box to "
                "crop around; annotate it or use crop='image'"
            )
    if check_file and not entry.image.is_file():
        return "missing", "the image file does not exist; check its path in the manifest"
    return None


class ManifestDataset(torch.utils.data.Dataset):
    """Images and landmarks from a manifest, as training or evaluation samples.

    Args:
        manifest: a manifest file (stn_train.data.manifest) or a list of ``ManifestEntry``.
        image_size: S, the side of the square network input in pixels.
        landmarks: the landmark set's name (a key of ``FLIP_PERMUTATIONS``: ``"aflw21"``,
            ``"ibug68"``); every entry must have that many landmarks.
        train: augment (random crop jitter, flips, colour); False: centred crop, nothing
            random, the same sample every time.
        flip_prob: probability of a horizontal flip (training).
        jitter: augmentation strengths (default ``Jitter()`` when training).
        seed: the augmentation seed: item i of epoch e is augmented from
            ``sample_seed(seed, e, i)``, the same in any process and with any worker count.
        margin: the crop's margin around the landmarks' box, as a fraction of its larger
            side on each side (transforms.crop_window).
        crop: ``"landmarks"`` (a square around the face) or ``"image"`` (the whole image,
            padded to a square; for pre-cropped faces).
        strict: raise ``TrainError`` on the first bad entry instead of skipping it.
        non_rgb: ``"convert"`` greyscale / transparent images to RGB with a warning, or
            ``"skip"`` them as bad samples.
        check_files: check that every image file exists when the dataset is built.

    Call ``set_epoch(e)`` at the start of each epoch (as with DistributedSampler) so that the
    augmentation changes between epochs; with ``persistent_workers=True`` the workers keep the
    epoch they were started with.
    """

    def __init__(
        self,
        manifest: str | Path | Sequence[ManifestEntry],
        image_size: int = 224,
        landmarks: str = "aflw21",
        train: bool = True,
        flip_prob: float = 0.5,
        jitter: Jitter | None = None,
        seed: int = 0,
        *,
        margin: float = 0.25,
        crop: str = "landmarks",
        strict: bool = False,
        non_rgb: str = "convert",
        check_files: bool = True,
    ):
        if isinstance(manifest, (str, Path)):
            self.manifest_path: Path | None = Path(manifest)
            self.entries = read_manifest(manifest)
        else:
            self.manifest_path = None
            self.entries = list(manifest)
            if not self.entries:
                raise TrainError("the dataset has no entries; pass a non-empty manifest.")
        if landmarks not in FLIP_PERMUTATIONS:
            raise TrainError(
                f"unknown landmark set {landmarks!r}; use one of "
                f"{', '.join(sorted(FLIP_PERMUTATIONS))}."
            )
        if crop not in ("landmarks", "image"):
            raise TrainError(f"crop must be 'landmarks' or 'image', got {crop!r}.")
        if non_rgb not in ("convert", "skip"):
            raise TrainError(f"non_rgb must be 'convert' or 'skip', got {non_rgb!r}.")
        if not (isinstance(image_size, int) and image_size >= 8):
            raise TrainError(f"image_size must be an integer >= 8, got {image_size!r}.")
        if not 0.0 <= flip_prob <= 1.0:
            raise TrainError(f"flip_prob must be in [0, 1], got {flip_prob!r}.")
        self.image_size = image_size
        self.landmarks = landmarks
        self.n_landmarks = len(FLIP_PERMUTATIONS[landmarks])
        self.train = train
        self.flip_prob = flip_prob if train else 0.0
        self.jitter = (jitter if jitter is not None else Jitter()) if train else Jitter.none()
        self.seed = seed
        self.margin = margin
        self.crop = crop
        self.strict = strict
        self.non_rgb = non_rgb
        self.epoch = 0
        # With any quality mask, every sample carries "trust" (ones for entries without one).
        self.has_quality = any(e.quality_mask is not None for e in self.entries)

        names = sorted({e.subject for e in self.entries if e.subject is not None})
        self.subject_names: list[str] = names
        number = {name: k for k, name in enumerate(names)}
        self.subjects = np.array(
            [number.get(e.subject, -1) if e.subject is not None else -1 for e in self.entries],
            dtype=np.int64,
        )

        self.bad_samples: list[BadSample] = []
        self.bad_indices: set[int] = set()
        self.converted: list[tuple[int, str]] = []
        self._converted_indices: set[int] = set()
        self._warnings = 0
        for i, entry in enumerate(self.entries):
            found = check_entry(entry, self.n_landmarks, crop, check_files)
            if found is not None:
                self._record(i, *found, warn=False)
        if self.bad_samples:
            if len(self.bad_samples) == len(self.entries):
                raise TrainError(
                    f"no usable sample in {self._source()}: "
                    f"{self.summary()} First: {self._message(self.bad_samples[0])}"
                )
            warnings.warn(
                f"{self._source()}: {self.summary()} First: {self._message(self.bad_samples[0])}",
                DataWarning,
                stacklevel=2,
            )

    # ------------------------------------------------------------------ bookkeeping

    def _source(self) -> str:
        return str(self.manifest_path) if self.manifest_path is not None else "the entries"

    def _message(self, bad: BadSample) -> str:
        where = (
            f"{self.manifest_path}, line {bad.line}"
            if self.manifest_path is not None and bad.line is not None
            else f"entry {bad.index}"
        )
        return f"{where} ({bad.image}): {bad.reason}."

    def _warn(self, message: str) -> None:
        self._warnings += 1
        if self._warnings <= _MAX_WARNINGS:
            warnings.warn(message, DataWarning, stacklevel=3)
        elif self._warnings == _MAX_WARNINGS + 1:
            warnings.warn(
                "further skipped or converted samples are not warned about "
                "individually; see dataset.summary().",
                DataWarning,
                stacklevel=3,
            )

    def _record(self, index: int, kind: str, reason: str, warn: bool = True) -> None:
        entry = self.entries[index]
        bad = BadSample(index, str(entry.image), entry.line, kind, reason.rstrip("."))
        if self.strict:
            raise TrainError(self._message(bad))
        if index not in self.bad_indices:
            self.bad_indices.add(index)
            self.bad_samples.append(bad)
            if warn:
                self._warn(f"skipping {self._message(bad)}")

    def summary(self) -> str:
        """One line: how many entries were skipped, by cause, and how many converted."""
        parts = [
            f"{n} {kind.replace('_', ' ')}"
            for kind, n in sorted(Counter(b.kind for b in self.bad_samples).items())
        ]
        text = f"{len(self.bad_samples)} of {len(self.entries)} samples skipped" + (
            f" ({', '.join(parts)})." if parts else "."
        )
        if self.converted:
            text += f" {len(self.converted)} images converted to RGB."
        return text

    @property
    def good_indices(self) -> np.ndarray:
        """Indices of the entries not (yet) known to be bad."""
        return np.array(
            [i for i in range(len(self.entries)) if i not in self.bad_indices], dtype=np.int64
        )

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation of this epoch (sample_seed)."""
        self.epoch = int(epoch)

    def validate_images(self) -> list[BadSample]:
        """Decode every image now (slow: reads all files) and record the bad ones; returns
        ``bad_samples``. In strict mode the first bad image raises ``TrainError``."""
        for i in range(len(self.entries)):
            if i not in self.bad_indices:
                self._read(i)
        return self.bad_samples

    # ------------------------------------------------------------------ loading

    def __len__(self) -> int:
        return len(self.entries)

    def _read(self, index: int):
        """The entry's RGB image, or None (recorded as bad)."""
        try:
            img, note = read_rgb(
                self.entries[index].image, "error" if self.non_rgb == "skip" else "convert"
            )
        except ImageReadError as exc:
            self._record(index, exc.kind, str(exc))
            return None
        if note is not None and index not in self._converted_indices:
            self._converted_indices.add(index)
            self.converted.append((index, note))
            self._warn(note)
        return img

    def _trust(self, index: int, size: tuple[int, int], window) -> torch.Tensor | None:
        """(1, S, S) in [0, 1]: 1 where the crop's pixel is the photograph's, 0 where its
        quality mask marks it invented or the crop leaves the image; ones for an entry without
        a mask. None when the mask cannot be used (recorded as a bad sample)."""
        path = self.entries[index].quality_mask
        if path is None:
            return torch.ones(1, self.image_size, self.image_size)
        try:
            mask = read_mask(path, size)
        except ImageReadError as exc:
            self._record(index, exc.kind, str(exc))
            return None
        trusted = mask.point(lambda v: 255 - v)  # 255 where the photograph's own
        box = (window.x0, window.y0, window.x0 + window.side, window.y0 + window.side)
        patch = np.array(trusted.crop(box), dtype=np.uint8)  # zeros outside the image
        grey = torch.from_numpy(patch).to(torch.float32).div_(255.0)[None]
        return resize_square(grey, self.image_size)

    def load(self, index: int, epoch: int | None = None) -> dict | None:
        """Entry ``index`` as a sample (augmented for ``epoch``, default ``self.epoch``), or
        None when it is bad (recorded; in strict mode ``TrainError`` is raised)."""
        if index in self.bad_indices:
            if self.strict:
                raise TrainError(
                    self._message(next(b for b in self.bad_samples if b.index == index))
                )
            return None
        img = self._read(index)
        if img is None:
            return None
        entry = self.entries[index]
        epoch = self.epoch if epoch is None else epoch
        g = None
        if self.train:
            g = torch.Generator().manual_seed(sample_seed(self.seed, epoch, index))
        points = torch.from_numpy(entry.landmarks).to(torch.float32)
        points = torch.nan_to_num(points, nan=0.0, posinf=0.0, neginf=0.0)  # v = 0 ones only
        visible = torch.from_numpy(entry.visible).to(torch.float32)
        window = crop_window(
            points,
            visible,
            (img.height, img.width),
            self.margin,
            self.crop,
            self.jitter.scale,
            self.jitter.shift,
            g,
        )
        # crop in PIL (uint8, zeros outside the image), then resize in torch
        patch = img.crop((window.x0, window.y0, window.x0 + window.side, window.y0 + window.side))
        sample = {
            "image": resize_square(to_tensor(patch), self.image_size),
            "landmarks": crop_points(points, window, self.image_size),
            "visible": visible,
            "subject": torch.tensor(self.subjects[index], dtype=torch.int64),
            "index": torch.tensor(index, dtype=torch.int64),
            "skipped": torch.tensor(0, dtype=torch.int64),
        }
        if self.has_quality:
            trust = self._trust(index, img.size, window)
            if trust is None:
                return None
            sample["trust"] = trust
        if self.train:
            if float(torch.rand(1, generator=g)) < self.flip_prob:
                sample = hflip(sample, self.landmarks)
            if self.jitter.any_colour:
                sample = color_jitter(
                    sample,
                    self.jitter.brightness,
                    self.jitter.contrast,
                    self.jitter.saturation,
                    generator=g,
                )
        return sample

    def __getitem__(self, index: int) -> dict:
        """Sample ``index``, or (non-strict) the next good one if it is bad."""
        n = len(self.entries)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        index %= n
        for skipped in range(n):
            sample = self.load((index + skipped) % n)
            if sample is not None:
                sample["skipped"] = torch.tensor(skipped, dtype=torch.int64)
                return sample
        raise TrainError(f"no usable sample in {self._source()}: {self.summary()}")


def collate_samples(samples: Sequence[dict | None]) -> dict:
    """``torch.utils.data.default_collate`` for samples (or pairs), dropping any None.

    The DataLoader's ``collate_fn`` for these datasets. ``ManifestDataset`` never returns None
    (it replaces bad entries), so batches stay full; None can come from other datasets.

    Raises:
        TrainError: every sample of the batch was None.
    """
    kept = [s for s in samples if s is not None]
    if not kept:
        raise TrainError(
            f"all {len(samples)} samples of a batch were bad; check the data (dataset.summary())."
        )
    return torch.utils.data.default_collate(kept)


def collate_batch(samples: Sequence[dict | None]) -> dict:
    """:func:`collate_samples`, with the number of bad entries passed over summed into
    ``"bad_samples"`` (the samples' ``"skipped"`` counts, from every loader worker): the
    DataLoader's ``collate_fn`` of training and evaluation."""
    batch = collate_samples(samples)
    skipped = 0
    for part in (batch, batch.get("a"), batch.get("b")):
        if isinstance(part, dict) and "skipped" in part:
            skipped += int(part.pop("skipped").sum())
    batch["bad_samples"] = skipped
    return batch
