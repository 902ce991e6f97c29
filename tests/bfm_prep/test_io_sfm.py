"""The Surrey Face Model .npz files (real reference files) and bad archives."""

from __future__ import annotations

import numpy as np
import pytest
from bfm_prep.errors import PrepError
from bfm_prep.io.sfm import load_sfm, load_sfm_uv

from tests.bfm_prep.test_io_formats import truncated_copy


@pytest.mark.reference
def test_real_sfm(ref):
    shape, blend = ref("sfm/sfm_shape_3448.npz"), ref("sfm/expression_blendshapes_3448.npz")
    m = load_sfm(shape, blend)
    z, b = np.load(shape), np.load(blend)
    assert m.n_vertices == 3448 and m.faces.shape == (6736, 3)
    assert m.shape_kind == ["identity"] * 63 + ["expression"] * 6
    np.testing.assert_allclose(
        m.shape_std[:63], np.sqrt(z["eigenvalues"].ravel().astype(np.float64))
    )
    np.testing.assert_array_equal(m.shape_std[63:], np.ones(6))
    # identity: basis * sqrt(eigenvalue); the unit components are orthonormal
    k = 5
    np.testing.assert_allclose(
        m.shape_basis[k // 3, k % 3, 0],
        float(z["basis"][k, 0]) * np.sqrt(float(z["eigenvalues"][0, 0])),
        rtol=1e-6,
    )
    unit = (m.shape_basis[:, :, :63] / m.shape_std[:63]).reshape(-1, 63)
    np.testing.assert_allclose(unit.T @ unit, np.eye(63), atol=1e-5)
    # blendshapes as stored (mm offsets), xyz interleaved
    np.testing.assert_allclose(
        m.shape_basis[:, :, 63:].reshape(-1, 6), b["deformations"], rtol=1e-7
    )
    np.testing.assert_allclose(m.shape_mean.reshape(-1), z["mean"].ravel(), rtol=1e-7)
    # front-facing (the file's own winding already is)
    v = m.shape_mean
    n = np.cross(v[m.faces[:, 1]] - v[m.faces[:, 0]], v[m.faces[:, 2]] - v[m.faces[:, 0]])
    assert n[:, 2].sum() > 0 and m.provenance["parameters"]["faces_reversed"] is False
    assert m.provenance["parameters"]["expression_names"][3] == "happiness"
    assert load_sfm_uv(shape).shape == (3448, 2)
    assert load_sfm(shape, n_shape=10).n_components == 10


@pytest.mark.reference
def test_sfm_bad_archives(tmp_path, ref):
    shape = ref("sfm/sfm_shape_3448.npz")
    z = dict(np.load(shape))
    p = tmp_path / "no_tri.npz"
    np.savez(p, **{k: v for k, v in z.items() if k != "triangles"})
    with pytest.raises(
        PrepError,
        match=r"no_tri\.npz: missing array 'triangles' \(found: mean, basis, "
        r"eigenvalues, uv\); pass the Surrey Face Model",
    ):
        load_sfm(p)
    p2 = tmp_path / "neg.npz"
    np.savez(p2, **{**z, "eigenvalues": -z["eigenvalues"]})
    with pytest.raises(PrepError, match=r"neg\.npz: eigenvalues has negative values"):
        load_sfm(p2)
    p3 = tmp_path / "blend.npz"
    np.savez(p3, deformations=np.zeros((30, 6), np.float32))
    with pytest.raises(
        PrepError,
        match=r"blend\.npz: deformations has the wrong shape \(30, 6\): "
        r"expected 10344 rows",
    ):
        load_sfm(shape, p3)
    cut = truncated_copy(shape, tmp_path / "cut.npz", 1000)
    with pytest.raises(
        PrepError, match=r"cut\.npz: is not a NumPy \.npz archive \(or is truncated\)"
    ):
        load_sfm(cut)
    p4 = tmp_path / "tri.npz"
    np.savez(p4, **{**z, "triangles": z["triangles"] + 1})
    with pytest.raises(
        PrepError,
        match=r"tri\.npz: triangles has an index out of range: values run "
        r"from 1 to 3448, valid 0-based indices are 0\.\.3447",
    ):
        load_sfm(p4)
