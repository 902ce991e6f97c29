"""``bfm-prep uv-embed``: --mesh / --model / --symmetry PAIRS_FILE end to end, the picture, and
bad inputs (exit 2, one line, no output file); meshes whose triangulation is not mirrored and
published-style partner lists."""

from __future__ import annotations

import re

import numpy as np
import pytest
import trimesh
from bfm_prep.artifact import read_uv, write_model
from bfm_prep.model import MorphableModel
from bfm_prep.synth_asymmetry import partner_list

from tests.bfm_prep.cli_helpers import invoke as run_cli
from tests.bfm_prep.test_asymmetric import check_layout, imperfect
from tests.bfm_prep.test_embedding import check_embedding
from tests.bfm_prep.test_symmetry import face_grid, random_blob


def write_ply(path, V, F):
    trimesh.Trimesh(V, F, process=False).export(path)
    return path


@pytest.fixture
def mesh_file(tmp_path):
    V, F, mirror = face_grid(eyes=True)
    return write_ply(tmp_path / "face.ply", V, F), V, F, mirror


def test_mesh_to_uv_with_picture_and_pairs(mesh_file, tmp_path, capsys):
    path, V, F, mirror = mesh_file
    out, png, pairs = tmp_path / "out" / "uv.h5", tmp_path / "uv.png", tmp_path / "pairs.txt"
    code, stdout, stderr = run_cli(
        ["uv-embed", "--mesh", path, "--out", out, "--plot", png, "--save-pairs", pairs], capsys
    )
    assert code == 0, stderr
    assert (
        "flipped triangles 0" in stdout
        and "symmetry error" in stdout
        and "boundary error" in stdout
    )
    emb = read_uv(out)
    check_embedding(emb, V, F)
    np.testing.assert_array_equal(emb.mirror, mirror)
    assert emb.provenance["inputs"]["mesh"]["sha256"]
    assert emb.checks["time_total_s"] > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    # the saved pairs reproduce the embedding exactly
    out2 = tmp_path / "uv2.h5"
    code, stdout, stderr = run_cli(
        ["uv-embed", "--mesh", path, "--symmetry", pairs, "--out", out2], capsys
    )
    assert code == 0, stderr
    assert "Symmetry (pairs)" in stdout
    np.testing.assert_array_equal(read_uv(out2).uv, emb.uv)


def test_model_to_uv(tmp_path, capsys):
    V, F, _ = face_grid()
    model = MorphableModel(
        shape_mean=V,
        shape_basis=np.zeros((len(V), 3, 2)),
        shape_std=np.ones(2),
        shape_kind=["identity", "expression"],
        faces=F,
    )
    mpath = write_model(tmp_path / "model.h5", model)
    out = tmp_path / "uv.h5"
    code, _, stderr = run_cli(["uv-embed", "--model", mpath, "--out", out], capsys)
    assert code == 0, stderr
    emb = read_uv(out)
    # the model stores float32: the embedding is of the stored mean
    check_embedding(emb, V.astype(np.float32).astype(np.float64), F)
    assert "model" in emb.provenance["inputs"]


def _nonmanifold(tmp_path):
    V, F, _ = face_grid()
    edges = {
        (int(a), int(b)) for a, b in np.concatenate([F[:, [0, 1]], F[:, [1, 2]], F[:, [2, 0]]])
    }
    a, b = next(e for e in sorted(edges) if e[::-1] in edges)
    return write_ply(
        tmp_path / "nm.ply", np.vstack([V, [[0, 0, 200.0]]]), np.vstack([F, [[a, b, len(V)]]])
    )


def _disconnected(tmp_path):
    V, F, _ = face_grid()
    return write_ply(
        tmp_path / "two.ply", np.vstack([V, V + [500.0, 0, 0]]), np.vstack([F, F + len(V)])
    )


def _blob(tmp_path):
    return write_ply(tmp_path / "blob.ply", *random_blob())


def _bad_pairs(tmp_path):
    p = tmp_path / "pairs.txt"
    p.write_text("0 1\n")  # vertices 0 and 1 are no mirror pair
    return p


@pytest.mark.parametrize(
    "case, match",
    [
        ("nonmanifold", "non-manifold"),
        ("disconnected", "not connected"),
        ("blob", "no mirror symmetry found.*--symmetry PAIRS_FILE"),
        ("bad_pairs", "do not map the mesh onto itself"),
        ("missing_pairs", "not 'auto' and no such file"),
        ("both", "exactly one of --model"),
        ("neither", "exactly one of --model"),
        ("missing_mesh", "no such file"),
        ("not_a_model", "not an HDF5 file"),
        ("weights", "--weights"),
    ],
)
def test_bad_inputs_exit_2_one_line_no_file(case, match, mesh_file, tmp_path, capsys):
    good, *_ = mesh_file
    out = tmp_path / "uv.h5"
    src = ["--mesh", good]
    extra = []
    if case == "nonmanifold":
        src = ["--mesh", _nonmanifold(tmp_path)]
    elif case == "disconnected":
        src = ["--mesh", _disconnected(tmp_path)]
    elif case == "blob":
        src = ["--mesh", _blob(tmp_path)]
    elif case == "bad_pairs":
        extra = ["--symmetry", _bad_pairs(tmp_path)]
    elif case == "missing_pairs":
        extra = ["--symmetry", tmp_path / "nope.txt"]
    elif case == "both":
        src = ["--mesh", good, "--model", good]
    elif case == "neither":
        src = []
    elif case == "missing_mesh":
        src = ["--mesh", tmp_path / "nope.ply"]
    elif case == "not_a_model":
        src = ["--model", good]
    elif case == "weights":
        extra = ["--weights", "uniform"]
    code, stdout, stderr = run_cli(
        ["uv-embed", *src, *extra, "--out", out, "--plot", tmp_path / "uv.png"], capsys
    )
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bfm-prep: error: ")
    assert re.search(match, lines[0]), lines[0]
    assert not out.exists() and not (tmp_path / "uv.png").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".uv.h5")]


