"""``stn-train synthesize``: photo textures in UV, their mirror and model completion, new views
with exact annotations, skipped faces, bad inputs, and a training run on the output."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from stn_core.fitting import fit_image
from stn_core.renderer import render
from stn_train.data.manifest import read_manifest
from stn_train.errors import TrainError
from stn_train.synthesize import ViewRanges, synthesize_faces
from stn_train.synthesize.background import fill_holes, grow_mask
from stn_train.synthesize.texture import complete_texture, face_texture, mirror_index
from stn_train.synthesize.views import render_view

from tests.stn_train.test_cli import assert_user_error
from tests.stn_train.train_helpers import (
    grid_model_file,
    load_model,
    render_faces,
    small_run_config,
    write_manifest_of_renders,
)

SIZE = 96
PER_FACE = 3
NOISE = 0.01
# Landmarks written in float64 from theta; the check below recomputes them in numpy.
PROJECTION_PX = 1e-6

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    return load_model()


@pytest.fixture(scope="module")
def faces(tmp_path_factory, model):
    """A manifest of three rendered faces (colour model, SH light, yaw up to 29 degrees)."""
    return write_manifest_of_renders(tmp_path_factory.mktemp("faces"), model, 3, SIZE, seed=3)


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory, faces):
    out = tmp_path_factory.mktemp("synth") / "out"
    result = synthesize_faces([faces], grid_model_file(), out, PER_FACE, seed=7, device="cpu")
    return result, out


def _rodrigues(r: np.ndarray) -> np.ndarray:
    a = np.linalg.norm(r)
    if a == 0:
        return np.eye(3)
    k = r / a
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(a) * kx + (1 - np.cos(a)) * kx @ kx


class TestRerendering:
    def test_at_the_fitted_parameters_reproduces_the_photo_within_the_fit_residual(self, model):
        """Re-rendered with its own texture at the fitted theta and lighting, each face
        matches its photo (the face region taken from the photo) at least as well as the
        photometric fit's residual."""
        f = render_faces(model, 3, SIZE, seed=3)
        g = torch.Generator().manual_seed(0)
        images = (f["images"] + NOISE * torch.randn(f["images"].shape, generator=g)).clamp(0, 1)
        fit = fit_image(model, images, f["landmarks"], f["visible"])
        for j in range(3):
            tex = face_texture(model, images[j], fit.theta[j], fit.sh[j], fit.albedo[j])
            none = torch.zeros(SIZE, SIZE, dtype=torch.bool)
            view = render_view(
                model, fit.theta[j], fit.sh[j], tex.albedo, tex.model, images[j], none
            )
            region = view.face & ~view.invented
            assert int(region.sum()) > 0.9 * int(view.face.sum()) > 1000
            rms = float((view.image - images[j])[:, region].pow(2).mean().sqrt())
            residual = float(fit.photometric_rms[j])
            assert rms <= residual, (j, rms, residual)
            # And no worse than the fitted model itself drawn over the photo.
            drawn = render(
                model,
                fit.theta[j : j + 1],
                fit.albedo[j : j + 1],
                (SIZE, SIZE),
                sh=fit.sh[j : j + 1],
                background=images[j : j + 1],
            ).image[0]
            model_rms = float((drawn - images[j])[:, region].pow(2).mean().sqrt())
            assert rms <= model_rms, (j, rms, model_rms)


