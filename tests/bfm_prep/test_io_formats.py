"""Writers of small files in the exact external formats, and tests of the MAT-file reader.

The writers are imported by the other test_io_* modules. They follow the real files:
- MATLAB v5 through scipy.io.savemat (what MATLAB's ``save -v7`` also produces, compressed);
- MATLAB v7.3 as MATLAB writes it: an HDF5 file with a 512-byte user block that starts with
  the 128-byte MATLAB header (text, then version 0x0200 and the endian mark ``IM``), every
  array stored transposed (MATLAB is column-major) with a ``MATLAB_class`` attribute;
- BFM 2017 statismo HDF5, CoarseData Exp_Pca.bin (raw little-endian).
"""

from __future__ import annotations

import os
import struct

import h5py
import numpy as np
import pytest
import scipy.io
from bfm_prep.errors import PrepError
from bfm_prep.io.matfile import load_mat, mat_variables, mat_version, require
from scipy.io.matlab import matfile_version

_CLASS = {
    np.dtype(np.float64): "double",
    np.dtype(np.float32): "single",
    np.dtype(np.int32): "int32",
    np.dtype(np.uint32): "uint32",
    np.dtype(np.uint16): "uint16",
    np.dtype(np.int64): "int64",
    np.dtype(np.uint8): "uint8",
    np.dtype(np.int16): "int16",
    np.dtype(bool): "logical",
}


# ---------------------------------------------------------------------------------------------
# writers


def write_mat5(path, data: dict, compress: bool = True):
    """A MATLAB v5 MAT-file (scipy.io.savemat, oned_as='column' like MATLAB vectors)."""
    scipy.io.savemat(path, data, do_compression=compress, oned_as="column")
    return path


