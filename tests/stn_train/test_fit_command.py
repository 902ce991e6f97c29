"""``stn-train fit``: fit_images on rendered faces, every landmark format, skipped images, the
written files (parameters, pictures, textured OBJ), and the command's exit statuses."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from PIL import Image
from stn_core import UVGridModel, project_theta
from stn_core.renderer import render
from stn_core.shading import sh_ambient, sh_directional
from stn_train.cli import app
from stn_train.cli.cmd_fit import summary_table
from stn_train.data.annotations import write_pts
from stn_train.data.manifest import ManifestEntry, write_manifest
from stn_train.errors import TrainError
from stn_train.fit import fit_images
from stn_train.pictures.fitting import uv_map
from typer.testing import CliRunner

from tests.synthetic_grid import synthetic_grid

RES, K_ID, K_EXP, K_COLOR = 32, 6, 3, 6
SIZE = 112
NOISE = 0.01
LANDMARK_PX = 1.0  # the fits' landmark error on these clean renders
PICTURES = (
    "overlay.png",
    "flattened.png",
    "albedo.png",
    "shading.png",
    "cost.png",
    "mesh.obj",
    "mesh.mtl",
    "mesh_texture.png",
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """A small colour grid model written by bfm-prep's pipeline: (path, UVGridModel)."""
    folder = tmp_path_factory.mktemp("model")
    grid = synthetic_grid(
        folder, seed=1, n_vertices=1500, res=RES, n_id=K_ID, n_exp=K_EXP, n_color=K_COLOR
    )
    from bfm_prep.artifact import write_grid

    path = write_grid(folder / "grid.h5", grid)
    return path, UVGridModel.load(path, dtype=torch.float64)