class TestMirrorCompletion:
    def test_mirror_index_is_the_flipped_grid(self):
        for res in (1, 2, 5, 32):
            expect = torch.arange(res * res).reshape(res, res).flip(-1).reshape(-1)
            assert torch.equal(mirror_index(res), expect)

    def test_fills_exactly_symmetrically_and_weights_sum_to_one(self):
        res, n = 7, 49
        g = torch.Generator().manual_seed(1)
        sampled = torch.rand(n, 3, generator=g, dtype=torch.float64)
        fallback = torch.rand(n, 3, generator=g, dtype=torch.float64)
        # Left columns unseen, right columns fully seen, the middle partly.
        col = torch.arange(n) % res
        observed = torch.where(col < 3, 0.0, torch.where(col > 3, 1.0, 0.4)).double()
        inside = torch.ones(n, dtype=torch.bool)
        inside[0] = False  # row 0, col 0: its partner (col 6) fills nothing off the face
        albedo, w, mirrored, model_w = complete_texture(sampled, observed, fallback, inside, res)
        m = torch.arange(n).reshape(res, res).flip(-1).reshape(-1)
        torch.testing.assert_close(
            (w + mirrored + model_w)[inside], torch.ones(int(inside.sum()), dtype=torch.float64)
        )
        filled = inside & (w == 0) & (mirrored == 1)
        assert int(filled.sum()) == 3 * res - 1
        assert torch.equal(albedo[filled], sampled[m[filled]])
        assert torch.equal(albedo[filled], albedo[m[filled]])  # exactly symmetric
        assert torch.equal(albedo[~inside], fallback[~inside])
        middle = col == 3
        torch.testing.assert_close(
            albedo[middle],
            0.4 * sampled[middle] + 0.6 * 0.4 * sampled[middle] + 0.6 * 0.6 * fallback[middle],
        )

    def test_a_turned_face_is_filled_from_its_mirror_exactly(self, model):
        """At 60 degrees of yaw the far side is hidden: it takes its partner's texel, bit for
        bit, and the completed texture is symmetric there."""
        theta = torch.zeros(1, model.n_params)
        theta[0, 1] = math.radians(60)
        theta[0, 3:5] = (SIZE - 1) / 2
        theta[0, 5] = math.log(0.5)
        image = render(model, theta, image_size=(SIZE, SIZE)).image[0]
        sh = torch.zeros(9, 3)
        sh[0] = 1.0
        tex = face_texture(model, image, theta[0], sh, model.color_mean)
        m = mirror_index(model.res)
        filled = (tex.observed == 0) & (tex.mirrored == 1)
        assert int(filled.sum()) > 20
        assert torch.equal(tex.albedo[filled], tex.albedo[m[filled]])
        assert torch.equal(tex.albedo[filled], tex.sampled[m[filled]])
        # Most of them were hidden (the others were seen at a grazing angle).
        assert float(tex.visible[filled].float().mean()) < 0.5


class TestBackgroundFill:
    def test_keeps_known_pixels_and_fills_a_constant_exactly(self):
        image = torch.full((3, 20, 30), 0.3)
        image[1] = 0.6
        hole = torch.zeros(20, 30, dtype=torch.bool)
        hole[5:15, 8:25] = True
        noisy = image.clone()
        noisy[:, hole] = 5.0
        out = fill_holes(noisy, hole)
        torch.testing.assert_close(out, image)
        assert torch.equal(out[:, ~hole], noisy[:, ~hole])

    def test_fill_stays_within_the_known_range(self):
        g = torch.Generator().manual_seed(0)
        image = torch.rand(3, 17, 23, generator=g)
        hole = torch.zeros(17, 23, dtype=torch.bool)
        hole[3:14, 4:20] = True
        out = fill_holes(image, hole)
        known = image[:, ~hole]
        assert bool((out >= known.amin(1)[:, None, None] - 1e-6).all())
        assert bool((out <= known.amax(1)[:, None, None] + 1e-6).all())

    def test_grow_mask(self):
        mask = torch.zeros(9, 9, dtype=torch.bool)
        mask[4, 4] = True
        assert int(grow_mask(mask, 2).sum()) == 25 and int(grow_mask(mask, 0).sum()) == 1


