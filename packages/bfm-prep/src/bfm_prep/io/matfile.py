"""MATLAB .mat files, v5 (scipy.io) and v7.3 (HDF5 through h5py), read into one form.

Both versions come back as ``{name: ndarray}`` in MATLAB's orientation: a MATLAB ``3N x 1``
column is a ``(3N, 1)`` array whichever version wrote it (v7.3 stores every array transposed,
so its datasets are transposed back here). Arrays come back with the dtype they were saved
with: MATLAB and scipy may save a whole-number double compactly (e.g. as uint16) in a v5 file,
so readers accept integer dtypes wherever numbers are expected. (scipy's ``mat_dtype=True``
is not used: it silently drops the imaginary part of complex data, which must be refused.)

Recognition is by content, never by extension:
- v5: a 128-byte header whose bytes 124..127 are version 0x0100 and the endian mark ``IM``/``MI``;
- v7.3: the same header with version 0x0200, then an HDF5 file at byte 512 (MATLAB's user block).

Errors are one PrepError sentence naming the file: not a MAT-file (including plain HDF5 files
with no MATLAB header, and MATLAB v4 files, which nothing here writes), truncated file (the
v5 element table is walked and checked against the file size before scipy reads it; HDF5
reports truncation itself), missing variable, wrong shape or data type (:func:`require`).
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterable
from pathlib import Path

import h5py
import numpy as np
import scipy.io

from bfm_prep.errors import PrepError
from bfm_prep.io._checks import dtype_name, fail, require_file

V5 = "5"
V73 = "7.3"
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_MI_MATRIX, _MI_COMPRESSED = 14, 15


class MatContents(dict):
    """``{name: ndarray}`` read from a MAT-file, remembering where it came from.

    Attributes:
        path: the file.
        version: ``"5"`` or ``"7.3"``.
    """

    def __init__(self, data: dict, path: str | os.PathLike, version: str):
        super().__init__(data)
        self.path = Path(path)
        self.version = version
        self._names: list[str] | None = None

    @property
    def names(self) -> list[str]:
        """Every variable in the file (not only those read)."""
        if self._names is None:
            self._names = [name for name, _, _ in mat_variables(self.path)]
        return self._names


# ---------------------------------------------------------------------------------------------
# recognition


def _read_head(path, n: int = 1024) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _mat_header(head: bytes) -> tuple[str | None, str]:
    """(version or None, endian '<'/'>') from the first 128 bytes of a file."""
    if len(head) < 128:
        return None, "<"
    mark = head[126:128]
    if mark == b"IM":
        endian = "<"
    elif mark == b"MI":
        endian = ">"
    else:
        return None, "<"
    ver = struct.unpack(endian + "H", head[124:126])[0]
    if ver == 0x0100:
        return V5, endian
    if ver == 0x0200:
        return V73, endian
    return None, endian


def sniff(path: str | os.PathLike) -> str | None:
    """``"5"``/``"7.3"`` for a MAT-file, ``"hdf5"`` for plain HDF5, else None (never raises)."""
    try:
        head = _read_head(path)
    except OSError:
        return None
    version, _ = _mat_header(head)
    if version is not None:
        return version
    if head[:8] == _HDF5_SIGNATURE:
        return "hdf5"
    return None


def mat_version(path: str | os.PathLike) -> str:
    """The MAT-file version, ``"5"`` or ``"7.3"``, or a PrepError saying what the file is not."""
    require_file(path)
    head = _read_head(path)
    version, _ = _mat_header(head)
    if version is not None:
        return version
    if head.startswith(b"MATLAB") and len(head) < 128:
        raise fail(
            path,
            f"is truncated: only {len(head)} bytes, shorter than the 128-byte MATLAB header",
            "copy the file again",
        )
    if head[:8] == _HDF5_SIGNATURE:
        raise fail(
            path,
            "is an HDF5 file but not a MATLAB v7.3 MAT-file (it has no MATLAB header)",
            "pass the .mat file itself",
        )
    if not head:
        raise fail(path, "is empty, not a MATLAB MAT-file")
    raise fail(
        path,
        "is not a MATLAB MAT-file (no v5 or v7.3 header)",
        "pass a .mat file saved by MATLAB (v5 or v7.3) or scipy.io.savemat",
    )


# ---------------------------------------------------------------------------------------------
# v5


def _check_v5_elements(path, endian: str) -> None:
    """Walk the top-level data elements of a v5 file; a PrepError if one runs past the end."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        offset = 128
        while offset + 8 <= size:
            f.seek(offset)
            mtype, nbytes = struct.unpack(endian + "II", f.read(8))
            if mtype == 0 and nbytes == 0:  # zero padding at the end
                break
            if mtype not in (_MI_MATRIX, _MI_COMPRESSED):
                raise fail(
                    path,
                    f"is corrupt: unexpected MATLAB data element type {mtype} at byte {offset}",
                    "copy the file again",
                )
            end = offset + 8 + nbytes
            if end > size:
                raise fail(
                    path,
                    f"is truncated: a variable stored at byte {offset} needs "
                    f"{end} bytes but the file ends at {size}",
                    "copy the file again",
                )
            if mtype == _MI_MATRIX and end % 8:
                end += 8 - end % 8
            offset = end
        # Fewer than 8 bytes left: zero padding, or the start of a cut-off element's tag.
        f.seek(offset)
        rest = f.read()
        if offset < size and any(rest):
            raise fail(
                path,
                f"is truncated: the file ends {len(rest)} bytes into a variable's header at "
                f"byte {offset}",
                "copy the file again",
            )


