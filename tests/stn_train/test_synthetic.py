"""SyntheticFaces: the sample contract, determinism per (seed, index), exact landmarks and
theta, visibility from the renderer, subjects, and the DataLoader's batched fetch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from stn_core import UVGridModel, axis_angle_to_matrix, project_theta
from stn_core.geometry import euler_to_matrix
from stn_core.renderer import render
from stn_train.data.synthetic import SyntheticFaces
from stn_train.errors import TrainError

from tests.stn_core.test_renderer import face_like_model
from tests.tolerances import FLOAT32_PIXELS_ATOL

SIZE = 64


@pytest.fixture(scope="module")
def model():
    return face_like_model(32)


@pytest.fixture(scope="module")
def colored():
    return face_like_model(32, color=True)


def _equal(a: dict, b: dict, keys=("landmarks", "visible", "theta", "subject", "index")):
    for k in keys:
        assert torch.equal(a[k], b[k]), k


class TestContract:
    def test_sample(self, model):
        ds = SyntheticFaces(model, 10, SIZE, seed=3)
        s = ds[4]
        assert len(ds) == 10
        assert s["image"].shape == (3, SIZE, SIZE) and s["image"].dtype == torch.float32
        assert 0 <= float(s["image"].min()) and float(s["image"].max()) <= 1
        assert s["landmarks"].shape == (21, 2) and s["landmarks"].dtype == torch.float32
        assert s["visible"].shape == (21,) and s["visible"].dtype == torch.float32
        assert set(s["visible"].unique().tolist()) <= {0.0, 1.0}
        assert s["subject"].dtype == torch.int64 and int(s["subject"]) == 4
        assert s["index"].dtype == torch.int64 and int(s["index"]) == 4
        assert s["theta"].shape == (6 + model.n_components,)
        assert s["theta"].dtype == torch.float32
        assert int(s["skipped"]) == 0

    def test_dataloader_batches(self, model):
        ds = SyntheticFaces(model, 10, SIZE, seed=3)
        loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=False)
        batch = next(iter(loader))
        assert batch["image"].shape == (4, 3, SIZE, SIZE)
        assert batch["landmarks"].shape == (4, 21, 2)
        assert batch["index"].tolist() == [0, 1, 2, 3]
        for i in (0, 3):
            _equal({k: v[i] for k, v in batch.items()}, ds[i])

    def test_rectangular_images(self, model):
        s = SyntheticFaces(model, 2, (48, 64), seed=0)[1]
        assert s["image"].shape == (3, 48, 64)

    def test_bad_arguments(self, model):
        with pytest.raises(TrainError, match="landmark set 'ibug68'"):
            SyntheticFaces(model, 4, SIZE, landmarks="ibug68")
        with pytest.raises(TrainError, match=">= 0"):
            SyntheticFaces(model, -1, SIZE)
        with pytest.raises(TrainError, match="images_per_subject"):
            SyntheticFaces(model, 4, SIZE, images_per_subject=0)
        with pytest.raises(IndexError):
            SyntheticFaces(model, 4, SIZE)[4]


class TestDeterminism:
    def test_same_seed_same_item(self, model):
        a = SyntheticFaces(model, 20, SIZE, seed=7)
        b = SyntheticFaces(model, 20, SIZE, seed=7)
        sa, sb = a[11], b[11]
        _equal(sa, sb)
        assert torch.equal(sa["image"], sb["image"])
        assert torch.equal(a[11]["image"], sa["image"])

    def test_other_seed_other_item(self, model):
        a = SyntheticFaces(model, 20, SIZE, seed=7)[11]
        b = SyntheticFaces(model, 20, SIZE, seed=8)[11]
        assert not torch.equal(a["theta"], b["theta"])
        assert (a["image"] - b["image"]).abs().mean() > 0.02

    def test_whatever_the_batch(self, model, colored):
        """An item rendered alone or in any batch: identical geometry (landmarks, visibility,
        theta, covered pixels), image equal up to float rounding of the shading."""
        for m in (model, colored):
            ds = SyntheticFaces(m, 40, SIZE, seed=1)
            batch = ds.render_batch([17, 3, 29, 5, 11])
            again = ds.render_batch([5, 0, 29, 33])
            for idx, pos in ((3, 1), (29, 2), (5, 3)):
                one = ds[idx]
                _equal({k: v[pos] for k, v in batch.items()}, one)
                torch.testing.assert_close(batch["image"][pos], one["image"], rtol=0, atol=1e-5)
            _equal({k: v[2] for k, v in again.items()}, ds[29])

    def test_items_differ(self, model):
        ds = SyntheticFaces(model, 20, SIZE, seed=1)
        b = ds.render_batch(range(8))
        assert len({tuple(t.tolist()) for t in b["theta"][:, :6].round(decimals=4)}) == 8


class TestGroundTruth:
    def test_theta_round_trip(self, model):
        """project_theta(theta) at the landmark vertices gives the landmarks."""
        ds = SyntheticFaces(model, 30, SIZE, seed=2)
        b = ds.render_batch(range(30))
        points, _ = project_theta(b["theta"].double(), model.mean.double(), model.basis.double())
        lm = model.landmarks["aflw21"]
        torch.testing.assert_close(points[:, lm].float(), b["landmarks"], rtol=0, atol=2e-3)

    def test_landmarks_in_image_and_on_the_face(self, model):
        """Landmarks inside the image, and every visible one on a covered pixel of the face
        (rendered again from theta without background)."""
        ds = SyntheticFaces(model, 24, SIZE, seed=4)
        b = ds.render_batch(range(24))
        lm = b["landmarks"]
        assert (lm >= 0).all() and (lm <= SIZE - 1).all()
        out = render(model, b["theta"], image_size=(SIZE, SIZE))
        vis = b["visible"] > 0
        assert vis.float().mean() > 0.6
        col = lm[..., 0].round().long()
        row = lm[..., 1].round().long()
        # A landmark on the outline (the ears) may have its nearest pixel centre just off the
        # face: count the 3 x 3 neighbourhood.
        near = torch.nn.functional.max_pool2d(out.mask.float(), 3, 1, 1)[:, 0] > 0
        on_face = near[torch.arange(24)[:, None], row, col]
        assert on_face[vis].all()
        exact = out.mask[:, 0][torch.arange(24)[:, None], row, col]
        assert exact[vis].float().mean() > 0.97
        torch.testing.assert_close(
            out.vertex_visible[:, model.landmarks["aflw21"]].float(), b["visible"]
        )

    def test_far_side_invisible_at_large_yaw(self, model):
        """Faces turned by more than 65 degrees hide the ear landmark on the far side (its
        normal is about 30 degrees from the view direction in a frontal view): for positive
        yaw (towards +x) landmark 16 (the +x side), for negative yaw landmark 12."""
        ds = SyntheticFaces(model, 100, SIZE, seed=5, yaw=80, pitch=0, roll=0)
        b = ds.render_batch(range(100))
        yaw = torch.tensor([math.degrees(ds.draw(i)["r"][1]) for i in range(100)])
        right, left = yaw > 65, yaw < -65
        assert right.sum() >= 5 and left.sum() >= 5
        assert (b["visible"][right, 16] == 0).all() and (b["visible"][right, 12] == 1).all()
        assert (b["visible"][left, 12] == 0).all() and (b["visible"][left, 16] == 1).all()
        frontal = yaw.abs() < 15
        assert b["visible"][frontal].mean() > 0.9

    def test_pose_ranges(self, model):
        ds = SyntheticFaces(model, 200, SIZE, seed=6, yaw=30, pitch=10, roll=5)
        for i in range(0, 200, 7):
            d = ds.draw(i)
            r = euler_to_matrix(torch.zeros(3))
            assert r.shape == (3, 3)
            rot = axis_angle_to_matrix(torch.tensor(d["r"]))
            np.testing.assert_allclose(rot.numpy(), d["rotation"], atol=1e-12)
            angle = math.degrees(np.linalg.norm(d["r"]))
            assert angle <= math.sqrt(30**2 + 10**2 + 5**2) + 1e-6
            assert abs(d["log_s"] - ds.log_s0) <= ds.scale_jitter + 1e-12

    def test_frontal_face_at_the_start_pose(self, model):
        """With no pose, shift or scale jitter, theta's pose part is the localiser's start
        pose: r = 0, t at the image centre, log_s = initial_log_scale."""
        ds = SyntheticFaces(model, 3, SIZE, seed=0, yaw=0, pitch=0, roll=0, shift=0, scale_jitter=0)
        theta = ds[1]["theta"]
        expected = torch.tensor([0, 0, 0, (SIZE - 1) / 2, (SIZE - 1) / 2, ds.log_s0])
        torch.testing.assert_close(theta[:6], expected.float())


class TestCropFraming:
    """``margin``: each face framed like a crop around its landmarks (crop_window's rule)."""

    def test_landmark_box_centred_and_sized(self, model):
        ds = SyntheticFaces(model, 12, SIZE, seed=8, margin=0.4, shift=0, scale_jitter=0)
        lm = ds.render_batch(range(12))["landmarks"].double()
        lo, hi = lm.amin(1), lm.amax(1)
        centre = torch.full((12, 2), (SIZE - 1) / 2, dtype=torch.float64)
        torch.testing.assert_close((lo + hi) / 2, centre, rtol=0, atol=FLOAT32_PIXELS_ATOL)
        side = (hi - lo).amax(1) * (1 + 2 * 0.4)
        full = torch.full((12,), float(SIZE), dtype=torch.float64)
        torch.testing.assert_close(side, full, rtol=0, atol=FLOAT32_PIXELS_ATOL)

    def test_top_anchor(self, model):
        """``anchor="top"``: the square of the box's larger side, aligned with the box's top,
        is centred: the box's top edge at the same height whatever the box's height."""
        margin = 0.4
        ds = SyntheticFaces(
            model, 12, SIZE, seed=8, margin=margin, anchor="top", shift=0, scale_jitter=0
        )
        lm = ds.render_batch(range(12))["landmarks"].double()
        lo, hi = lm.amin(1), lm.amax(1)
        top = (SIZE - 1) / 2 - SIZE / (2 * (1 + 2 * margin))
        full = torch.full((12,), top, dtype=torch.float64)
        torch.testing.assert_close(lo[:, 1], full, rtol=0, atol=FLOAT32_PIXELS_ATOL)
        mid_x = torch.full((12,), (SIZE - 1) / 2, dtype=torch.float64)
        torch.testing.assert_close((lo + hi)[:, 0] / 2, mid_x, rtol=0, atol=FLOAT32_PIXELS_ATOL)
        assert ((hi - lo)[:, 1] < (hi - lo)[:, 0]).any()  # some boxes are wider than high

    def test_jitter_ranges(self, model):
        ds = SyntheticFaces(model, 40, SIZE, seed=9, margin=0.25, shift=0.05, scale_jitter=0.1)
        lm = ds.render_batch(range(40))["landmarks"].double()
        lo, hi = lm.amin(1), lm.amax(1)
        offset = ((lo + hi) / 2 - (SIZE - 1) / 2).abs()
        assert offset.max() <= 0.05 * SIZE + FLOAT32_PIXELS_ATOL and offset.max() > 0.02 * SIZE
        ratio = ((hi - lo).amax(1) * 1.5 / SIZE).log().abs()
        assert ratio.max() <= 0.1 + 1e-4 and ratio.max() > 0.05

    def test_same_draws_as_the_default_framing(self, model):
        """Only the scale and translation differ: pose, shape, colour and light are the
        default framing's, and an item is the same alone or in a batch."""
        a = SyntheticFaces(model, 10, SIZE, seed=2)
        b = SyntheticFaces(model, 10, SIZE, seed=2, margin=0.3)
        for i in (0, 7):
            da, db = a.draw(i), b.draw(i)
            for key in ("r", "alpha", "gain", "light_dir", "ambient"):
                np.testing.assert_array_equal(da[key], db[key])
            assert not np.array_equal(da["t"], db["t"])
        batch = b.render_batch([7, 2, 5])
        _equal({k: v[0] for k, v in batch.items()}, b[7])

    @pytest.mark.parametrize("margin", [-0.1, float("nan")])
    def test_bad_margin(self, model, margin):
        with pytest.raises(TrainError, match="margin"):
            SyntheticFaces(model, 2, SIZE, margin=margin)

    def test_bad_anchor(self, model):
        with pytest.raises(TrainError, match="anchor"):
            SyntheticFaces(model, 2, SIZE, margin=0.2, anchor="bottom")


class TestSubjects:
    def test_each_face_its_own_subject(self, model):
        ds = SyntheticFaces(model, 6, SIZE)
        assert ds.subjects.tolist() == list(range(6))

    def test_images_per_subject_share_identity(self, colored):
        ds = SyntheticFaces(colored, 6, SIZE, seed=9, images_per_subject=3)
        assert ds.subjects.tolist() == [0, 0, 0, 1, 1, 1]
        d = [ds.draw(i) for i in range(6)]
        ident = ds.identity
        np.testing.assert_array_equal(d[0]["alpha"][ident], d[2]["alpha"][ident])
        np.testing.assert_array_equal(d[0]["color"], d[1]["color"])
        assert not np.array_equal(d[0]["alpha"][~ident], d[1]["alpha"][~ident])
        assert not np.array_equal(d[0]["alpha"][ident], d[3]["alpha"][ident])
        assert int(ds[4]["subject"]) == 1


def test_model_without_colour_gets_painted_features(model):
    """No colour model: brows, eyes and lips are painted (the albedo is not uniform)."""
    ds = SyntheticFaces(model, 2, SIZE)
    weights, shade = ds.features
    assert weights.shape == (4, model.n_vertices)
    lm = model.landmarks["aflw21"]
    assert weights[0, lm[1]] > 0.5  # brow centre
    assert weights[3, lm[18]] > 0.5  # mouth centre
    assert weights[:, lm[20]].max() < 0.1  # chin


class TestHair:
    """Models without colour get hair: painted on the scalp, a mass around the upper head."""

    def test_never_on_the_face_nor_the_ears(self, model):
        ds = SyntheticFaces(model, 2, SIZE)
        (field, _), _ = ds.hair_field, ds.hair_frame
        lm = model.landmarks["aflw21"]
        lowest_hairline = 25.0  # mm above the brows, the lowest drawn (_hair)
        face = lm[[0, 5, 6, 8, 9, 11, 13, 14, 15, 17, 18, 19, 20]]  # brows, eyes, nose, mouth
        assert field[face].max() < lowest_hairline
        assert torch.isinf(field[lm[[12, 16]]]).all() and (field[lm[[12, 16]]] < 0).all()
        top = torch.arange(model.res)  # row 0: the top of the head
        assert field[top].max() > 65.0  # above the highest hairline: hair when there is any

    def test_mass_over_the_background_only(self, model, monkeypatch):
        ds = SyntheticFaces(model, 12, SIZE, seed=3)
        with_mass = ds.render_batch(range(12))
        monkeypatch.setattr(ds, "_add_hair_mass", lambda image, *args: image)
        without = ds.render_batch(range(12))
        out = render(model, with_mass["theta"], image_size=(SIZE, SIZE))
        changed = (with_mass["image"] - without["image"]).abs().amax(1) > 0
        assert changed.any()
        assert not (changed & out.mask[:, 0]).any()
        _equal(with_mass, without)  # landmarks, visibility and theta do not see the hair

    def test_some_subjects_have_hair_some_not(self, model):
        ds = SyntheticFaces(model, 60, SIZE, seed=4)
        hair = [ds.draw(i)["hair"] for i in range(60)]
        assert 0 < sum(h is None for h in hair) < 20
        lines = [h["line"] for h in hair if h is not None]
        assert 25.0 <= min(lines) and max(lines) <= 65.0

    def test_colour_models_have_none(self, colored):
        ds = SyntheticFaces(colored, 4, SIZE)
        assert ds.hair_field is None and ds.draw(1)["hair"] is None


def test_refuses_what_is_not_a_model():
    with pytest.raises(TrainError, match="UVGridModel"):
        SyntheticFaces("grid.h5", 3, SIZE)


def test_float64_model_is_used_in_float32():
    ds = SyntheticFaces(face_like_model(16, dtype=torch.float64), 2, 32)
    assert ds[0]["image"].dtype == torch.float32
    assert isinstance(ds.model, UVGridModel) and ds.model.dtype == torch.float32