class TestOutputs:
    def test_files_and_manifest(self, synthesized, model):
        result, out = synthesized
        assert [f.status for f in result.faces] == ["synthesized"] * 3
        entries = read_manifest(out / "manifest.jsonl")
        assert len(entries) == 3 * PER_FACE == result.n_views
        for e in entries:
            with Image.open(e.image) as im:
                assert im.size == (SIZE, SIZE) and im.mode == "RGB"
            mask_path = e.quality_mask
            assert mask_path.parent == out / "images"
            assert mask_path.name == e.image.name.replace(".png", ".quality.png")
            with Image.open(mask_path) as im:
                mask = np.asarray(im)
            assert mask.shape == (SIZE, SIZE) and set(np.unique(mask)) <= {0, 255}
            assert 0 <= e.extra["invented_fraction"] <= 1
            assert e.landmarks.shape == (21, 2) and e.extra["landmark_set"] == "aflw21"
            assert len(e.extra["theta"]) == model.n_params
            assert e.subject == e.image.name.rsplit("_", 1)[0]
        for name in ("face_0000", "face_0001", "face_0002"):
            assert (out / "sheets" / f"{name}.png").is_file()
            with Image.open(out / "textures" / f"{name}.png") as im:
                assert im.size == (model.res, model.res)
        summary = json.loads((out / "summary.json").read_text())
        assert summary["n_skipped"] == 0 and summary["n_views"] == 3 * PER_FACE

    def test_landmarks_are_the_projected_landmark_vertices(self, synthesized, model):
        """Recomputed in numpy from the written theta: X = mean + basis alpha, rotated by
        Rodrigues' formula, x = s X_x + t_x, y = -s X_y + t_y."""
        _, out = synthesized
        idx = model.landmarks["aflw21"].numpy()
        mean = model.mean.double().numpy()[idx]
        basis = model.basis.double().numpy()[idx]
        yaws = []
        for e in read_manifest(out / "manifest.jsonl"):
            theta = np.asarray(e.extra["theta"], dtype=np.float64)
            rot = _rodrigues(theta[:3])
            x = (mean + basis @ theta[6:]) @ rot.T
            s = math.exp(theta[5])
            expect = np.stack([s * x[:, 0] + theta[3], -s * x[:, 1] + theta[4]], 1)
            assert np.abs(e.landmarks - expect).max() < PROJECTION_PX
            yaws.append(math.degrees(math.asin(np.clip(rot[0, 2], -1, 1))))
        assert max(abs(y) for y in yaws) <= 75.0 + 1e-6

    def test_hidden_landmarks_of_a_turned_view_are_marked(self, synthesized):
        """A face turned by more than 45 degrees hides its far ear (AFLW 12 is the subject's
        right ear, column 0 side; 16 the left): the depth test marks it invisible."""
        _, out = synthesized
        checked = 0
        for e in read_manifest(out / "manifest.jsonl"):
            rot = _rodrigues(np.asarray(e.extra["theta"][:3]))
            yaw = math.degrees(math.asin(np.clip(rot[0, 2], -1, 1)))
            if yaw > 50:  # positive yaw brings the subject's right side (12) nearer
                assert e.visible[16] == 0, (yaw, e.visible)
                checked += 1
            elif yaw < -50:
                assert e.visible[12] == 0, (yaw, e.visible)
                checked += 1
        assert checked > 0

    def test_quality_mask_marks_the_background_filled_where_the_face_was(self, model):
        """Rendered over a hole the new face does not cover, the hole is invented; a face whose
        texture is all model-filled is invented; the rest of the photo is not."""
        theta = torch.zeros(model.n_params)
        theta[3:5] = (SIZE - 1) / 2
        theta[5] = math.log(0.3)
        albedo = torch.full((model.n_vertices, 3), 0.5)
        background = torch.full((3, SIZE, SIZE), 0.2)
        hole = torch.zeros(SIZE, SIZE, dtype=torch.bool)
        hole[:10, :10] = True
        sh = torch.zeros(9, 3)
        sh[0] = 1.0
        seen = render_view(
            model, theta, sh, albedo, torch.zeros(model.n_vertices), background, hole
        )
        assert torch.equal(seen.invented, hole & ~seen.face)
        unseen = render_view(
            model, theta, sh, albedo, torch.ones(model.n_vertices), background, hole
        )
        assert torch.equal(unseen.invented, hole | unseen.face)

    def test_same_seed_same_output_other_seed_other_views(self, synthesized, faces, tmp_path):
        result, out = synthesized
        again = synthesize_faces([faces], grid_model_file(), tmp_path / "a", PER_FACE, seed=7)
        assert (tmp_path / "a" / "manifest.jsonl").read_text().replace(str(tmp_path / "a"), "") == (
            out / "manifest.jsonl"
        ).read_text().replace(str(out), "")
        for view in result.faces[0].views:
            assert (tmp_path / "a" / view).read_bytes() == (out / view).read_bytes()
        other = synthesize_faces([faces], grid_model_file(), tmp_path / "b", 1, seed=8)
        a = read_manifest(again.manifest)[0].extra["theta"]
        b = read_manifest(other.manifest)[0].extra["theta"]
        assert a != b

    def test_stn_train_run_reads_the_manifest(self, synthesized, tmp_path):
        from stn_train.train import train

        _, out = synthesized
        cfg = small_run_config(
            data=str(out / "manifest.jsonl"), out=str(tmp_path / "run"), steps=2, batch_size=4
        )
        run = train(cfg)
        assert run.steps == 2 and run.bad_samples == 0 and math.isfinite(run.last_loss)