@pytest.fixture(scope="module")
def faces(grid, tmp_path_factory):
    """Three rendered faces as PNG with their true landmarks (ours, (3, 21, 2))."""
    _, model = grid
    folder = tmp_path_factory.mktemp("faces")
    g = torch.Generator().manual_seed(0)
    b = 3
    theta = torch.zeros(b, model.n_params, dtype=torch.float64)
    theta[:, 1] = torch.tensor([-0.3, 0.0, 0.25], dtype=torch.float64)
    theta[:, 3:5] = (SIZE - 1) / 2
    theta[:, 5] = math.log(0.45)
    theta[:, 6:] = 0.5 * torch.randn(b, model.n_components, generator=g, dtype=torch.float64)
    beta = 0.5 * torch.randn(b, K_COLOR, generator=g, dtype=torch.float64)
    albedo = model.color_mean + (beta @ model.color_basis.reshape(-1, K_COLOR).T).reshape(b, -1, 3)
    sh = sh_ambient(torch.full((3,), 0.6, dtype=torch.float64), batch=b, dtype=torch.float64)
    sh = sh + sh_directional(
        torch.tensor([0.4, 0.3, 1.0], dtype=torch.float64),
        torch.tensor([0.6, 0.6, 0.6], dtype=torch.float64),
    )
    bg = torch.full((b, 3, SIZE, SIZE), 0.25, dtype=torch.float64)
    images = render(model, theta, albedo, (SIZE, SIZE), sh=sh, background=bg).image
    images = images + NOISE * torch.randn(images.shape, generator=g, dtype=torch.float64)
    points = project_theta(theta, model.mean, model.basis)[0][:, model.landmarks["aflw21"]]
    paths = []
    for i in range(b):
        p = folder / f"face{i}.png"
        a = np.rint(images[i].clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        Image.fromarray(a).save(p)
        write_pts(folder / f"face{i}.pts", points[i].numpy())
        paths.append(p)
    return folder, paths, points.numpy()


def test_full_fit_writes_every_file_and_recovers_the_landmarks(grid, faces, tmp_path):
    path, model = grid
    folder, paths, points = faces
    records = fit_images(paths[:2], path, folder, tmp_path / "out", device="cpu")
    assert [r.status for r in records] == ["fitted", "fitted"]
    for r, truth in zip(records, points[:2], strict=True):
        assert r.converged and r.landmark_error_px < LANDMARK_PX
        assert r.photometric_rms < 4 * NOISE
        for name in ("params.json", *PICTURES):
            assert (r.out_dir / name).is_file(), name
        params = json.loads((r.out_dir / "params.json").read_text())
        assert len(params["theta"]) == model.n_params
        assert len(params["identity"]) == K_ID and len(params["expression"]) == K_EXP
        assert len(params["albedo"]) == K_COLOR
        assert np.asarray(params["sh"]).shape == (9, 3)
        assert params["image_size"] == [SIZE, SIZE] and not params["landmarks_only"]
        fitted = np.asarray(params["fitted_landmarks"])
        assert np.abs(fitted - truth).max() < 1.5 * LANDMARK_PX
        # The overlay has three panels of the (enlarged) image; the UV maps are square.
        with Image.open(r.out_dir / "overlay.png") as im:
            assert im.height >= SIZE and im.width >= 3 * im.height
        with Image.open(r.out_dir / "albedo.png") as im:
            assert im.width == im.height >= RES
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [s["status"] for s in summary] == ["fitted", "fitted"]


def test_obj_texture_coordinates_hit_each_vertex_texel(grid, faces, tmp_path):
    path, model = grid
    folder, paths, _ = faces
    (r,) = fit_images(paths[:1], path, folder, tmp_path, device="cpu")
    lines = (r.out_dir / "mesh.obj").read_text().splitlines()
    v = np.array([[float(t) for t in ln.split()[1:]] for ln in lines if ln.startswith("v ")])
    vt = np.array([[float(t) for t in ln.split()[1:]] for ln in lines if ln.startswith("vt ")])
    f = [ln.split()[1:] for ln in lines if ln.startswith("f ")]
    assert v.shape == (RES * RES, 3) and vt.shape == (RES * RES, 2)
    assert (
        "mtllib mesh.mtl" in lines
        and "map_Kd mesh_texture.png" in (r.out_dir / "mesh.mtl").read_text()
    )
    corners = np.array([[int(c.split("/")[0]) for c in face] for face in f])
    assert corners.min() == 1 and corners.max() <= RES * RES  # 1-based
    assert all(c.split("/")[0] == c.split("/")[1] for face in f for c in face)
    # Texel centres: vertex k reads texel (row k // R, column k % R) of the texture, which is
    # the fitted albedo there.
    with Image.open(r.out_dir / "mesh_texture.png") as im:
        tex = np.asarray(im.convert("RGB"))
    cols = np.floor(vt[:, 0] * RES).astype(int)
    rows = np.floor((1 - vt[:, 1]) * RES).astype(int)
    np.testing.assert_array_equal(rows * RES + cols, np.arange(RES * RES))
    params = json.loads((r.out_dir / "params.json").read_text())
    beta = torch.tensor(params["albedo"], dtype=torch.float64)
    albedo = model.color_mean + (model.color_basis @ beta)
    expect = uv_map(albedo, RES, model.inside)
    assert np.abs(tex.astype(int) - expect.astype(int)).max() <= 1
    # The vertices are the fitted shape in mm.
    shape = model.shape(torch.tensor(params["theta"][6:], dtype=torch.float64))
    np.testing.assert_allclose(v, shape.numpy(), atol=1e-3)


def _csv(path, names, points, visible=None):
    rows = ["image," + ",".join(f"x{k},y{k},v{k}" for k in range(1, 22))]
    for i, (name, pts) in enumerate(zip(names, points, strict=True)):
        vis = np.ones(21) if visible is None else visible[i]
        rows.append(
            name
            + ","
            + ",".join(f"{x!r},{y!r},{int(v)}" for (x, y), v in zip(pts.tolist(), vis, strict=True))
        )
    path.write_text("\n".join(rows) + "\n")
    return path


def test_every_landmark_format_gives_the_same_fit(grid, faces, tmp_path):
    path, _ = grid
    folder, paths, points = faces
    sources = {
        "pts folder": folder,
        "csv": _csv(tmp_path / "marks.csv", [p.name for p in paths], points),
        "json by name": tmp_path / "marks.json",
        "json list": tmp_path / "list.json",
        "manifest": tmp_path / "marks.jsonl",
    }
    sources["json by name"].write_text(
        json.dumps({p.stem: pts.tolist() for p, pts in zip(paths, points, strict=True)})
    )
    sources["json list"].write_text(
        json.dumps(
            [
                {"image": str(p), "landmarks": [[x, y, 1] for x, y in pts.tolist()]}
                for p, pts in zip(paths, points, strict=True)
            ]
        )
    )
    write_manifest(
        [
            ManifestEntry(image=p, landmarks=pts, visible=np.ones(21))
            for p, pts in zip(paths, points, strict=True)
        ],
        sources["manifest"],
    )
    thetas = {}
    for name, source in sources.items():
        records = fit_images(
            paths,
            path,
            source,
            tmp_path / name.replace(" ", "_"),
            landmarks_only=True,
            device="cpu",
            pictures=False,
        )
        assert [r.status for r in records] == ["fitted"] * 3, name
        thetas[name] = [
            json.loads((r.out_dir / "params.json").read_text())["theta"] for r in records
        ]
    ref = np.asarray(thetas["pts folder"])
    for name, th in thetas.items():
        np.testing.assert_allclose(np.asarray(th), ref, rtol=1e-4, atol=1e-4, err_msg=name)


def test_unusable_images_are_reported_and_skipped(grid, faces, tmp_path):
    path, _ = grid
    folder, paths, points = faces
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    lonely = tmp_path / "lonely.png"  # no annotation anywhere
    Image.open(paths[0]).save(lonely)
    few = tmp_path / "few.png"
    Image.open(paths[1]).save(few)
    short = tmp_path / "short.png"
    Image.open(paths[2]).save(short)
    json_marks = tmp_path / "marks.json"
    json_marks.write_text(
        json.dumps(
            {
                paths[0].name: points[0].tolist(),
                "broken.png": points[0].tolist(),
                "few.png": [
                    [x, y, 1 if k == 0 else 0] for k, (x, y) in enumerate(points[1].tolist())
                ],
                "short.png": points[2][:20].tolist(),
            }
        )
    )
    images = [paths[0], broken, lonely, few, short]
    records = fit_images(
        images,
        path,
        json_marks,
        tmp_path / "out",
        landmarks_only=True,
        device="cpu",
        pictures=False,
    )
    status = {r.image.name: (r.status, r.reason) for r in records}
    assert status[paths[0].name][0] == "fitted"
    assert status["broken.png"][0] == "skipped" and "cannot read image" in status["broken.png"][1]
    assert status["lonely.png"] == ("skipped", f"no annotation for it in {json_marks}")
    assert status["few.png"] == ("skipped", "fewer than 2 visible landmarks")
    assert status["short.png"][0] == "skipped" and "20 landmarks" in status["short.png"][1]
    assert [r.image for r in records] == images  # in the order given
    table = summary_table(records)
    assert table.row_count == 5


def test_landmarks_only_needs_no_colour_and_photometric_does(grid, faces, tmp_path):
    path, model = grid
    folder, paths, _ = faces
    import h5py

    grey = tmp_path / "grey.h5"
    with h5py.File(path, "r") as src, h5py.File(grey, "w") as dst:
        for k, v in src.attrs.items():
            dst.attrs[k] = v
        for name in src:
            if name != "color":
                src.copy(name, dst)
    with pytest.raises(TrainError, match="no colour model.*landmarks_only=True") as e:
        fit_images(paths[:1], grey, folder, tmp_path / "a", device="cpu")
    assert re.search("no colour model.*--landmarks-only", e.value.for_cli())
    (r,) = fit_images(paths[:1], grey, folder, tmp_path / "b", landmarks_only=True, device="cpu")
    assert r.status == "fitted" and r.photometric_rms is None
    assert r.landmark_error_px < 2 * LANDMARK_PX
    for name in PICTURES:
        assert (r.out_dir / name).is_file(), name


def test_user_errors(grid, faces, tmp_path):
    path, _ = grid
    folder, paths, _ = faces
    with pytest.raises(TrainError, match="no images"):
        fit_images([], path, folder, tmp_path)
    with pytest.raises(TrainError, match="no such file"):
        fit_images(paths, tmp_path / "none.h5", folder, tmp_path)
    with pytest.raises(TrainError, match="landmarks not found"):
        fit_images(paths, path, tmp_path / "none.csv", tmp_path)
    with pytest.raises(TrainError, match="unknown landmark file type"):
        (tmp_path / "marks.xml").write_text("<x/>")
        fit_images(paths, path, tmp_path / "marks.xml", tmp_path)
    with pytest.raises(TrainError, match="no landmark set 'ibug68'"):
        fit_images(paths, path, folder, tmp_path, landmark_set="ibug68")
    with pytest.raises(TrainError, match="one .pts file but 3 images"):
        fit_images(paths, path, folder / "face0.pts", tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(TrainError, match="not readable JSON"):
        fit_images(paths, path, bad, tmp_path)


def test_command_prints_the_table_and_exits_0(grid, faces, tmp_path):
    path, _ = grid
    folder, paths, _ = faces
    missing = folder / "missing.png"
    result = CliRunner().invoke(
        app,
        [
            "fit",
            str(paths[0]),
            str(missing),
            "--model",
            str(path),
            "--landmarks",
            str(folder),
            "--out",
            str(tmp_path / "out"),
            "--landmarks-only",
            "--device",
            "cpu",
            "--no-pictures",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "face0.png" in result.stdout and "fitted" in result.stdout
    assert "skipped" in result.stdout and "1 of 2 images fitted" in result.stdout
    assert f"skipped {missing}" in result.stderr
    assert (tmp_path / "out" / "face0" / "params.json").is_file()


def test_command_user_error_exits_2_without_traceback(grid, faces, tmp_path):
    _, _ = grid
    folder, paths, _ = faces
    result = CliRunner().invoke(
        app,
        [
            "fit",
            str(paths[0]),
            "--model",
            str(tmp_path / "none.h5"),
            "--landmarks",
            str(folder),
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("stn-train: error: ") and "none.h5" in result.stderr
    assert "Traceback" not in result.output


def test_repeated_file_names_match_the_longest_unique_path_suffix(grid, faces, tmp_path):
    """Two annotations p0/v0.png and p1/v0.png: data/p0/v0.png and data/p1/v0.png get their
    own landmarks; a/v0.png and b/v0.png match both equally and are skipped, naming the clash."""
    path, _ = grid
    _, paths, points = faces
    marks = tmp_path / "marks.json"
    marks.write_text(json.dumps({"p0/v0.png": points[0].tolist(), "p1/v0.png": points[1].tolist()}))
    images = []
    for sub, k in (("data/p0", 0), ("data/p1", 1), ("a", 0), ("b", 1)):
        (tmp_path / sub).mkdir(parents=True)
        Image.open(paths[k]).save(tmp_path / sub / "v0.png")
        images.append(tmp_path / sub / "v0.png")
    records = fit_images(
        images, path, marks, tmp_path / "out", landmarks_only=True, device="cpu", pictures=False
    )
    assert [r.status for r in records] == ["fitted", "fitted", "skipped", "skipped"]
    for r, truth in zip(records[:2], points[:2], strict=True):
        fitted = np.asarray(json.loads((r.out_dir / "params.json").read_text())["fitted_landmarks"])
        assert np.abs(fitted - truth).max() < 1.5 * LANDMARK_PX
    for r in records[2:]:
        assert r.note == "ambiguous landmarks"
        assert "p0/v0.png" in r.reason and "p1/v0.png" in r.reason and "\n" not in r.reason
    # The table shows enough of each path to tell the images apart.
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(summary_table(records))
    text = console.export_text()
    for shown in ("p0/v0.png", "p1/v0.png", "a/v0.png", "b/v0.png"):
        assert shown in text, text


def test_convention_is_validated(grid, faces, tmp_path):
    path, _ = grid
    folder, paths, _ = faces
    with pytest.raises(TrainError, match="convention must be ours, one_based or original") as e:
        fit_images(paths[:1], path, folder, tmp_path / "out", convention="foo", device="cpu")
    assert e.value.for_cli().startswith("--convention must be ours, one_based or original")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["missing image", "empty landmark folder", "all skipped"])
def test_command_exits_2_and_writes_nothing_when_nothing_was_fitted(grid, faces, tmp_path, case):
    path, _ = grid
    folder, paths, points = faces
    out = tmp_path / "out"
    if case == "missing image":
        images, landmarks = [str(tmp_path / "missing.png")], folder
    elif case == "empty landmark folder":
        (tmp_path / "empty").mkdir()
        images, landmarks = [str(paths[0])], tmp_path / "empty"
    else:
        marks = tmp_path / "marks.json"
        marks.write_text(
            json.dumps({"p0/v0.png": points[0].tolist(), "p1/v0.png": points[1].tolist()})
        )
        images = []
        for sub in ("a", "b"):
            (tmp_path / sub).mkdir()
            Image.open(paths[0]).save(tmp_path / sub / "v0.png")
            images.append(str(tmp_path / sub / "v0.png"))
        landmarks = marks
    result = CliRunner().invoke(
        app,
        [
            "fit",
            *images,
            "--model",
            str(path),
            "--landmarks",
            str(landmarks),
            "--out",
            str(out),
            "--landmarks-only",
            "--device",
            "cpu",
            "--no-pictures",
        ],
    )
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("stn-train: error: "), result.stderr
    assert "Traceback" not in result.output and "manifest" not in result.stderr
    if case == "missing image":
        assert lines == [lines[-1]] and "missing.png" in lines[0] and "check the path" in lines[0]
    assert not out.exists()