def _load_v5(path, keys: list[str] | None, endian: str) -> dict:
    _check_v5_elements(path, endian)
    try:
        d = scipy.io.loadmat(path, squeeze_me=False, variable_names=keys)
    except Exception as e:  # scipy raises many types for damaged files
        raise fail(
            path,
            f"cannot be read as a MATLAB v5 MAT-file ({type(e).__name__}: {e})",
            "the file is truncated or damaged; copy it again",
        ) from None
    return {k: v for k, v in d.items() if not k.startswith("__")}


# ---------------------------------------------------------------------------------------------
# v7.3


def open_hdf5(path):
    """``h5py.File(path, "r")``, or a PrepError saying the file is not HDF5 / is truncated."""
    require_file(path)
    if not h5py.is_hdf5(path):
        size = os.path.getsize(path)
        raise fail(
            path,
            "is empty, not an HDF5 file" if size == 0 else "is not an HDF5 file",
            "pass the .h5 file itself",
        )
    try:
        return h5py.File(path, "r")
    except OSError as e:
        text = str(e)
        if "truncated" in text:
            reason = _h5_reason(text).removeprefix("truncated file: ")
            sizes = re.search(r"\beof = (\d+).*stored_eof = (\d+)", reason)
            if sizes:
                reason = f"{sizes[1]} of its {sizes[2]} bytes"
            raise fail(path, f"is truncated ({reason})", "copy the file again") from None
        raise fail(
            path,
            f"cannot be opened as HDF5 ({_h5_reason(text)})",
            "the file is truncated or damaged; copy it again",
        ) from None


def _h5_reason(text: str) -> str:
    """h5py's "Unable to open file (truncated file: ...)" -> "truncated file: ..." (no
    brackets: callers put the reason in brackets themselves)."""
    text = text.strip().split("\n")[0]
    text = (
        text.replace("Unable to open file ", "")
        .replace("Unable to synchronously open file ", "")
        .strip()
    )
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1].strip()
    return text


def _v73_value(ds, path, name):
    """One top-level v7.3 dataset as a MATLAB-oriented array (None for what is skipped)."""
    cls = ds.attrs.get("MATLAB_class", b"")
    cls = cls.decode() if isinstance(cls, bytes) else str(cls)
    try:
        if ds.attrs.get("MATLAB_empty", 0):
            return np.zeros((0, 0), dtype=_MATLAB_DTYPES.get(cls, np.float64))
        a = ds[()]
    except OSError as e:
        raise fail(
            path,
            f"variable {name!r} cannot be read ({_h5_reason(str(e))})",
            "the file is truncated or damaged; copy it again",
        ) from None
    if isinstance(a, np.ndarray) and a.dtype.names and set(a.dtype.names) >= {"real", "imag"}:
        a = a["real"] + 1j * a["imag"]
    a = np.asarray(a)
    if a.ndim >= 2:
        a = a.T
    if cls == "char":
        return np.array("".join(chr(c) for c in a.T.reshape(-1)))
    if cls == "logical":
        return a.astype(bool)
    if cls == "cell" or a.dtype == object or h5py.check_dtype(ref=a.dtype) is not None:
        return np.empty(a.shape, dtype=object)
    return a


_MATLAB_DTYPES = {
    "double": np.float64,
    "single": np.float32,
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
    "uint16": np.uint16,
    "int32": np.int32,
    "uint32": np.uint32,
    "int64": np.int64,
    "uint64": np.uint64,
    "logical": bool,
}


def _load_v73(path, keys: list[str] | None) -> dict:
    out = {}
    with open_hdf5(path) as f:
        try:
            names = [k for k in f.keys() if not k.startswith("#")]
        except Exception as e:
            raise fail(
                path,
                f"cannot be read as HDF5 ({e})",
                "the file is truncated or damaged; copy it again",
            ) from None
        for name in names:
            if keys is not None and name not in keys:
                continue
            try:
                item = f[name]
            except Exception as e:
                raise fail(
                    path,
                    f"variable {name!r} cannot be read ({_h5_reason(str(e))})",
                    "the file is truncated or damaged; copy it again",
                ) from None
            if isinstance(item, h5py.Dataset):
                out[name] = _v73_value(item, path, name)
            else:  # a struct or a sparse matrix: kept as an opaque marker
                out[name] = np.empty((1, 1), dtype=object)
    return out


