"""Flip permutations (checked against real landmark geometry), hflip, colour jitter and the
crop / resize with its landmark mapping."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from stn_train.data.transforms import (
    FLIP_PERMUTATIONS,
    CropWindow,
    color_jitter,
    crop_points,
    crop_resize,
    crop_window,
    flip_permutation,
    hflip,
)
from stn_train.errors import TrainError

from tests.conftest import reference_file
from tests.tolerances import TOL

RTOL, ATOL = TOL[np.float32]
# A one-pixel spot's intensity centroid after resampling, against the mapped landmark (px):
# shrinking, the antialiasing tent spans whole output pixels and reproduces linear functions
# exactly; enlarging, the bilinear tent is sampled at a spacing of 1 / scale, exact for
# integer scales and within 1e-3 px at the scale 2.44 used here (0.04 px at 1.55).
CENTROID_TOL = 1e-3

ISSUE_AFLW21 = [5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 16, 15, 14, 13, 12, 19, 18, 17, 20]


def _anl(relpath: str) -> np.ndarray:
    """0-based indices from a 1-based .anl file."""
    text = reference_file(relpath).read_text()
    return np.array([int(t) for t in text.split() if not t.startswith("%") and t.isdigit()]) - 1


def _anl_lines(relpath: str) -> np.ndarray:
    lines = reference_file(relpath).read_text().splitlines()
    return np.array([int(ln) for ln in lines if ln.strip() and not ln.startswith("%")]) - 1


def _sample(h=23, w=31, n=21, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.rand(3, h, w, generator=g),
        "landmarks": torch.rand(n, 2, generator=g) * torch.tensor([w - 1.0, h - 1.0]),
        "visible": (torch.rand(n, generator=g) > 0.2).float(),
        "subject": torch.tensor(3),
        "index": torch.tensor(7),
    }


class TestFlipPermutations:
    def test_aflw21_is_the_issues(self):
        assert list(FLIP_PERMUTATIONS["aflw21"]) == ISSUE_AFLW21

    @pytest.mark.parametrize("name,n", [("aflw21", 21), ("ibug68", 68)])
    def test_involution(self, name, n):
        p = np.array(FLIP_PERMUTATIONS[name])
        assert sorted(p.tolist()) == list(range(n))
        assert np.array_equal(p[p], np.arange(n))

    def test_ibug68_midline_stays(self):
        p = FLIP_PERMUTATIONS["ibug68"]
        fixed = [i for i in range(68) if p[i] == i]
        assert fixed == [8, 27, 28, 29, 30, 33, 51, 57, 62, 66]

    def test_explicit_and_bad(self):
        assert flip_permutation([1, 0, 2]).tolist() == [1, 0, 2]
        with pytest.raises(TrainError, match="exactly once"):
            flip_permutation([0, 0, 1])
        with pytest.raises(TrainError, match="unknown landmark set 'x'"):
            flip_permutation("x")

    @pytest.mark.reference
    @pytest.mark.parametrize(
        "name,file", [("aflw21", "Landmarks21_112.anl"), ("ibug68", "Landmarks68_112.anl")]
    )
    def test_grid_model_mirror(self, name, file):
        """On the original's 112 x 112 grid (symmetric about its middle column), landmark
        p[i] sits at the mirrored column of landmark i, on the same row (within the
        annotation's few-cell slack); the identity is far off."""
        k = _anl_lines(f"3dmmasstn/landmarks/{file}")
        row, col = k // 112, k % 112
        p = np.array(FLIP_PERMUTATIONS[name])

        def worst(perm):
            return np.hypot(col[perm] - (111 - col), row[perm] - row).max()

        assert worst(p) <= 3.0, worst(p)
        assert worst(np.arange(len(p))) > 30

    @pytest.mark.reference
    def test_ibug68_on_the_surrey_model(self):
        """The Surrey model's mean shape is near mirror-symmetric about x = 0: mirroring
        landmark i's vertex lands within 1 mm of landmark p[i]'s (all 2 x 2 pairs mapped;
        ibug_to_sfm.txt's vertex indices are 0-based, checked here: 1-based is far off)."""
        shape = np.load(reference_file("sfm/sfm_shape_3448.npz"))
        verts = shape["mean"].reshape(-1, 3).astype(np.float64)
        text = reference_file("sfm/ibug_to_sfm.txt").read_text()
        mapping = {int(a) - 1: int(b) for a, b in re.findall(r"^\s*(\d+)\s*=\s*(\d+)", text, re.M)}
        assert len(mapping) >= 40
        p = FLIP_PERMUTATIONS["ibug68"]
        mirror = np.array([-1.0, 1.0, 1.0])

        def distances(perm, base=0):
            return np.array(
                [
                    np.linalg.norm(verts[mapping[perm[i]] - base] - verts[v - base] * mirror)
                    for i, v in mapping.items()
                    if perm[i] in mapping
                ]
            )

        d = distances(p)
        assert len(d) == len(mapping) and d.max() < 1.0, d.max()
        assert distances(list(range(68))).max() > 30
        assert distances(p, base=1).max() > 30

    @pytest.mark.reference
    def test_aflw21_on_real_photographs(self):
        """The original's six demo photographs (near-frontal): mirroring the landmarks about
        the face's best vertical axis and permuting gives back the landmarks to a few
        pixels, several times closer than without the permutation."""
        import scipy.io as sio

        d = sio.loadmat(reference_file("3dmmasstn/demodata.mat"))
        labels = np.transpose(d["Labels"][0], (2, 1, 0)).astype(np.float64)
        p = np.array(FLIP_PERMUTATIONS["aflw21"])

        def rms(q, perm):
            m = q[perm].copy()
            axis = (q[:, 0] + m[:, 0]).mean() / 2
            m[:, 0] = 2 * axis - m[:, 0]
            return np.sqrt(((m - q) ** 2).sum(1).mean())

        for q in labels:  # y up or down does not matter for a left-right mirror
            assert rms(q, p) < 0.35 * rms(q, np.arange(21)), (rms(q, p), rms(q, np.arange(21)))


class TestHflip:
    def test_twice_is_identity(self):
        s = _sample()
        twice = hflip(hflip(s, "aflw21"), "aflw21")
        assert torch.equal(twice["image"], s["image"])
        torch.testing.assert_close(twice["landmarks"], s["landmarks"], rtol=RTOL, atol=ATOL)
        assert torch.equal(twice["visible"], s["visible"])
        assert twice["subject"] == 3 and twice["index"] == 7

    def test_pixel_centres(self):
        """A bright pixel at landmark i lands at column W - 1 - x, where the flipped set
        puts landmark p[i]."""
        s = _sample(h=9, w=12, n=21)
        s["image"].zero_()
        x, y = 2, 5
        s["image"][:, y, x] = 1.0
        s["landmarks"][0] = torch.tensor([x, y], dtype=torch.float32)
        f = hflip(s, "aflw21")
        assert f["image"][0, y, 12 - 1 - x] == 1.0 and f["image"].sum() == 3.0
        j = FLIP_PERMUTATIONS["aflw21"].index(0)
        assert f["landmarks"][j].tolist() == [12 - 1 - x, y]
        assert f["visible"][j] == s["visible"][0]
        assert torch.equal(
            f["landmarks"][:, 0], 11 - s["landmarks"][list(FLIP_PERMUTATIONS["aflw21"]), 0]
        )

    def test_input_unchanged_and_theta_dropped(self):
        s = _sample()
        s["theta"] = torch.zeros(8)
        before = s["landmarks"].clone()
        f = hflip(s)
        assert "theta" not in f and "theta" in s
        assert torch.equal(s["landmarks"], before)

    def test_wrong_count(self):
        with pytest.raises(TrainError, match="21 landmarks but the flip permutation has 68"):
            hflip(_sample(n=21), "ibug68")


class TestColorJitter:
    def test_deterministic_given_a_generator(self):
        s = _sample()
        a = color_jitter(s, generator=torch.Generator().manual_seed(5))
        b = color_jitter(s, generator=torch.Generator().manual_seed(5))
        c = color_jitter(s, generator=torch.Generator().manual_seed(6))
        assert torch.equal(a["image"], b["image"])
        assert not torch.equal(a["image"], c["image"])
        assert a["image"].min() >= 0 and a["image"].max() <= 1
        assert torch.equal(a["landmarks"], s["landmarks"])

    def test_zero_strength_is_identity(self):
        s = _sample()
        out = color_jitter(s, 0.0, 0.0, 0.0, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(out["image"], s["image"], rtol=RTOL, atol=ATOL)

    def test_grey_stays_grey_and_brightness_scales(self):
        g = torch.Generator().manual_seed(0)
        grey = (0.1 + 0.4 * torch.rand(1, 8, 8, generator=g)).expand(3, 8, 8)
        out = color_jitter(
            {"image": grey},
            brightness=0.5,
            contrast=0.0,
            saturation=0.9,
            generator=torch.Generator().manual_seed(2),
        )["image"]
        torch.testing.assert_close(out[0], out[1], rtol=RTOL, atol=ATOL)
        ratio = out / grey
        assert ratio.max() - ratio.min() < 1e-5 and 0.5 <= float(ratio.mean()) <= 1.5


def _spot_centroid(image: torch.Tensor) -> torch.Tensor:
    o = image[0].double()
    ys, xs = torch.meshgrid(torch.arange(o.shape[0]), torch.arange(o.shape[1]), indexing="ij")
    return torch.stack([(o * xs).sum(), (o * ys).sum()]) / o.sum()


class TestCropResize:
    @pytest.mark.parametrize(
        "h,w,size,margin", [(83, 97, 32, 0.25), (40, 41, 37, 0.6), (37, 43, 100, 0.1)]
    )
    def test_spot_follows_its_landmark(self, h, w, size, margin):
        """A bright pixel at a landmark: after the crop and resize (shrinking or enlarging,
        window partly outside the image), its intensity centroid is the mapped landmark."""
        image = torch.zeros(3, h, w)
        x, y = w // 2 - 3, h // 2 + 2
        image[:, y, x] = 1.0
        lm = torch.tensor([[x, y], [4.0, 6.0], [w - 5.0, h - 3.0]])
        s = {"image": image, "landmarks": lm, "visible": torch.ones(3)}
        out = crop_resize(s, size, margin=margin)
        assert out["image"].shape == (3, size, size)
        c = _spot_centroid(out["image"])
        assert torch.allclose(c, out["landmarks"][0].double(), atol=CENTROID_TOL), (
            c,
            out["landmarks"],
        )
        # the test can tell conventions apart: mapping corners (x - x0) * scale, without the
        # half-pixel terms, is 0.2 to 0.7 px off at these scales
        win = crop_window(lm, torch.ones(3), (h, w), margin)
        corners = (lm[0] - torch.tensor([win.x0, win.y0])) * size / win.side
        assert (corners.double() - c).abs().max() > 100 * CENTROID_TOL

    def test_window_and_mapping_formula(self):
        """Independent arithmetic: box 10..50 x 20..40, margin 0.25 -> side 60 around
        (30, 30); 60 whole pixels cannot be centred on a pixel centre: rounding half up
        takes pixels 1..60 (centre 30.5). x' = (x - x0 + 0.5) * size / side - 0.5, so the
        window's outer edges -> -0.5 and size - 0.5."""
        lm = torch.tensor([[10.0, 20.0], [50.0, 40.0]])
        win = crop_window(lm, torch.ones(2), (100, 100), margin=0.25)
        assert win == CropWindow(1, 1, 60)
        out = crop_points(torch.tensor([[10.0, 20.0], [0.5, 60.5]]), win, 30)
        torch.testing.assert_close(out, torch.tensor([[4.25, 9.25], [-0.5, 29.5]]))
        odd = crop_window(lm, torch.ones(2), (100, 100), margin=0.2625)  # side 61
        assert odd == CropWindow(0, 0, 61)

    def test_outside_is_zero_and_invisible_ignored(self):
        image = torch.ones(3, 20, 20)
        lm = torch.tensor([[0.0, 0.0], [4.0, 4.0], [100.0, 100.0]])
        s = {"image": image, "landmarks": lm, "visible": torch.tensor([1.0, 1.0, 0.0])}
        win = crop_window(lm, s["visible"], (20, 20), margin=0.5)
        assert win == CropWindow(-1, -1, 8)  # box 0..4, centre 2, side 8: pixels -1..6
        out = crop_resize(s, 8, margin=0.5)
        assert out["image"][:, :1].abs().max() == 0 and out["image"][:, :, :1].abs().max() == 0
        assert out["image"][:, 1:, 1:].min() == 1

    def test_image_box(self):
        s = {
            "image": torch.rand(3, 10, 16),
            "landmarks": torch.zeros(2, 2),
            "visible": torch.zeros(2),
        }
        win = crop_window(s["landmarks"], s["visible"], (10, 16), box="image")
        assert win == CropWindow(0, -3, 16)

    def test_jitter_deterministic_and_bounded(self):
        lm = torch.tensor([[30.0, 30.0], [70.0, 70.0]])
        wins = [
            crop_window(
                lm,
                torch.ones(2),
                (100, 100),
                0.25,
                "landmarks",
                0.2,
                0.1,
                torch.Generator().manual_seed(s),
            )
            for s in (1, 1, 2)
        ]
        assert wins[0] == wins[1] and wins[0] != wins[2]
        for w in wins:
            assert 48 * 0.8 - 1 <= w.side <= 60 * 1.2 + 1
            centre = w.x0 + (w.side - 1) / 2
            assert abs(centre - 50) <= 0.1 * w.side / 0.8 + 1

    def test_no_face_box(self):
        s = {
            "image": torch.rand(3, 10, 10),
            "landmarks": torch.ones(3, 2),
            "visible": torch.tensor([1.0, 0.0, 0.0]),
        }
        with pytest.raises(TrainError, match="fewer than two visible landmarks"):
            crop_resize(s, 8)
        s["visible"] = torch.ones(3)
        with pytest.raises(TrainError, match="all at one point"):
            crop_resize(s, 8)
