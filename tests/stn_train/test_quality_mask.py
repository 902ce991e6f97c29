"""Quality masks in manifests (``stn-train synthesize`` writes them: 255 where a pixel is
invented): the path read relative to the manifest and written back relative, the dataset's
``trust`` map (cropped, resized and flipped with the image; zero outside the image), bad masks
as bad samples, and training that leaves invented pixels out of the siamese and symmetry
terms."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from stn_core import STN, project_theta
from stn_train.data import ManifestDataset
from stn_train.data.manifest import read_manifest, write_manifest
from stn_train.errors import TrainError
from stn_train.train import train
from stn_train.train.loop import _trusted_only
from stn_train.train.run_log import read_run_log

from tests.stn_train.train_helpers import (
    load_model,
    random_theta,
    small_run_config,
    write_manifest_of_renders,
)

SIZE = 64


def _add_masks(manifest, make_mask) -> None:
    """Give every line of ``manifest`` a quality mask ``make_mask(i) -> (H, W) uint8``."""
    lines = manifest.read_text().splitlines()
    out = []
    for i, text in enumerate(lines):
        obj = json.loads(text)
        name = f"face_{i:04d}.quality.png"
        Image.fromarray(make_mask(i)).save(manifest.parent / name)
        obj["quality_mask"] = name
        out.append(json.dumps(obj))
    manifest.write_text("\n".join(out) + "\n")


@pytest.fixture()
def faces(tmp_path):
    return write_manifest_of_renders(tmp_path / "faces", load_model(), 4, SIZE, seed=2)


def test_mask_path_is_relative_to_the_manifest_and_written_back_relative(faces, tmp_path):
    _add_masks(faces, lambda i: np.zeros((SIZE, SIZE), np.uint8))
    entries = read_manifest(faces)
    assert entries[0].quality_mask == faces.parent / "face_0000.quality.png"
    assert "quality_mask" not in entries[0].extra
    other = write_manifest(entries, tmp_path / "elsewhere" / "m.jsonl")
    again = read_manifest(other)
    assert again[0].quality_mask.resolve() == (faces.parent / "face_0000.quality.png").resolve()
    line = json.loads(other.read_text().splitlines()[0])
    assert line["quality_mask"] == str((faces.parent / "face_0000.quality.png").absolute())


def test_a_mask_that_is_not_a_path_is_refused(faces):
    lines = faces.read_text().splitlines()
    obj = json.loads(lines[1])
    obj["quality_mask"] = 3
    lines[1] = json.dumps(obj)
    faces.write_text("\n".join(lines) + "\n")
    with pytest.raises(TrainError, match="line 2 has quality_mask 3"):
        read_manifest(faces)


def test_trust_is_the_inverted_mask_cropped_like_the_image(faces):
    """Left half invented: trust 0 there, 1 on the right, in the crop's coordinates (the
    crop window maps x as ``crop_points`` does); the crop is the whole image here."""
    half = np.where(np.arange(SIZE)[None, :] < 32, 255, 0).repeat(SIZE, 0).astype(np.uint8)
    _add_masks(faces, lambda i: half)
    data = ManifestDataset(faces, SIZE, train=False, crop="image")
    s = data[0]
    trust = s["trust"][0]
    assert trust.shape == (SIZE, SIZE)
    assert (trust[:, :31] == 0).all() and (trust[:, 33:] == 1).all()
    # The image is untouched by its mask.
    with Image.open(data.entries[0].image) as im:
        pixels = torch.from_numpy(np.asarray(im).astype(np.float32) / 255).permute(2, 0, 1)
    torch.testing.assert_close(s["image"], pixels)


def test_trust_is_zero_outside_the_image_and_flips_with_it(faces):
    _add_masks(faces, lambda i: np.zeros((SIZE, SIZE), np.uint8))
    data = ManifestDataset(faces, 32, train=False, margin=1.0)  # a crop well beyond the image
    s = data[0]
    outside = s["trust"][0] == 0
    assert 0 < int(outside.sum()) < 32 * 32 and (s["trust"][0] == 1).any()
    # Outside the image the crop's pixels are black (zero padding) and untrusted.
    assert (s["image"][:, outside] == 0).all()
    flipping = ManifestDataset(faces, 32, train=True, flip_prob=1.0, margin=1.0)
    flipping.jitter = type(flipping.jitter).none()
    f = flipping[0]
    torch.testing.assert_close(f["trust"], s["trust"].flip(-1))
    torch.testing.assert_close(f["image"], s["image"].flip(-1))


def test_entries_without_a_mask_are_all_trusted(faces):
    _add_masks(faces, lambda i: np.full((SIZE, SIZE), 255, np.uint8))
    lines = faces.read_text().splitlines()
    obj = json.loads(lines[2])
    del obj["quality_mask"]
    lines[2] = json.dumps(obj)
    faces.write_text("\n".join(lines) + "\n")
    data = ManifestDataset(faces, SIZE, train=False, crop="image")
    assert (data[2]["trust"] == 1).all()
    assert (data[0]["trust"] == 0).all()


def test_a_mask_of_another_size_is_a_bad_sample(faces):
    _add_masks(faces, lambda i: np.zeros((SIZE // 2 if i == 1 else SIZE, SIZE), np.uint8))
    data = ManifestDataset(faces, SIZE, train=False, crop="image")
    assert data.load(1) is None
    assert data.bad_samples[0].kind == "bad_mask"
    assert "write the mask at the image's size" in data.bad_samples[0].reason
    strict = ManifestDataset(faces, SIZE, train=False, crop="image", strict=True)
    with pytest.raises(TrainError, match="quality mask .* is 64 x 32 pixels"):
        strict.load(1)


def test_invented_pixels_leave_the_visibility_mask():
    """Trust 0 left of column 30: a visible texel whose image point (projected independently
    by project_theta) lies left of 28.5 is dropped, one right of 31.5 is kept."""
    model = load_model()
    stn = STN(model)
    theta = random_theta(model, 3, SIZE, seed=5).float()
    images = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    out = stn(images, theta)
    trust = torch.ones(3, 1, SIZE, SIZE)
    trust[..., :30] = 0.0
    got = _trusted_only(stn(torch.cat([images, trust], 1), theta))
    x = project_theta(theta, model.mean, model.basis)[0][..., 0].reshape(out.visibility.shape)
    before, after = out.visibility > 0, got.visibility > 0
    assert not after[before & (x < 28.5)].any()
    assert after[before & (x > 31.5)].all()
    assert (before & (x < 28.5)).any() and (before & (x > 31.5)).any()
    torch.testing.assert_close(got.flattened, out.flattened)
    torch.testing.assert_close(got.masked, out.flattened * got.visibility)
    everything = _trusted_only(stn(torch.cat([images, torch.ones(3, 1, SIZE, SIZE)], 1), theta))
    torch.testing.assert_close(everything.visibility, out.visibility)


def test_training_compares_only_the_photographs_pixels(faces, tmp_path):
    """Every pixel invented: the siamese and symmetry terms have nothing to compare (0); the
    same run without masks has both."""
    plain = faces.parent / "plain.jsonl"
    plain.write_text(faces.read_text())
    _add_masks(faces, lambda i: np.full((SIZE, SIZE), 255, np.uint8))
    terms = {}
    for name, manifest in (("masked", faces), ("plain", plain)):
        cfg = small_run_config(data=str(manifest), out=str(tmp_path / name), steps=2, batch_size=4)
        run = train(cfg)
        assert run.steps == 2 and run.bad_samples == 0 and math.isfinite(run.last_loss)
        records = [
            r for r in read_run_log(tmp_path / name / "metrics.jsonl") if r["kind"] == "train"
        ]
        terms[name] = records
    for r in terms["masked"]:
        assert r["symmetry"] == 0.0 and r["siamese"] == 0.0
    for r in terms["plain"]:
        assert r["symmetry"] > 0.0 and r["siamese"] > 0.0