# ---------------------------------------------------------------------------------------------
# public


def load_mat(path: str | os.PathLike, keys: Iterable[str] | None = None) -> MatContents:
    """Read a MAT-file (v5 or v7.3) into ``{name: ndarray}`` in MATLAB's orientation.

    Args:
        path: the file.
        keys: read only these variables (the others are skipped; missing ones are simply
            absent, see :func:`require`).
    Raises:
        PrepError: not a MAT-file, truncated or damaged.
    """
    version = mat_version(path)
    keys = None if keys is None else list(keys)
    if version == V5:
        _, endian = _mat_header(_read_head(path, 128))
        data = _load_v5(path, keys, endian)
    else:
        if not h5py.is_hdf5(path):
            raise fail(
                path,
                "has a MATLAB v7.3 header but no HDF5 data after it",
                "the file is truncated or damaged; copy it again",
            )
        data = _load_v73(path, keys)
    return MatContents(data, path, version)


def mat_variables(path: str | os.PathLike) -> list[tuple[str, tuple[int, ...], str]]:
    """``[(name, shape, class)]`` of every variable, without reading the data."""
    version = mat_version(path)
    if version == V5:
        _, endian = _mat_header(_read_head(path, 128))
        _check_v5_elements(path, endian)
        try:
            return [
                (n, tuple(int(s) for s in shape), cls) for n, shape, cls in scipy.io.whosmat(path)
            ]
        except Exception as e:
            raise fail(
                path,
                f"cannot be read as a MATLAB v5 MAT-file ({type(e).__name__}: {e})",
                "the file is truncated or damaged; copy it again",
            ) from None
    if not h5py.is_hdf5(path):
        raise fail(
            path,
            "has a MATLAB v7.3 header but no HDF5 data after it",
            "the file is truncated or damaged; copy it again",
        )
    out = []
    with open_hdf5(path) as f:
        for name in f.keys():
            if name.startswith("#"):
                continue
            item = f[name]
            cls = item.attrs.get("MATLAB_class", b"")
            cls = cls.decode() if isinstance(cls, bytes) else str(cls)
            if isinstance(item, h5py.Dataset):
                shape = tuple(int(s) for s in item.shape[::-1])
                if item.attrs.get("MATLAB_empty", 0):
                    shape = (0, 0)
            else:
                shape = ()
            out.append((name, shape, cls or "unknown"))
    return out


_DTYPE_KINDS = {"float": "iuf", "real": "iuf", "int": "iuf", "index": "iuf"}


def require(
    d: dict,
    key: str,
    path: str | os.PathLike | None = None,
    *,
    shape: tuple[int | None, ...] | None = None,
    dtype: str | None = "real",
    what: str = "",
) -> np.ndarray:
    """``d[key]``, checked: a PrepError for a missing variable, wrong shape or wrong dtype.

    Args:
        d: from :func:`load_mat` (its ``path`` is used when ``path`` is None).
        key: the variable name.
        shape: expected shape; ``None`` entries match any size (e.g. ``(None, 3)``).
        dtype: ``"real"``/``"float"`` (integer or floating numbers), ``"int"``/``"index"``
            (the same; whole-number checks belong to the caller), or None (anything).
        what: the kind of file expected, for the hint (e.g. ``"the BFM 2009 file"``).
    """
    path = path if path is not None else getattr(d, "path", "<memory>")
    if key not in d:
        names = list(getattr(d, "names", None) or d.keys())
        found = ", ".join(sorted(names)[:12]) or "none"
        if len(names) > 12:
            found += ", ..."
        hint = f"pass {what}" if what else "pass the right file"
        raise fail(path, f"missing variable {key!r} (found: {found})", hint)
    a = np.asarray(d[key])
    if dtype is not None and a.dtype.kind not in _DTYPE_KINDS.get(dtype, "iuf"):
        raise fail(
            path,
            f"variable {key!r} has the wrong data type {dtype_name(a)}",
            "expected real numbers",
        )
    if shape is not None:
        ok = a.ndim == len(shape) and all(
            w is None or w == s for w, s in zip(shape, a.shape, strict=True)
        )
        if not ok:
            want = " x ".join("n" if w is None else str(w) for w in shape)
            raise fail(
                path,
                f"variable {key!r} has the wrong shape "
                f"{' x '.join(map(str, a.shape)) or 'scalar'}, expected {want}",
            )
    return a


__all__ = [
    "MatContents",
    "load_mat",
    "open_hdf5",
    "mat_variables",
    "mat_version",
    "require",
    "sniff",
    "PrepError",
]