class TestSkipped:
    def test_faces_without_a_valid_fit_are_skipped_and_counted(self, faces, tmp_path):
        lines = faces.read_text().splitlines()
        one = json.loads(lines[0])
        for p in one["landmarks"][1:]:
            p[2] = 0  # one visible landmark: no fit
        scrambled = json.loads(lines[1])
        pts = np.array([p[:2] for p in scrambled["landmarks"]])
        rng = np.random.default_rng(0)
        scrambled["landmarks"] = [[*p, 1] for p in (pts[rng.permutation(21)]).tolist()]
        manifest = faces.parent / "bad.jsonl"
        manifest.write_text("\n".join([json.dumps(one), json.dumps(scrambled), lines[2]]) + "\n")
        with pytest.warns(UserWarning, match="fewer than 2 visible landmarks"):
            result = synthesize_faces([manifest], grid_model_file(), tmp_path / "o", 2)
        status = [f.status for f in result.faces]
        assert status == ["skipped", "skipped", "synthesized"]
        assert "fewer than 2 visible landmarks" in result.faces[0].reason
        assert "the fit failed" in result.faces[1].reason
        summary = json.loads((tmp_path / "o" / "summary.json").read_text())
        assert summary["n_skipped"] == 2 and summary["n_synthesized"] == 1
        assert len(read_manifest(result.manifest)) == 2
        assert not list((tmp_path / "o" / "images").glob("face_0000*"))

    def test_a_photo_that_fails_to_decode_is_skipped_when_its_batch_is_fitted(
        self, faces, tmp_path
    ):
        """Photos are decoded batch by batch (their header gives the size): a file whose
        header reads but whose pixels do not is skipped and counted, the others go on."""
        lines = faces.read_text().splitlines()[:2]
        data = (faces.parent / "face_0001.png").read_bytes()
        (faces.parent / "cut.png").write_bytes(data[: len(data) // 2])
        cut = json.loads(lines[1])
        cut["image"] = "cut.png"
        manifest = faces.parent / "cut.jsonl"
        manifest.write_text(lines[0] + "\n" + json.dumps(cut) + "\n")
        result = synthesize_faces([manifest], grid_model_file(), tmp_path / "o", 1)
        assert [f.status for f in result.faces] == ["synthesized", "skipped"]
        assert "cut.png" in result.faces[1].reason
        assert len(read_manifest(result.manifest)) == 1

    def test_nothing_usable_writes_nothing(self, faces, tmp_path):
        manifest = faces.parent / "none.jsonl"
        manifest.write_text(json.dumps({"image": "missing.png", "landmarks": [[0, 0, 1]] * 21}))
        result = synthesize_faces([manifest], grid_model_file(), tmp_path / "o", 2)
        assert result.manifest is None and result.faces[0].status == "skipped"
        assert not (tmp_path / "o").exists()


class TestBadInputs:
    @pytest.mark.parametrize(
        "kwargs, words",
        [
            ({"per_face": 0}, ["per_face", "at least 1"]),
            ({"max_landmark_error": -1.0}, ["max_landmark_error"]),
            ({"landmark_set": "nope"}, ["no landmark set 'nope'"]),
            ({"out_landmark_set": "nope"}, ["no landmark set 'nope'"]),
            ({"landmarks": "x.csv"}, ["manifest carries its landmarks"]),
        ],
    )
    def test_library_refuses(self, faces, tmp_path, kwargs, words):
        kw = {"per_face": 2, **kwargs}
        per_face = kw.pop("per_face")
        with pytest.raises(TrainError) as e:
            synthesize_faces([faces], grid_model_file(), tmp_path / "o", per_face, **kw)
        for w in words:
            assert w in str(e.value), str(e.value)
        assert not (tmp_path / "o").exists()

    @pytest.mark.parametrize(
        "kwargs", [{"yaw": 91.0}, {"light_cone": 100.0}, {"pitch": -1.0}, {"light": math.nan}]
    )
    def test_view_ranges_refuse(self, kwargs):
        (name,) = kwargs
        with pytest.raises(TrainError, match=name):
            ViewRanges(**kwargs)

    def test_never_writes_over_an_input(self, faces, tmp_path):
        # The manifest's own folder as --out: OUT/manifest.jsonl is the input.
        with pytest.raises(TrainError, match="would write over the input"):
            synthesize_faces([faces], grid_model_file(), faces.parent, 1)
        # Photos inside OUT/images.
        photos = tmp_path / "o" / "images"
        photos.mkdir(parents=True)
        shutil.copy(faces.parent / "face_0000.png", photos / "a.png")
        with pytest.raises(TrainError, match="would write over the input"):
            synthesize_faces([photos], grid_model_file(), tmp_path / "o", 1, landmarks=faces)

    @pytest.mark.parametrize("held", ["manifest.jsonl", "summary.json", "images"])
    def test_never_replaces_what_an_output_folder_holds(self, faces, tmp_path, held):
        """An earlier set, or a manifest of the user's beside the photos: refused, untouched."""
        out = tmp_path / "o"
        out.mkdir()
        if held == "images":
            (out / held).mkdir()
        else:
            (out / held).write_text("mine\n")
        with pytest.raises(TrainError, match=f"already holds {held}"):
            synthesize_faces([faces], grid_model_file(), out, 1)
        assert sorted(q.name for q in out.iterdir()) == [held]
        if held != "images":
            assert (out / held).read_text() == "mine\n"

    def test_photos_need_landmarks(self, faces, tmp_path):
        with pytest.raises(TrainError, match="photos need their landmarks"):
            synthesize_faces([faces.parent / "face_0000.png"], grid_model_file(), tmp_path, 1)

    def test_cli_errors_are_one_line_with_status_2(self, faces, tmp_path, capsys):
        model = str(grid_model_file())
        base = ["synthesize", str(faces), "--model", model]
        assert_user_error([*base, "--out", str(faces.parent)], capsys, "--out", "input")
        assert_user_error(
            [*base, "--out", str(tmp_path / "o"), "--per-face", "0"], capsys, "--per-face"
        )
        assert_user_error([*base, "--out", str(tmp_path / "o"), "--yaw", "120"], capsys, "--yaw")
        o = ["--out", str(tmp_path / "o")]
        assert_user_error([*base, *o, "--background", "sky"], capsys, "--background")
        assert_user_error([*base, *o, "--out-landmarks", "x"], capsys, "--out-landmarks")
        assert_user_error(
            [
                "synthesize",
                str(faces),
                "--model",
                str(tmp_path / "none.h5"),
                "--out",
                str(tmp_path),
            ],
            capsys,
            "none.h5",
        )
        assert not (tmp_path / "o").exists()

    def test_cli_runs_and_reports_skipped(self, faces, tmp_path, capsys):
        from tests.stn_train.test_cli import run_cli

        lines = faces.read_text().splitlines()
        bad = json.loads(lines[0])
        bad["image"] = "missing.png"
        manifest = faces.parent / "cli.jsonl"
        manifest.write_text("\n".join([json.dumps(bad), lines[1]]) + "\n")
        code, out, err = run_cli(
            [
                "synthesize",
                str(manifest),
                "--model",
                str(grid_model_file()),
                "--out",
                str(tmp_path / "o"),
                "--per-face",
                "2",
                "--no-pictures",
                "--cpu-threads",
                "1",
            ],
            capsys,
        )
        assert code == 0, err
        assert "2 views of 1 face (1 skipped)" in out
        assert "skipped" in err and "missing.png" in err
        assert not (tmp_path / "o" / "sheets").exists()


class TestDetectedFaces:
    def test_faces_found_by_the_detector_are_synthesized_on_their_crops(self, tmp_path):
        from stn_train.detection import FaceDetector, detection_available

        if not detection_available():
            pytest.skip("the detect extra is not installed (make detect-extra)")
        import scipy.io as sio

        from tests.conftest import reference_file

        d = sio.loadmat(reference_file("3dmmasstn/demodata.mat"))
        photo = tmp_path / "photos" / "demo.png"
        photo.parent.mkdir()
        canvas = np.full((300, 340, 3), 90, np.uint8)
        canvas[40:264, 60:284] = np.clip(np.rint(d["Images"][..., 2]), 0, 255).astype(np.uint8)
        Image.fromarray(canvas).save(photo)
        result = synthesize_faces(
            [photo.parent],
            grid_model_file(),
            tmp_path / "o",
            2,
            detector=FaceDetector("hog"),
            crop_size=128,
            out_landmark_set="aflw21",
        )
        assert [f.name for f in result.faces] == ["demo.face1"]
        assert result.faces[0].status == "synthesized", result.faces[0].reason
        entries = read_manifest(result.manifest)
        assert len(entries) == 2 and entries[0].landmarks.shape == (21, 2)
        with Image.open(entries[0].image) as im:
            assert im.size == (128, 128)

    def test_without_the_extra_the_command_says_how_to_install_it(
        self, faces, tmp_path, capsys, monkeypatch
    ):
        import stn_train.detection.detector as detector

        monkeypatch.setattr(detector, "detection_available", lambda: False)
        args = ["synthesize", str(faces.parent / "face_0000.png"), "--detect"]
        args += ["--model", str(grid_model_file()), "--out", str(tmp_path / "o")]
        assert_user_error(args, capsys, "pip install 'stn-train[detect]'")
        assert not (tmp_path / "o").exists()


class TestSyntheticBackgrounds:
    def test_views_over_random_backgrounds_mark_every_background_pixel(self, faces, tmp_path):
        result = synthesize_faces(
            [faces], grid_model_file(), tmp_path / "o", 2, seed=7, backgrounds="synthetic"
        )
        photo = read_manifest(faces)[0]
        with Image.open(photo.image) as im:
            original = np.asarray(im.convert("RGB")).astype(int)
        for e in read_manifest(result.manifest)[:2]:
            theta = torch.tensor(e.extra["theta"])
            model = load_model()
            face = render(model, theta[None], image_size=(SIZE, SIZE)).mask[0, 0].numpy()
            with Image.open(e.image) as im:
                view = np.asarray(im).astype(int)
            with Image.open(e.quality_mask) as im:
                mask = np.asarray(im) > 0
            assert mask[~face].all()  # no background pixel is the photo's
            assert np.abs(view - original)[~face].max() > 20
        summary = json.loads((tmp_path / "o" / "summary.json").read_text())
        assert summary["backgrounds"] == "synthetic"

    def test_unknown_backgrounds_are_refused(self, faces, tmp_path):
        with pytest.raises(TrainError, match="backgrounds must be photo or synthetic"):
            synthesize_faces([faces], grid_model_file(), tmp_path / "o", 1, backgrounds="sky")