def test_uv_resample_without_uv_advises_uv_embed(tmp_path, capsys):
    """uv-resample computes the embedding itself without --uv; it has no --symmetry, so the
    advice to give mirror pairs goes through uv-embed."""
    V, F = random_blob()
    model = MorphableModel(
        shape_mean=V,
        shape_basis=np.zeros((len(V), 3, 1)),
        shape_std=np.ones(1),
        shape_kind=["identity"],
        faces=F,
    )
    mpath = write_model(tmp_path / "blob.h5", model)
    out = tmp_path / "g.h5"
    code, _, stderr = run_cli(["uv-resample", "--model", mpath, "--res", "8", "--out", out], capsys)
    assert code == 2 and not out.exists()
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bfm-prep: error: "), stderr
    assert re.search(r"no mirror symmetry found", lines[0]), lines[0]
    assert lines[0].endswith(
        "; pass --uv with a uv.h5 from bfm-prep uv-embed --symmetry PAIRS_FILE."
    ), lines[0]


# --------------------------------------------------------------------------------------------
# meshes whose triangulation is not mirrored (issue 13)


def test_asymmetric_mesh_report_picture_and_saved_pairs(tmp_path, capsys):
    """No partner list: the symmetry from the shape, reported; the saved pairs (with the
    midline as self-pairs) reproduce the layout."""
    m = imperfect("synthetic", "all")
    path = write_ply(tmp_path / "scan.ply", m.vertices, m.faces)
    out, png, pairs = tmp_path / "uv.h5", tmp_path / "uv.png", tmp_path / "pairs.txt"
    code, stdout, stderr = run_cli(
        ["uv-embed", "--mesh", path, "--out", out, "--plot", png, "--save-pairs", pairs], capsys
    )
    assert code == 0, stderr
    assert "Symmetry (geometry: the triangulation is not mirrored" in stdout
    assert re.search(
        r"\d+ mirror pairs \(9\d\.\d% of the vertices\), 52 vertices on the midline, "
        r"\d+ without a partner",
        stdout,
    ), stdout
    assert re.search(r"\d+ mutual nearest partners, \d+ more within [\d.]+ mm", stdout)
    assert "flipped triangles 0" in stdout and not stderr
    emb = read_uv(out)
    check_layout(emb, m)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = [x.split() for x in pairs.read_text().splitlines() if not x.startswith("#")]
    self_pairs = [int(a) for a, b in lines if a == b]
    assert self_pairs == emb.symmetry_line.tolist()
    code, stdout, stderr = run_cli(
        ["uv-embed", "--mesh", path, "--symmetry", pairs, "--out", tmp_path / "uv2.h5"], capsys
    )
    assert code == 0, stderr
    assert "Symmetry (pairs+geometry" in stdout
    np.testing.assert_allclose(read_uv(tmp_path / "uv2.h5").uv, emb.uv, rtol=0, atol=1e-12)


def test_published_style_partner_list(tmp_path, capsys):
    """Self-pairs, repeated vertices and duplicates are resolved and counted."""
    m = imperfect("synthetic", "all")
    path = write_ply(tmp_path / "scan.ply", m.vertices, m.faces)
    listed = partner_list(m, rng=np.random.default_rng(5), repeats=20, duplicates=10)
    symlist = tmp_path / "symlist.txt"
    symlist.write_text("# like face3d's symlist\n" + "".join(f"{a} {b}\n" for a, b in listed))
    code, stdout, stderr = run_cli(
        ["uv-embed", "--mesh", path, "--symmetry", symlist, "--out", tmp_path / "uv.h5"], capsys
    )
    assert code == 0, stderr
    assert f"list: {len(listed)} lines, 10 listed twice, 52 self-pairs (the midline)" in stdout
    assert "20 pairs dropped: each vertex keeps its best mirror image" in stdout
    check_layout(read_uv(tmp_path / "uv.h5"), m)


@pytest.mark.parametrize("case", ["shuffled", "exact", "geometry_blob"])
def test_asymmetric_refusals_exit_2_one_line(case, tmp_path, capsys):
    m = imperfect("synthetic", "flipped")
    path = write_ply(tmp_path / "scan.ply", m.vertices, m.faces)
    tp = m.true_pairs
    if case == "shuffled":
        p = tmp_path / "pairs.txt"
        perm = np.random.default_rng(0).permutation(tp[:, 1])
        p.write_text("".join(f"{a} {b}\n" for a, b in zip(tp[:, 0], perm, strict=True)))
        extra, match = ["--symmetry", p], "do not map the mesh onto itself: .* no mirror images"
    elif case == "exact":
        extra, match = ["--symmetry", "exact"], "no mirror symmetry found.*--symmetry PAIRS_FILE"
    else:
        path = write_ply(tmp_path / "blob.ply", *random_blob())
        extra, match = ["--symmetry", "geometry"], "a mirror partner that their neighbours"
    out = tmp_path / "uv.h5"
    code, _, stderr = run_cli(["uv-embed", "--mesh", path, *extra, "--out", out], capsys)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bfm-prep: error: ")
    assert re.search(match, lines[0]), lines[0]
    assert not out.exists()
