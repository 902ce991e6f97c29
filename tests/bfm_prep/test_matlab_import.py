"""``bfm-prep import-matlab``: the original's resampled model.mat -> UV-grid artifact."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
from bfm_prep.artifact import read_grid
from bfm_prep.errors import PrepError
from bfm_prep.matlab_import import import_matlab_model
from bfm_prep.resample import grid_faces, grid_uv

from tests.bfm_prep.test_resample import assert_aflw21_layout
from tests.tolerances import ARTIFACT_RTOL, TOL

RTOL, ATOL = TOL[np.float64]


def write_original_format(path, res=10, k=4, seed=0):
    """A model.mat laid out like the original's resampleModel output: xyz interleaved, faces
    1-based and clockwise seen from the front (as in model_112.mat)."""
    rng = np.random.default_rng(seed)
    g = grid_uv(res)
    mean = np.stack(
        [160 * (g[:, 0] - 0.5), 200 * (g[:, 1] - 0.5), 50 * np.exp(-((g - 0.5) ** 2).sum(1) / 0.1)],
        1,
    )
    pcs = rng.normal(0, 3, (res * res, 3, k))
    mat = {
        "nverts": np.array([[res * res]], dtype=np.uint16),
        "shapeMU": mean.reshape(-1, 1),
        "shapePC": pcs.reshape(-1, k),
        "faces": (grid_faces(res, ccw=False) + 1).astype(np.uint16),
    }
    scipy.io.savemat(path, mat)
    return mat


def _assert_grid_reproduces(g, mat, exact=True):
    n = int(mat["nverts"].item())
    r = int(round(np.sqrt(n)))
    k = mat["shapePC"].shape[1]
    tol = dict(rtol=0, atol=0) if exact else dict(rtol=ARTIFACT_RTOL, atol=ARTIFACT_RTOL * 200)
    assert g.res == r
    np.testing.assert_allclose(g.model.shape_mean.reshape(-1, 1), mat["shapeMU"], **tol)
    np.testing.assert_allclose(g.model.shape_basis.reshape(3 * n, k), mat["shapePC"], **tol)
    # the same triangles, 0-based, with the winding made counter-clockwise from the front
    f = mat["faces"].astype(np.int64) - 1
    np.testing.assert_array_equal(g.model.faces, f[:, [0, 2, 1]])
    np.testing.assert_array_equal(g.model.shape_std, np.ones(k))
    np.testing.assert_allclose(g.uv, grid_uv(r), rtol=RTOL, atol=ATOL)
    assert g.inside.all()


class TestImport:
    def test_exact(self, tmp_path):
        mat = write_original_format(tmp_path / "model.mat")
        g = import_matlab_model(tmp_path / "model.mat")
        _assert_grid_reproduces(g, mat)
        assert g.model.shape_kind == ["identity"] * 2 + ["expression"] * 2
        x = g.model.shape_mean
        n = np.cross(
            x[g.model.faces[:, 1]] - x[g.model.faces[:, 0]],
            x[g.model.faces[:, 2]] - x[g.model.faces[:, 0]],
        )
        assert n[:, 2].sum() > 0  # counter-clockwise from the front, as the artifact wants

    def test_n_identity_and_inside(self, tmp_path):
        write_original_format(tmp_path / "model.mat", k=5)
        mask = np.ones(100, bool)
        mask[:7] = False
        g = import_matlab_model(tmp_path / "model.mat", n_identity=1, inside=mask)
        assert g.model.shape_kind == ["identity"] + ["expression"] * 4
        np.testing.assert_array_equal(g.inside, mask)
        with pytest.raises(PrepError, match="^n_identity 6 is outside 0..5"):
            import_matlab_model(tmp_path / "model.mat", n_identity=6)

    def test_command(self, tmp_path, run_cli):
        mat = write_original_format(tmp_path / "model.mat")
        (tmp_path / "lm.anl").write_text("% grid landmarks, 1-based\n1\n100\n45\n")
        np.save(tmp_path / "inside.npy", np.arange(100) % 3 > 0)
        res = run_cli(
            "import-matlab",
            tmp_path / "model.mat",
            "--out",
            tmp_path / "g.h5",
            "--landmarks",
            f"pts={tmp_path / 'lm.anl'}",
            "--n-identity",
            "3",
            "--inside",
            tmp_path / "inside.npy",
        )
        assert res.returncode == 0, res.stderr
        g = read_grid(tmp_path / "g.h5")
        np.testing.assert_array_equal(g.model.landmarks["pts"], [0, 99, 44])
        np.testing.assert_array_equal(g.inside, np.arange(100) % 3 > 0)
        assert g.model.n_identity == 3 and g.model.n_expression == 1
        g.inside[:] = True
        _assert_grid_reproduces(g, mat, exact=False)
        assert {"model_mat", "inside", "landmarks_pts"} <= set(g.model.provenance["inputs"])

    @pytest.mark.parametrize(
        "case",
        [
            "missing",
            "garbage",
            "not_a_model",
            "not_square",
            "short_mean",
            "faces_out_of_range",
            "landmark_range",
            "mask_length",
        ],
    )
    def test_bad_inputs_exit_2_one_line_no_output(self, tmp_path, run_cli, case):
        path = tmp_path / "model.mat"
        extra = []
        mat = write_original_format(path)
        if case == "missing":
            path = tmp_path / "nope.mat"
        elif case == "garbage":
            path.write_bytes(b"\x00garbage" * 40)
        elif case == "not_a_model":
            scipy.io.savemat(path, {"UV": np.zeros((10, 2))})
        elif case == "not_square":
            scipy.io.savemat(path, {**mat, "nverts": np.array([[99]])})
        elif case == "short_mean":
            scipy.io.savemat(path, {**mat, "shapeMU": mat["shapeMU"][:-3]})
        elif case == "faces_out_of_range":
            scipy.io.savemat(path, {**mat, "faces": mat["faces"] + 100})
        elif case == "landmark_range":
            (tmp_path / "lm.anl").write_text("101\n")
            extra = ["--landmarks", f"x={tmp_path / 'lm.anl'}"]
        elif case == "mask_length":
            np.save(tmp_path / "m.npy", np.ones(99, bool))
            extra = ["--inside", tmp_path / "m.npy"]
        res = run_cli("import-matlab", path, "--out", tmp_path / "g.h5", *extra)
        assert res.returncode == 2, (res.stdout, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("bfm-prep: error:"), res.stderr
        assert not (tmp_path / "g.h5").exists() and not list(tmp_path.glob(".g.h5*"))

    @pytest.mark.parametrize("case", ["n_identity", "missing_mask"])
    def test_errors_name_the_options(self, tmp_path, run_cli, case):
        """The library names its parameters (n_identity, inside); the command its options."""
        path = tmp_path / "model.mat"
        write_original_format(path)
        if case == "n_identity":
            extra = ["--n-identity", "6"]
            sentence = f"--n-identity 6 is outside 0..4, the number of components in {path}."
        else:
            extra = ["--inside", tmp_path / "nope.npy"]
            sentence = f"{tmp_path / 'nope.npy'}: no such file; check the --inside path."
        res = run_cli("import-matlab", path, "--out", tmp_path / "g.h5", *extra)
        assert res.returncode == 2
        assert res.stderr.strip() == f"bfm-prep: error: {sentence}"
        assert not (tmp_path / "g.h5").exists()


# ---------------------------------------------------------------------------------------------
# the original's model_112.mat


AFLW_BROWS, AFLW_EYES, AFLW_CHIN = np.arange(0, 6), np.arange(6, 12), 20


@pytest.mark.reference
class TestModel112:
    @pytest.fixture
    def original(self, ref):
        path = ref("3dmmasstn/model_112.mat")
        return path, scipy.io.loadmat(path)

    def test_reproduces_model_112_exactly(self, original, tmp_path, run_cli):
        path, mat = original
        g = import_matlab_model(path)
        _assert_grid_reproduces(g, mat)
        assert g.res == 112 and g.model.n_identity == 5 and g.model.n_expression == 5
        res = run_cli("import-matlab", path, "--out", tmp_path / "g.h5")
        assert res.returncode == 0, res.stderr
        _assert_grid_reproduces(read_grid(tmp_path / "g.h5"), mat, exact=False)

    def test_orientation_of_the_21_landmarks(self, original, ref, tmp_path, run_cli):
        """Rows from the top: brows above eyes above nose above mouth above chin. Columns: the
        AFLW points run from the image's left to its right (brows 1-6, eyes 7-12, ear-nose-ear
        13-17, mouth 18-20), i.e. column 0 is the viewer's left in a frontal view, which is the
        subject's right and model x < 0 (docs/uv-grid.md)."""
        path, _ = original
        lm_path = ref("3dmmasstn/landmarks/Landmarks21_112.anl")
        res = run_cli(
            "import-matlab",
            path,
            "--out",
            tmp_path / "g.h5",
            "--landmarks",
            f"aflw21={lm_path}",
            "--landmarks",
            f"ibug68={ref('3dmmasstn/landmarks/Landmarks68_112.anl')}",
        )
        assert res.returncode == 0, res.stderr
        g = read_grid(tmp_path / "g.h5")
        lm = g.model.landmarks["aflw21"]
        assert lm.size == 21 and g.model.landmarks["ibug68"].size == 68
        assert_aflw21_layout(lm, 112)
        # the geometry agrees: model y falls down the rows, model x grows along the columns
        x = g.model.shape_mean[lm]
        assert x[AFLW_BROWS, 1].min() > x[AFLW_EYES, 1].max() > x[AFLW_CHIN, 1]
        assert x[0, 0] < 0 < x[5, 0] and x[12, 0] < x[15, 0] < x[16, 0]
        mean = g.model.shape_mean.reshape(112, 112, 3)
        assert np.corrcoef(np.tile(np.arange(112), 112), mean[..., 0].ravel())[0, 1] > 0.9
        assert np.corrcoef(np.repeat(np.arange(112), 112), mean[..., 1].ravel())[0, 1] < -0.9