def write_mat73(path, data: dict):
    """A MATLAB v7.3 MAT-file laid out as MATLAB writes it (see the module docstring)."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, value in data.items():
            if isinstance(value, str):
                codes = np.array([ord(c) for c in value], dtype=np.uint16).reshape(1, -1)
                ds = f.create_dataset(name, data=codes.T)
                ds.attrs["MATLAB_class"] = np.bytes_("char")
                ds.attrs["MATLAB_int_decode"] = np.int32(2)
                continue
            a = np.asarray(value)
            if a.ndim == 0:
                a = a.reshape(1, 1)
            elif a.ndim == 1:
                a = a.reshape(-1, 1)
            ds = f.create_dataset(name, data=np.ascontiguousarray(a.T))
            ds.attrs["MATLAB_class"] = np.bytes_(_CLASS[a.dtype])
    text = (
        b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Sat Nov 21 12:00:00 2026 "
        b"HDF5 schema 1.00 ."
    ).ljust(116, b" ")
    header = text + b"\x00" * 8 + struct.pack("<H", 0x0200) + b"IM"
    with open(path, "r+b") as f:
        f.write(header + b"\x00" * (512 - len(header)))
    return path


def write_bfm2017(path, *, mean, basis, variance, cells, points=None, exp=None, color=None):
    """A statismo-layout BFM 2017 .h5. ``exp``/``color``: (mean, basis, variance) or None."""
    with h5py.File(path, "w") as f:
        f["shape/model/mean"] = np.asarray(mean, dtype=np.float32)
        f["shape/model/pcaBasis"] = np.asarray(basis, dtype=np.float32)
        f["shape/model/pcaVariance"] = np.asarray(variance, dtype=np.float32)
        f["shape/model/noiseVariance"] = np.float32(0)
        f["shape/representer/cells"] = np.asarray(cells, dtype=np.uint32)
        if points is not None:
            f["shape/representer/points"] = np.asarray(points, dtype=np.float32)
        for group, part in (("expression", exp), ("color", color)):
            if part is not None:
                m, b, v = part
                f[f"{group}/model/mean"] = np.asarray(m, dtype=np.float32)
                f[f"{group}/model/pcaBasis"] = np.asarray(b, dtype=np.float32)
                f[f"{group}/model/pcaVariance"] = np.asarray(v, dtype=np.float32)
    return path


def write_coarsedata(path, mean: np.ndarray, components: np.ndarray):
    """Exp_Pca.bin: int32 D, float32 mean (3V,), then D float32 components (3V,) each."""
    components = np.asarray(components, dtype="<f4")
    d = components.shape[0]
    with open(path, "wb") as f:
        f.write(struct.pack("<i", d))
        f.write(np.asarray(mean, dtype="<f4").reshape(-1).tobytes())
        f.write(components.reshape(d, -1).tobytes())
    return path


def truncated_copy(src, dst, size: int):
    with open(src, "rb") as f:
        data = f.read(size)
    with open(dst, "wb") as f:
        f.write(data)
    return dst


# ---------------------------------------------------------------------------------------------
# the writers produce what scipy/MATLAB readers recognise


def test_writers_make_real_mat_versions(tmp_path):
    a = np.arange(6, dtype=np.float64).reshape(3, 2)
    p5 = write_mat5(tmp_path / "a5.mat", {"a": a})
    p73 = write_mat73(tmp_path / "a73.mat", {"a": a})
    assert matfile_version(str(p5))[0] == 1
    assert matfile_version(str(p73)) == (2, 0)
    assert h5py.is_hdf5(p73)
    with h5py.File(p73, "r") as f:
        assert f.userblock_size == 512
        assert f["a"].shape == (2, 3)  # stored transposed, as MATLAB does
        assert f["a"].attrs["MATLAB_class"] == b"double"
    assert mat_version(p5) == "5" and mat_version(p73) == "7.3"


@pytest.mark.parametrize("writer", [write_mat5, write_mat73])
def test_load_mat_returns_matlab_orientation(tmp_path, writer):
    col = np.arange(9, dtype=np.float32).reshape(9, 1)
    mat = np.arange(12, dtype=np.float64).reshape(4, 3)
    idx = np.array([[1, 2, 3]], dtype=np.uint16)
    p = writer(tmp_path / "x.mat", {"col": col, "mat": mat, "idx": idx})
    d = load_mat(p)
    assert d["col"].shape == (9, 1) and d["col"].dtype == np.float32
    np.testing.assert_array_equal(d["col"], col)
    np.testing.assert_array_equal(d["mat"], mat)
    assert d["idx"].dtype == np.uint16 and d["idx"].shape == (1, 3)
    assert sorted(n for n, _, _ in mat_variables(p)) == ["col", "idx", "mat"]
    assert dict((n, s) for n, s, _ in mat_variables(p))["mat"] == (4, 3)
    only = load_mat(p, keys=["mat"])
    assert list(only) == ["mat"] and sorted(only.names) == ["col", "idx", "mat"]


def test_v5_compact_doubles_and_complex_survive(tmp_path):
    # scipy and MATLAB may store whole-number doubles as small integers: the values survive
    z = np.array([[1 + 2j, 3 - 1j]])
    p = write_mat5(tmp_path / "f.mat", {"faces": np.array([[1.0, 2.0, 70000.0]]), "z": z})
    d = load_mat(p)
    np.testing.assert_array_equal(d["faces"], [[1, 2, 70000]])
    np.testing.assert_array_equal(d["z"], z)  # complex stays complex, to be refused by readers


def test_v73_char_variable_is_text(tmp_path):
    p = write_mat73(tmp_path / "c.mat", {"name": "hello", "x": np.ones((2, 1))})
    assert str(load_mat(p)["name"]) == "hello"


def test_not_a_mat_file(tmp_path):
    p = tmp_path / "notes.mat"
    p.write_text("just some text that is long enough to fill a MATLAB header..." * 4)
    with pytest.raises(PrepError, match=r"notes\.mat: is not a MATLAB MAT-file"):
        load_mat(p)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.mat"
    p.write_bytes(b"")
    with pytest.raises(PrepError, match=r"empty\.mat: is empty"):
        load_mat(p)


def test_missing_file(tmp_path):
    with pytest.raises(PrepError, match=r"nothere\.mat: no such file"):
        load_mat(tmp_path / "nothere.mat")


def test_plain_hdf5_is_not_a_mat_file(tmp_path):
    p = tmp_path / "plain.mat"
    with h5py.File(p, "w") as f:
        f["a"] = np.ones(3)
    with pytest.raises(PrepError, match=r"plain\.mat: is an HDF5 file but not a MATLAB v7\.3"):
        load_mat(p)


def test_truncated_v5_names_the_byte(tmp_path):
    p = write_mat5(
        tmp_path / "big.mat", {"a": np.ones((100, 3)), "b": np.zeros((50, 1))}, compress=False
    )
    t = truncated_copy(p, tmp_path / "cut.mat", os.path.getsize(p) - 100)
    with pytest.raises(
        PrepError,
        match=r"cut\.mat: is truncated: a variable stored at byte \d+ "
        r"needs \d+ bytes but the file ends at \d+",
    ):
        load_mat(t)


def test_truncated_v5_header(tmp_path):
    p = write_mat5(tmp_path / "a.mat", {"a": np.ones(3)})
    t = truncated_copy(p, tmp_path / "cut.mat", 60)
    with pytest.raises(PrepError, match=r"cut\.mat: is truncated: only 60 bytes"):
        load_mat(t)


def test_truncated_v73(tmp_path):
    p = write_mat73(tmp_path / "a.mat", {"a": np.ones((400, 3))})
    t = truncated_copy(p, tmp_path / "cut.mat", os.path.getsize(p) // 2)
    with pytest.raises(PrepError, match=r"cut\.mat: is truncated"):
        load_mat(t)
    t2 = truncated_copy(p, tmp_path / "cut2.mat", 300)  # inside the user block
    with pytest.raises(PrepError, match=r"cut2\.mat: has a MATLAB v7\.3 header but no HDF5 data"):
        load_mat(t2)


def test_require_messages(tmp_path):
    p = write_mat5(tmp_path / "r.mat", {"a": np.ones((4, 3)), "s": "text"})
    d = load_mat(p)
    assert require(d, "a", shape=(None, 3)).shape == (4, 3)
    with pytest.raises(
        PrepError,
        match=r"r\.mat: missing variable 'b' \(found: a, s\); pass the "
        r"thing",
    ):
        require(d, "b", what="the thing")
    with pytest.raises(
        PrepError,
        match=r"r\.mat: variable 'a' has the wrong shape 4 x 3, "
        r"expected n x 2",
    ):
        require(d, "a", shape=(None, 2))
    with pytest.raises(PrepError, match=r"r\.mat: variable 's' has the wrong data type text"):
        require(d, "s")
