"""ManifestDataset: sample layout, consistency with the transforms, deterministic
augmentation, and bad inputs (each skipped and counted with a clear message, or refused in
strict mode) without stopping a run."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from stn_train.data.dataset import (
    DataWarning,
    Jitter,
    ManifestDataset,
    collate_samples,
    sample_seed,
)
from stn_train.data.images import load_image
from stn_train.data.manifest import ManifestEntry, write_manifest
from stn_train.data.transforms import FLIP_PERMUTATIONS, crop_resize
from stn_train.errors import TrainError

from tests.tolerances import TOL

pytestmark = pytest.mark.filterwarnings("ignore::stn_train.data.dataset.DataWarning")

RTOL, ATOL = TOL[np.float32]
CENTROID_TOL = 1e-3  # px, as in test_transforms
H, W = 37, 43


def _points(n=21, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(8, W - 9, n), rng.uniform(6, H - 7, n)], 1)


def _rgb(path, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(path)
    return path


def _entry(path, n=21, seed=0, subject=None):
    return ManifestEntry(path, _points(n, seed), np.ones(n), subject=subject)


def _quiet(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return ManifestDataset(*args, **kwargs)


@pytest.fixture
def good(tmp_path):
    return [_entry(_rgb(tmp_path / f"g{k}.png", k), seed=k) for k in range(3)]


# Each bad input: (kind, how to make its entry, the message's words).
def _missing(tmp_path):
    return _entry(tmp_path / "missing.jpg")


def _unreadable(tmp_path):
    (tmp_path / "junk.jpg").write_bytes(b"this is not a JPEG file")
    return _entry(tmp_path / "junk.jpg")


def _truncated(tmp_path):
    _rgb(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    return _entry(tmp_path / "cut.png")


def _wrong_count(tmp_path):
    return _entry(_rgb(tmp_path / "w.png"), n=68)


def _nan(tmp_path):
    e = _entry(_rgb(tmp_path / "n.png"))
    e.landmarks[4] = np.nan
    return e


BAD = {
    "missing": (
        _missing,
        "missing",
        r"missing\.jpg.*the image file does not exist; check its path",
    ),
    "unreadable": (
        _unreadable,
        "unreadable",
        r"cannot read image .*junk\.jpg .*re-encode it as JPEG or PNG",
    ),
    "truncated": (_truncated, "unreadable", r"cannot read image .*cut\.png"),
    "wrong_count": (
        _wrong_count,
        "landmark_count",
        r"it has 68 landmarks but the landmark set needs 21",
    ),
    "nan": (
        _nan,
        "nan_landmarks",
        r"visible landmark\(s\) 4 are NaN or infinite; give them "
        r"coordinates or mark them v = 0",
    ),
}


class TestSamples:
    def test_layout(self, tmp_path, good):
        ds = ManifestDataset(
            good + [_entry(good[0].image, subject="p")], image_size=24, train=False
        )
        s = ds[3]
        assert s["image"].shape == (3, 24, 24) and s["image"].dtype == torch.float32
        assert 0 <= s["image"].min() and s["image"].max() <= 1
        assert s["landmarks"].shape == (21, 2) and s["landmarks"].dtype == torch.float32
        assert s["visible"].shape == (21,) and s["visible"].dtype == torch.float32
        for key, value in (("subject", 0), ("index", 3), ("skipped", 0)):
            assert s[key].dtype == torch.int64 and s[key].shape == () and s[key] == value
        assert ds[0]["subject"] == -1 and ds.subject_names == ["p"]
        assert torch.equal(ds[1]["image"], ds[1]["image"])  # evaluation: nothing random

    def test_same_as_crop_resize(self, tmp_path, good):
        """The dataset crops in PIL then resizes; the result is crop_resize on the whole
        image (window reaching outside the image here: a margin of 0.6)."""
        ds = ManifestDataset(good, image_size=20, train=False, margin=0.6)
        image, _ = load_image(good[1].image)
        ref = crop_resize(
            {
                "image": image,
                "landmarks": torch.tensor(good[1].landmarks, dtype=torch.float32),
                "visible": torch.ones(21),
            },
            20,
            margin=0.6,
        )
        s = ds[1]
        torch.testing.assert_close(s["image"], ref["image"], rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(s["landmarks"], ref["landmarks"], rtol=RTOL, atol=ATOL)

    def test_spot_follows_landmark_through_crop_and_flip(self, tmp_path):
        img = np.zeros((H, W, 3), dtype=np.uint8)
        pts = _points()
        x, y = 13, 21
        pts[0] = (x, y)
        img[y, x] = 255
        Image.fromarray(img).save(tmp_path / "spot.png")
        e = ManifestEntry(tmp_path / "spot.png", pts, np.ones(21))
        ds = ManifestDataset(
            [e],
            image_size=20,
            train=True,
            flip_prob=1.0,
            jitter=Jitter(scale=0.2, shift=0.1, brightness=0, contrast=0, saturation=0),
        )
        s = ds[0]
        j = FLIP_PERMUTATIONS["aflw21"].index(0)  # the flip moved landmark 0 to index j != 0
        o = s["image"][0].double()
        ys, xs = torch.meshgrid(torch.arange(20), torch.arange(20), indexing="ij")
        centroid = torch.stack([(o * xs).sum(), (o * ys).sum()]) / o.sum()
        assert torch.allclose(centroid, s["landmarks"][j].double(), atol=CENTROID_TOL)

    def test_augmentation_is_deterministic_per_seed_epoch_index(self, good):
        a = _quiet(good, image_size=24, seed=3)
        b = _quiet(good, image_size=24, seed=3)
        assert torch.equal(a[1]["image"], b[1]["image"])
        first = a[1]["image"]
        a.set_epoch(1)
        assert not torch.equal(a[1]["image"], first)
        b.set_epoch(1)
        assert torch.equal(a[1]["image"], b[1]["image"])
        c = _quiet(good, image_size=24, seed=4)
        c.set_epoch(1)
        assert not torch.equal(c[1]["image"], a[1]["image"])

    def test_flips_happen_at_about_flip_prob(self, good):
        """The flipped sample's landmarks are the permuted mirror: detect flips by
        comparing against the un-flipped evaluation sample."""
        jit = Jitter.none()
        base = ManifestDataset(good, image_size=24, train=False)[0]["landmarks"]
        ds = ManifestDataset(good, image_size=24, train=True, flip_prob=0.5, jitter=jit)
        flips = 0
        for epoch in range(40):
            ds.set_epoch(epoch)
            lm = ds[0]["landmarks"]
            if not torch.allclose(lm, base):
                mirrored = base[list(FLIP_PERMUTATIONS["aflw21"])].clone()
                mirrored[:, 0] = 23 - mirrored[:, 0]
                torch.testing.assert_close(lm, mirrored, rtol=RTOL, atol=ATOL)
                flips += 1
        assert 10 <= flips <= 30

    def test_manifest_file(self, tmp_path, good):
        write_manifest(good, tmp_path / "m.jsonl")
        ds = ManifestDataset(tmp_path / "m.jsonl", image_size=16, train=False)
        assert len(ds) == 3 and ds.manifest_path == tmp_path / "m.jsonl"

    @pytest.mark.parametrize(
        "kwargs,match",
        [
            ({"landmarks": "face5"}, "unknown landmark set 'face5'"),
            ({"crop": "centre"}, "crop must be 'landmarks' or 'image'"),
            ({"non_rgb": "drop"}, "non_rgb must be 'convert' or 'skip'"),
            ({"image_size": 4}, "image_size must be an integer >= 8"),
            ({"flip_prob": 2.0}, "flip_prob must be in \\[0, 1\\]"),
        ],
    )
    def test_bad_arguments(self, good, kwargs, match):
        with pytest.raises(TrainError, match=match):
            ManifestDataset(good, **kwargs)


class TestBadInputs:
    @pytest.mark.parametrize("name", sorted(BAD))
    def test_skipped_counted_and_said(self, tmp_path, good, name):
        make, kind, words = BAD[name]
        entries = [good[0], make(tmp_path), good[1]]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = ManifestDataset(entries, image_size=16, train=False)
            s = ds[1]  # the bad entry: replaced by the next good one
        assert int(s["index"]) == 2 and int(s["skipped"]) == 1
        assert [b.kind for b in ds.bad_samples] == [kind] and ds.bad_indices == {1}
        assert ds.bad_samples[0].index == 1
        messages = [str(w.message) for w in caught if w.category is DataWarning]
        assert any(re.search(words, m) for m in messages), messages
        assert f"1 of 3 samples skipped (1 {kind.replace('_', ' ')})" in ds.summary()
        assert ds.good_indices.tolist() == [0, 2]

    @pytest.mark.parametrize("name", sorted(BAD))
    def test_strict_raises(self, tmp_path, good, name):
        make, _, words = BAD[name]
        write_manifest([good[0], make(tmp_path)], tmp_path / "m.jsonl")
        with pytest.raises(TrainError, match=words) as info:
            ds = ManifestDataset(tmp_path / "m.jsonl", image_size=16, train=False, strict=True)
            ds[1]
        if name not in ("unreadable", "truncated"):  # found when built: says where
            assert "m.jsonl, line 2" in str(info.value)

    def test_grey_and_rgba_converted_with_a_warning(self, tmp_path):
        grey = np.full((H, W), 90, dtype=np.uint8)
        Image.fromarray(grey, mode="L").save(tmp_path / "grey.png")
        rgba = np.zeros((H, W, 4), dtype=np.uint8)
        rgba[..., :3] = 200
        rgba[:, : W // 2, 3] = 255  # left half opaque, right half transparent
        Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
        entries = [_entry(tmp_path / "grey.png"), _entry(tmp_path / "rgba.png")]
        with pytest.warns(DataWarning) as caught:
            ds = ManifestDataset(entries, image_size=16, train=False, crop="image")
            g, a = ds[0], ds[1]
        text = " ".join(str(w.message) for w in caught)
        assert "grey.png is a greyscale image (mode L); converted to RGB" in text
        assert (
            "rgba.png is an image with an alpha channel (mode RGBA); converted to RGB "
            "(composited over black)" in text
        )
        assert len(ds.converted) == 2 and not ds.bad_samples
        assert "2 images converted to RGB" in ds.summary()
        # grey: 90 / 255 in all channels (inside the image part of the square crop)
        torch.testing.assert_close(
            g["image"][:, 8, 8], torch.full((3,), 90 / 255), rtol=RTOL, atol=ATOL
        )
        # RGBA: opaque left is 200, transparent right is black
        assert abs(float(a["image"][0, 8, 1]) - 200 / 255) < 1e-5
        assert float(a["image"][:, 8, 14].max()) == 0.0

    def test_grey_and_rgba_skipped_on_request(self, tmp_path, good):
        Image.new("L", (W, H), 9).save(tmp_path / "grey.png")
        Image.new("RGBA", (W, H), (1, 2, 3, 4)).save(tmp_path / "rgba.png")
        entries = [good[0], _entry(tmp_path / "grey.png"), _entry(tmp_path / "rgba.png")]
        ds = _quiet(entries, image_size=16, train=False, non_rgb="skip")
        assert int(ds[1]["index"]) == 0 and int(ds[1]["skipped"]) == 2
        assert [b.kind for b in ds.bad_samples] == ["non_rgb", "non_rgb"]
        assert "is a greyscale image (mode L), not RGB" in ds.bad_samples[0].reason
        strict = ManifestDataset(entries, image_size=16, train=False, non_rgb="skip", strict=True)
        with pytest.raises(TrainError, match="rgba.png is an image with an alpha channel"):
            strict[2]

    def test_long_run_keeps_batches_full(self, tmp_path, good):
        """Every kind of bad entry in one manifest: two epochs through a DataLoader with
        shuffling, no crash, every batch full, and the skips counted."""
        bad = [make(tmp_path) for make, _, _ in BAD.values()]
        entries = [good[0], bad[0], bad[1], good[1], bad[2], bad[3], good[2], bad[4]]
        ds = _quiet(entries, image_size=16, seed=1)
        loader = torch.utils.data.DataLoader(
            ds,
            batch_size=3,
            shuffle=True,
            collate_fn=collate_samples,
            drop_last=False,
            generator=torch.Generator().manual_seed(0),
        )
        skipped = 0
        for epoch in range(2):
            ds.set_epoch(epoch)
            sizes = []
            for batch in loader:
                sizes.append(batch["image"].shape[0])
                assert torch.isfinite(batch["landmarks"]).all()
                assert set(batch["index"].tolist()) <= {0, 3, 6}
                skipped += int(batch["skipped"].sum())
            assert sizes == [3, 3, 2]
        assert len(ds.bad_samples) == 5 and skipped >= 2 * 5
        assert "5 of 8 samples skipped" in ds.summary()

    def test_validate_images(self, tmp_path, good):
        ds = _quiet([good[0], _unreadable(tmp_path), good[1]], image_size=16)
        assert not ds.bad_samples  # decoding errors are found when loaded ...
        assert [b.kind for b in ds.validate_images()] == ["unreadable"]  # ... or now

    def test_nothing_usable(self, tmp_path):
        with pytest.raises(
            TrainError,
            match="no usable sample in the entries: 2 of 2 samples skipped \\(2 missing\\)",
        ):
            ManifestDataset([_missing(tmp_path), _missing(tmp_path)])
        ds = _quiet([_unreadable(tmp_path)], image_size=16)
        with pytest.raises(TrainError, match="no usable sample .* \\(1 unreadable\\)"):
            ds[0]

    def test_missing_landmarks_are_not_bad(self, tmp_path, good):
        """v = 0 with null coordinates is a missing annotation, not a bad sample."""
        e = good[0]
        e.landmarks[3] = np.nan
        e.visible[3] = 0
        s = ManifestDataset([e], image_size=16, train=False)[0]
        assert torch.isfinite(s["landmarks"]).all() and s["visible"][3] == 0


class TestCollate:
    def test_drops_none(self, good):
        ds = ManifestDataset(good, image_size=16, train=False)
        batch = collate_samples([ds[0], None, ds[2]])
        assert batch["image"].shape == (2, 3, 16, 16) and batch["index"].tolist() == [0, 2]
        with pytest.raises(TrainError, match="all 2 samples of a batch were bad"):
            collate_samples([None, None])


def test_sample_seeds_are_independent_streams():
    assert sample_seed(0, 1, 2) != sample_seed(0, 2, 1)
