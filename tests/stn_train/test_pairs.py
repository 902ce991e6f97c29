"""SiamesePairs: two images of one subject when ids exist, else the image and its mirror."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from stn_train.data.dataset import ManifestDataset, collate_samples
from stn_train.data.manifest import ManifestEntry
from stn_train.data.pairs import SiamesePairs
from stn_train.data.transforms import hflip
from stn_train.errors import TrainError

pytestmark = pytest.mark.filterwarnings("ignore::stn_train.data.dataset.DataWarning")

H, W = 29, 31


def _entries(tmp_path, subjects):
    rng = np.random.default_rng(0)
    out = []
    for k, subject in enumerate(subjects):
        path = tmp_path / f"{k}.png"
        if subject != "missing":
            Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(path)
        pts = np.stack([rng.uniform(5, W - 6, 21), rng.uniform(5, H - 6, 21)], 1)
        out.append(
            ManifestEntry(
                path, pts, np.ones(21), subject=None if subject in (None, "missing") else subject
            )
        )
    return out


class TestSubjectPairs:
    def test_same_subject_other_image(self, tmp_path):
        subjects = ["a", "b", "a", "c", "b", "a"]
        ds = ManifestDataset(_entries(tmp_path, subjects), image_size=16, seed=2)
        pairs = SiamesePairs(ds)
        for i in range(len(ds)):
            p = pairs[i]
            ia, ib = int(p["a"]["index"]), int(p["b"]["index"])
            assert ia == i
            if subjects[i] == "c":  # alone: its mirror
                assert bool(p["mirrored"]) and ib == i
            else:
                assert not bool(p["mirrored"]) and ib != i and subjects[ib] == subjects[i]
                assert int(p["a"]["subject"]) == int(p["b"]["subject"]) >= 0

    def test_deterministic_per_seed_epoch_index(self, tmp_path):
        ds = ManifestDataset(_entries(tmp_path, ["a"] * 6), image_size=16)

        def partners(seed, epoch):
            return [SiamesePairs(ds, seed=seed).partner(i, 0, epoch) for i in range(6)]

        assert partners(0, 0) == partners(0, 0)
        assert partners(0, 0) != partners(0, 1) or partners(0, 0) != partners(0, 2)
        assert partners(0, 0) != partners(1, 0) or partners(0, 0) != partners(2, 0)
        pairs = SiamesePairs(ds, seed=0)
        pairs.set_epoch(3)
        assert ds.epoch == 3
        assert [int(pairs[i]["b"]["index"]) for i in range(6)] == partners(0, 3)

    def test_bad_partner_not_chosen(self, tmp_path):
        """Subject "a" has a missing image: its other images pair with each other."""
        entries = _entries(tmp_path, ["a", "missing", "a", "a"])
        entries[1].subject = "a"
        ds = ManifestDataset(entries, image_size=16)
        pairs = SiamesePairs(ds)
        for i in (0, 2, 3):
            for epoch in range(5):
                assert pairs.partner(i, int(ds.subjects[i]), epoch) in {0, 2, 3} - {i}

    def test_subject_mode_needs_ids(self, tmp_path):
        ds = ManifestDataset(_entries(tmp_path, [None, None]), image_size=16)
        with pytest.raises(TrainError, match="pair mode 'subject' needs subject ids"):
            SiamesePairs(ds, mode="subject")
        with pytest.raises(TrainError, match="pair mode must be one of"):
            SiamesePairs(ds, mode="triplet")


class TestMirrorPairs:
    def test_without_subjects_b_is_the_mirror(self, tmp_path):
        ds = ManifestDataset(_entries(tmp_path, [None, None, None]), image_size=16)
        pairs = SiamesePairs(ds)
        p = pairs[1]
        assert bool(p["mirrored"])
        expected = hflip(p["a"], "aflw21")
        for key in ("image", "landmarks", "visible", "index", "subject"):
            assert torch.equal(p["b"][key], expected[key])
        assert not torch.equal(p["b"]["image"], p["a"]["image"])

    def test_mirror_mode_ignores_subjects(self, tmp_path):
        ds = ManifestDataset(_entries(tmp_path, ["a", "a"]), image_size=16)
        assert bool(SiamesePairs(ds, mode="mirror")[0]["mirrored"])

    def test_generic_dataset(self):
        """Any dataset of sample dicts (e.g. the synthetic one) pairs with its mirror; the
        landmark set is its ``landmarks`` name or the argument."""

        class Plain(torch.utils.data.Dataset):
            def __len__(self):
                return 2

            def __getitem__(self, i):
                return {
                    "image": torch.rand(3, 8, 8),
                    "landmarks": torch.rand(68, 2) * 7,
                    "visible": torch.ones(68),
                    "subject": torch.tensor(-1),
                    "index": torch.tensor(i),
                }

        with pytest.raises(TrainError, match="pass landmarks='aflw21' or 'ibug68'"):
            SiamesePairs(Plain())
        p = SiamesePairs(Plain(), landmarks="ibug68")[1]
        assert bool(p["mirrored"]) and p["b"]["landmarks"].shape == (68, 2)

    def test_collate(self, tmp_path):
        ds = ManifestDataset(_entries(tmp_path, ["a", "a", None]), image_size=16)
        pairs = SiamesePairs(ds)
        batch = collate_samples([pairs[i] for i in range(3)])
        assert batch["a"]["image"].shape == (3, 3, 16, 16)
        assert batch["b"]["landmarks"].shape == (3, 21, 2)
        assert batch["mirrored"].tolist() == [False, False, True]
