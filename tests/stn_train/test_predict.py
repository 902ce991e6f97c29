"""Prediction: per-image files, the textured OBJ, subject means, batching, bad images."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from stn_core import STN
from stn_train.errors import TrainError
from stn_train.predict import predict, square_input

from tests.stn_train.train_helpers import (
    grid_model_file,
    load_model,
    render_manifest,
    tiny_checkpoint,
)

PNG_STEP = 1.0 / 255


@pytest.fixture(scope="module")
def subject_images(tmp_path_factory):
    """Four rendered faces (64 px) in two subject folders, same file names in each."""
    root = tmp_path_factory.mktemp("faces")
    src = render_manifest().parent
    for s, names in (("alice", ("face_0000", "face_0001")), ("bob", ("face_0002", "face_0003"))):
        (root / s).mkdir()
        for k, n in enumerate(names):
            shutil.copy(src / f"{n}.png", root / s / f"img{k}.png")
    return root


@pytest.fixture(scope="module")
def predicted(subject_images, tmp_path_factory):
    out = tmp_path_factory.mktemp("pred")
    files = sorted(subject_images.glob("*/*.png"))
    result = predict(
        files, tiny_checkpoint(), grid_model_file(), out, batch_size=3, average_by_subject=True
    )
    return result, files


def read_png(path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.float64) / 255.0


def parse_obj(path):
    v, vt, f = [], [], []
    for line in path.read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "v":
            v.append([float(x) for x in parts[1:]])
        elif parts[0] == "vt":
            vt.append([float(x) for x in parts[1:]])
        elif parts[0] == "f":
            f.append([[int(i) for i in p.split("/")] for p in parts[1:]])
    return np.array(v), np.array(vt), np.array(f)


def test_files_per_image(predicted):
    result, files = predicted
    model = load_model()
    res = model.res
    assert result.n_images == 4 and len(set(result.names)) == 4
    assert result.names[0] == "alice_img0"  # the shared stems got their folder's name
    out = result.out_dir
    for name in result.names:
        record = json.loads((out / f"{name}.theta.json").read_text())
        assert len(record["theta"]) == model.n_params and record["input_size"] == [64, 64]
        assert read_png(out / f"{name}.flat.png").shape == (res, res, 3)
        mask = read_png(out / f"{name}.mask.png")
        assert mask.shape == (res, res) and set(np.unique(mask)) <= {0.0, 1.0}
        assert f"map_Kd {name}.flat.png" in (out / f"{name}.mtl").read_text()


def test_obj_is_the_fitted_shape_with_grid_uv(predicted):
    result, _ = predicted
    model = load_model()
    name = result.names[1]
    theta = torch.tensor(json.loads((result.out_dir / f"{name}.theta.json").read_text())["theta"])
    v, vt, f = parse_obj(result.out_dir / f"{name}.obj")
    res = model.res
    assert v.shape == (res * res, 3) and vt.shape == (res * res, 2)
    np.testing.assert_allclose(v, model.shape(theta[6:].float()).numpy(), atol=2e-5, rtol=1e-5)
    faces = model.drawn_faces.numpy()
    assert f.shape == (len(faces), 3, 2)
    np.testing.assert_array_equal(f[..., 0] - 1, faces)
    np.testing.assert_array_equal(f[..., 0], f[..., 1])
    # vertex (row, col) at the centre of its texture pixel; v up
    k = 3 * res + 5
    np.testing.assert_allclose(vt[k], [(5 + 0.5) / res, 1 - (3 + 0.5) / res], atol=1e-6)


def test_flattened_png_is_the_stn_output(predicted):
    result, files = predicted
    model = load_model()
    name, image = result.names[2], files[2]
    theta = torch.tensor(json.loads((result.out_dir / f"{name}.theta.json").read_text())["theta"])
    x, to_image = square_input(torch.from_numpy(read_png(image)).permute(2, 0, 1).float(), 64)
    assert to_image == {"scale": 1.0, "offset": [0, 0]}
    out = STN(model)(x[None], theta[None].float())
    flat = out.flattened[0].clamp(0, 1).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(
        read_png(result.out_dir / f"{name}.flat.png"), flat, atol=PNG_STEP / 2 + 1e-4
    )
    np.testing.assert_array_equal(
        read_png(result.out_dir / f"{name}.mask.png"), out.visibility[0, 0].numpy()
    )


def test_subject_means_average_visible_pixels(predicted):
    result, _ = predicted
    assert result.subjects == ["alice", "bob"]
    out = result.out_dir
    for subject, names in (("alice", result.names[:2]), ("bob", result.names[2:])):
        flats = [read_png(out / f"{n}.flat.png") for n in names]
        masks = [read_png(out / f"{n}.mask.png") for n in names]
        count = sum(masks)
        total = sum(f * m[..., None] for f, m in zip(flats, masks, strict=True))
        expect = total / np.maximum(count, 1)[..., None]
        mean = read_png(out / "subjects" / f"{subject}.png")
        np.testing.assert_allclose(mean, expect, atol=1.5 * PNG_STEP)
        np.testing.assert_allclose(
            read_png(out / "subjects" / f"{subject}.count.png"), count / 2, atol=PNG_STEP
        )


def test_batch_size_does_not_change_results(predicted, subject_images, tmp_path):
    result, files = predicted
    one = predict(files[:2], tiny_checkpoint(), grid_model_file(), tmp_path, batch_size=1)
    for a, b in zip(one.names, result.names[:2], strict=True):
        ta = json.loads((tmp_path / f"{a}.theta.json").read_text())["theta"]
        tb = json.loads((result.out_dir / f"{b}.theta.json").read_text())["theta"]
        np.testing.assert_allclose(ta, tb, rtol=1e-5, atol=1e-5)


def test_folder_input_and_non_square_image(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    img = (np.random.default_rng(0).random((40, 80, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(folder / "wide.png")
    result = predict([folder], tiny_checkpoint(), grid_model_file(), tmp_path / "out")
    record = json.loads((tmp_path / "out" / "wide.theta.json").read_text())
    assert result.names == ["wide"]
    assert record["to_image"] == {"scale": 80 / 64, "offset": [0, -20]}


@pytest.mark.parametrize("kind", ["missing", "garbage"])
def test_bad_image_is_named(tmp_path, kind):
    path = tmp_path / "face.png"
    if kind == "garbage":
        path.write_bytes(b"not an image")
    with pytest.raises(TrainError) as e:
        predict([path], tiny_checkpoint(), grid_model_file(), tmp_path / "out")
    assert str(path) in str(e.value)
    assert "manifest" not in str(e.value)
    assert not (tmp_path / "out").exists()


def test_unreadable_images_among_others_are_skipped(tmp_path, capsys):
    """One unreadable and one missing image among readable ones: those are skipped with a note
    (no word of a manifest), the rest predicted, exit 0; all unreadable: exit 2, no folder."""
    from stn_train.cli import main

    good = render_manifest().parent / "face_0000.png"
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    missing = tmp_path / "missing.png"
    result = predict(
        [good, bad, missing], tiny_checkpoint(), grid_model_file(), tmp_path / "out", batch_size=2
    )
    assert result.n_images == 1 and [f for f, _ in result.skipped] == [bad, missing]
    assert (tmp_path / "out" / "face_0000.theta.json").is_file()
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert not any(n.startswith(("bad", "missing")) for n in written), written
    args = ["--checkpoint", str(tiny_checkpoint()), "--model", str(grid_model_file())]
    with pytest.raises(SystemExit) as e:
        main(["predict", str(good), str(bad), *args, "--out", str(tmp_path / "cli")])
    assert e.value.code in (0, None)
    captured = capsys.readouterr()
    assert "1 image (1 skipped)" in captured.out
    assert f"stn-train: skipped {bad}" in captured.err and "manifest" not in captured.err
    with pytest.raises(SystemExit) as e:
        main(["predict", str(bad), str(missing), *args, "--out", str(tmp_path / "none")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "manifest" not in err
    assert err.strip().splitlines()[-1].startswith("stn-train: error: none of the 2 images")
    assert not (tmp_path / "none").exists()
