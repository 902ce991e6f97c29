"""The artifact files: the contract between bfm-prep and the rest (docs/artifact-format.md).

Three formats share one layout of HDF5 groups:
- ``stn-morphable-model``: a model on its own mesh (``bfm-prep build-expression``);
- ``stn-uv-embedding``: a UV flattening of a mesh (``bfm-prep uv-embed``);
- ``stn-uv-grid-model``: a model resampled onto an R x R UV grid (``bfm-prep uv-resample``),
  read by ``stn_core.UVGridModel`` with h5py alone.

Every file is written atomically (:func:`bfm_prep.atomic.atomic_h5`: a temporary file in the
same folder, then a rename), so an interrupted run never leaves a file that loads; every file
is opened for reading with the checked open of all HDF5 readers
(:func:`bfm_prep.io.matfile.open_hdf5`), so a truncated file is a one-line PrepError.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from bfm_prep import __version__
from bfm_prep.atomic import atomic_h5
from bfm_prep.errors import PrepError
from bfm_prep.io._checks import require_file
from bfm_prep.io.matfile import open_hdf5
from bfm_prep.model import MorphableModel
from bfm_prep.validation import (
    FLOAT,
    INDEX,
    MASK,
    TEXT,
    DamagedArray,
    check_finite,
    check_kind,
    check_positive,
    check_shape,
)

FORMAT_MODEL = "stn-morphable-model"
FORMAT_UV = "stn-uv-embedding"
FORMAT_GRID = "stn-uv-grid-model"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = {FORMAT_MODEL: (1,), FORMAT_UV: (1,), FORMAT_GRID: (1,)}


@dataclass
class UVEmbedding:
    """A symmetric UV flattening of a mesh.

    Attributes:
        uv: (N, 2) float64 in [0, 1]^2; u grows with model x, v with model y (up).
        faces: (M, 3) int64, 0-based (the mesh that was flattened).
        mirror: (N,) int64, the mirror partner of each vertex (itself on the symmetry line).
        symmetry_line: (P,) int64, vertices of the symmetry line from the chin boundary to
            the forehead boundary (all at u = 0.5).
        plane: (4,) float64, the symmetry plane n . x = d as (n_x, n_y, n_z, d), |n| = 1.
        checks: named scalar diagnostics (``flipped_triangles``, ``symmetry_error``,
            ``boundary_error``, ...).
        provenance: as for :class:`MorphableModel`.
    """

    uv: np.ndarray
    faces: np.ndarray
    mirror: np.ndarray
    symmetry_line: np.ndarray
    plane: np.ndarray
    checks: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)


@dataclass
class UVGridModel:
    """A morphable model resampled onto an R x R UV grid.

    Grid order: vertex k is row ``k // res`` from the top (v = 1 - row / (res - 1)) and column
    ``k % res`` (u = col / (res - 1)).

    Attributes:
        model: the model on the R * R grid vertices (faces: two triangles per grid cell).
        res: R.
        uv: (R * R, 2) float64, the grid points' UV.
        inside: (R * R,) bool, True where the grid point fell on the source mesh.
    """

    model: MorphableModel
    res: int
    uv: np.ndarray
    inside: np.ndarray

    @property
    def drawn_faces(self) -> np.ndarray:
        """(F', 3) int64, the grid faces whose three vertices are all ``inside``: the surface
        that pictures show and that the resampling's orientation check compares (computed on
        each access, since ``inside`` may be replaced, e.g. by an imported mask)."""
        faces = self.model.faces
        return faces[self.inside[faces].all(axis=1)]

    def __post_init__(self) -> None:
        n = self.res * self.res
        if self.model.n_vertices != n:
            raise PrepError(
                f"Invalid grid model: {self.model.n_vertices} vertices for res {self.res} "
                f"(expected {n}); the model must have one vertex per grid point."
            )
        self.uv = np.asarray(self.uv, dtype=np.float64)
        self.inside = np.asarray(self.inside, dtype=bool).reshape(-1)
        if self.uv.shape != (n, 2) or self.inside.shape != (n,):
            raise PrepError(
                f"Invalid grid model: uv {self.uv.shape} and inside {self.inside.shape} "
                f"must be ({n}, 2) and ({n},)."
            )


# ---------------------------------------------------------------------------------------------
# writing


def _write_header(f: h5py.File, fmt: str, provenance: dict) -> None:
    f.attrs["format"] = fmt
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["units"] = "mm"
    f.attrs["created_by"] = f"bfm-prep {__version__}"
    f.attrs["created_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    f.attrs["inputs"] = json.dumps(provenance.get("inputs", {}), sort_keys=True)
    f.attrs["parameters"] = json.dumps(
        provenance.get("parameters", {}), sort_keys=True, default=str
    )


def _floats(a: np.ndarray, name: str, dtype=np.float32) -> np.ndarray:
    """``a`` as the artifact stores it, every value finite: nothing bfm-prep writes is a file
    its readers would call damaged (a value beyond float32's range would become infinite)."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.asarray(a).astype(dtype)
    if out.size and not np.isfinite(out).all():
        if np.isfinite(np.asarray(a, dtype=np.float64)).all():
            raise DamagedArray(name, "holds values beyond the float32 range (|x| > 3.4e38)")
        check_finite(out, name)
    return out


def _write_model_groups(f: h5py.File, m: MorphableModel) -> None:
    g = f.create_group("shape")
    g.create_dataset("mean", data=_floats(m.shape_mean, "shape/mean"))
    g.create_dataset("basis", data=_floats(m.shape_basis, "shape/basis"))
    g.create_dataset("std", data=_floats(m.shape_std, "shape/std"))
    g.create_dataset("kind", data=np.array(m.shape_kind, dtype="S"))
    g.attrs["n_identity"] = m.n_identity
    g.attrs["n_expression"] = m.n_expression
    g.attrs["scaling"] = "each component multiplied by its standard deviation (std)"
    f.create_dataset("faces", data=m.faces.astype(np.int64))
    if m.has_color:
        c = f.create_group("color")
        c.create_dataset("mean", data=_floats(m.color_mean, "color/mean"))
        c.create_dataset("basis", data=_floats(m.color_basis, "color/basis"))
        c.create_dataset("std", data=_floats(m.color_std, "color/std"))
        c.attrs["range"] = "RGB in [0, 1]"
    lm = f.create_group("landmarks")
    for name, idx in sorted(m.landmarks.items()):
        lm.create_dataset(name, data=idx.astype(np.int64))
    lm.attrs["index_base"] = 0


@contextlib.contextmanager
def _writing(path: str | os.PathLike) -> Iterator[h5py.File]:
    """:func:`atomic_h5`, with a value the format cannot hold said in one sentence (and, as
    with any failure, no file written)."""
    try:
        with atomic_h5(path) as f:
            yield f
    except DamagedArray as e:
        raise PrepError(
            f"{path}: not written: {e.name} {e.problem}; the inputs it was made from hold "
            "such values, check them (bfm-prep inspect)."
        ) from None


def write_model(path: str | os.PathLike, model: MorphableModel) -> Path:
    """Write a ``stn-morphable-model`` artifact atomically; returns the path."""
    with _writing(path) as f:
        _write_header(f, FORMAT_MODEL, model.provenance)
        _write_model_groups(f, model)
    return Path(path)


def write_uv(path: str | os.PathLike, emb: UVEmbedding) -> Path:
    """Write a ``stn-uv-embedding`` artifact atomically; returns the path."""
    with _writing(path) as f:
        _write_header(f, FORMAT_UV, emb.provenance)
        f.create_dataset("uv", data=_floats(emb.uv, "uv", np.float64))
        f.create_dataset("faces", data=np.asarray(emb.faces, dtype=np.int64))
        s = f.create_group("symmetry")
        s.create_dataset("mirror", data=np.asarray(emb.mirror, dtype=np.int64))
        s.create_dataset("line", data=np.asarray(emb.symmetry_line, dtype=np.int64))
        s.create_dataset("plane", data=_floats(emb.plane, "symmetry/plane", np.float64))
        f.attrs["checks"] = json.dumps(emb.checks, sort_keys=True, default=float)
    return Path(path)


def write_grid(path: str | os.PathLike, grid: UVGridModel) -> Path:
    """Write a ``stn-uv-grid-model`` artifact atomically; returns the path."""
    with _writing(path) as f:
        _write_header(f, FORMAT_GRID, grid.model.provenance)
        f.attrs["res"] = int(grid.res)
        f.attrs["grid_order"] = "k = row * res + col; row 0 at the top (v = 1), col 0 at u = 0"
        _write_model_groups(f, grid.model)
        f.create_dataset("uv", data=_floats(grid.uv, "uv", np.float64))
        f.create_dataset("inside", data=np.asarray(grid.inside, dtype=bool))
    return Path(path)


# ---------------------------------------------------------------------------------------------
# reading
#
# Every dataset is read through _dataset, which checks its data type (and finiteness) with
# bfm_prep.validation before anything converts it; the model, the embedding and the grid then
# check shapes and index ranges. A failed check is one sentence: "<path>: a damaged <format>
# artifact (<dataset> <what is wrong>); rebuild it with bfm-prep."

# The smallest grid a grid artifact may have (the grid's UV divides by res - 1).
_MIN_GRID_RES = 2


@contextlib.contextmanager
def _open_artifact(path: str | os.PathLike, expected: str | tuple[str, ...]) -> Iterator[h5py.File]:
    path = Path(path)
    expected = (expected,) if isinstance(expected, str) else expected
    require_file(path)
    if not h5py.is_hdf5(path):
        raise PrepError(
            f"{path}: not an HDF5 file (or truncated); pass an artifact written by bfm-prep."
        )
    with open_hdf5(path) as f:
        fmt = _attr_str(f, "format")
        if fmt not in expected:
            raise PrepError(
                f"{path}: format is {fmt!r}, expected {' or '.join(map(repr, expected))}; "
                "pass the artifact the command asks for."
            )
        version = _attr_whole(f, "format_version")
        if version not in SUPPORTED_VERSIONS[fmt]:
            shown = version if version is not None else _attr_shown(f, "format_version")
            raise PrepError(
                f"{path}: {fmt} format version {shown} is not supported by this bfm-prep "
                f"(supported: {SUPPORTED_VERSIONS[fmt]}); upgrade bfm-prep or rebuild the artifact."
            )
        try:
            yield f
        except KeyError as e:
            m = re.search(r"object '([^']+)' doesn't exist", str(e))
            what = (
                f"the dataset or group {m[1]!r} is missing"
                if m
                else f"a dataset or attribute is missing ({e.args[0] if e.args else e})"
            )
            raise PrepError(f"{path}: {what}; rebuild the artifact.") from None
        except DamagedArray as e:
            raise PrepError(
                f"{path}: a damaged {fmt} artifact ({e.name} {e.problem}); rebuild it with "
                "bfm-prep."
            ) from None
        except PrepError as e:  # the model's / grid's validation: name the file
            text = str(e)
            for head in ("Invalid grid model: ", "Invalid model: ", "Invalid UV embedding: "):
                if text.startswith(head):
                    detail = text[len(head) :].rstrip(".")
                    raise PrepError(
                        f"{path}: a damaged {fmt} artifact ({detail}); rebuild it with bfm-prep."
                    ) from None
            raise


def _attr_str(f: h5py.File, name: str) -> str | None:
    v = f.attrs.get(name)
    if isinstance(v, bytes):
        v = v.decode("utf-8", errors="replace")
    return None if v is None else str(v)


def _attr_whole(f: h5py.File, name: str) -> int | None:
    """An attribute that must be a whole number (an integer scalar), or None."""
    v = f.attrs.get(name)
    if isinstance(v, np.ndarray) and v.shape == ():
        v = v[()]
    if isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_):
        return int(v)
    return None


def _attr_shown(f: h5py.File, name: str) -> str:
    """An attribute's value as a message shows it: text quoted, numbers as they are."""
    v = f.attrs.get(name)
    if isinstance(v, bytes):
        v = v.decode("utf-8", errors="replace")
    if isinstance(v, np.generic):
        v = v.item()
    return repr(v) if isinstance(v, str) else str(v)


def _attr_json(f: h5py.File, name: str) -> dict:
    """A JSON-object attribute (``inputs``, ``parameters``, ``checks``); {} when absent."""
    text = _attr_str(f, name)
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        raise DamagedArray(f"the attribute {name}", "is not JSON text") from None
    if not isinstance(value, dict):
        raise DamagedArray(
            f"the attribute {name}", f"holds JSON {type(value).__name__}, expected an object"
        )
    return value


def read_format(path: str | os.PathLike) -> str | None:
    """The ``format`` attribute of an HDF5 file, or None when it has none / is not HDF5.

    Raises:
        PrepError: an HDF5 file that cannot be opened (truncated or damaged).
    """
    path = Path(path)
    if not path.is_file() or not h5py.is_hdf5(path):
        return None
    with open_hdf5(path) as f:
        return _attr_str(f, "format")


def _item(f: h5py.File, name: str):
    """The object at ``name`` (``"shape/mean"``); a DamagedArray names the part of the path
    that is missing, or that is a dataset where a group belongs."""
    node = f
    parts = name.split("/")
    for i, part in enumerate(parts):
        here = "/".join(parts[: i + 1])
        if not isinstance(node, h5py.Group):
            raise DamagedArray("/".join(parts[:i]), "is a dataset, not a group")
        if part not in node:
            where = f" from the group {'/'.join(parts[:i])!r}" if i else ""
            kind = "dataset" if i == len(parts) - 1 else "group"
            raise DamagedArray(f"the {kind} {part!r}", f"is missing{where}")
        node = node[part]
        if i < len(parts) - 1 and not isinstance(node, h5py.Group):
            raise DamagedArray(here, "is a dataset, not a group")
    return node


def _dataset(f: h5py.File, name: str, kind: str) -> np.ndarray:
    """Dataset ``name`` read and checked to hold ``kind`` (:mod:`bfm_prep.validation`)."""
    item = _item(f, name)
    if not isinstance(item, h5py.Dataset):
        raise DamagedArray(name, "is a group, not a dataset")
    try:
        a = item[()]
    except (OSError, TypeError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DamagedArray(name, f"cannot be read ({reason})") from None
    if isinstance(a, h5py.Empty):
        raise DamagedArray(name, "holds no data (an empty dataspace)")
    return check_kind(a, name, kind)


def _group(f: h5py.File, name: str) -> h5py.Group | None:
    """The optional group ``name`` (``color``, ``landmarks``), or None when absent."""
    if name not in f:
        return None
    g = f[name]
    if not isinstance(g, h5py.Group):
        raise DamagedArray(name, "is a dataset, not a group")
    return g


def _kinds(f: h5py.File) -> list[str]:
    raw = _dataset(f, "shape/kind", TEXT)
    check_shape(raw, "shape/kind", (None,))
    kinds = []
    for k in raw.tolist():
        if isinstance(k, bytes):
            try:
                k = k.decode("utf-8")
            except UnicodeDecodeError:
                raise DamagedArray("shape/kind", "holds bytes that are not UTF-8 text") from None
        if not isinstance(k, str):
            raise DamagedArray("shape/kind", f"holds {type(k).__name__} values, expected text")
        kinds.append(k)
    return kinds


def _read_provenance(f: h5py.File) -> dict:
    return {
        "inputs": _attr_json(f, "inputs"),
        "parameters": _attr_json(f, "parameters"),
        "created_by": _attr_str(f, "created_by"),
        "created_at": _attr_str(f, "created_at"),
    }


def _read_model_groups(f: h5py.File) -> MorphableModel:
    shape_std = _dataset(f, "shape/std", FLOAT)
    check_positive(shape_std, "shape/std")
    faces = _dataset(f, "faces", INDEX)
    if faces.ndim == 2 and faces.shape[0] == 0:
        raise DamagedArray("faces", "holds no triangles")
    kw = {}
    if _group(f, "color") is not None:
        color_std = _dataset(f, "color/std", FLOAT)
        check_positive(color_std, "color/std")
        kw = dict(
            color_mean=_dataset(f, "color/mean", FLOAT),
            color_basis=_dataset(f, "color/basis", FLOAT),
            color_std=color_std,
        )
    landmarks = {}
    group = _group(f, "landmarks")
    for name in group if group is not None else ():
        idx = _dataset(f, f"landmarks/{name}", INDEX)
        check_shape(idx, f"landmarks/{name}", (None,))
        landmarks[name] = idx
    return MorphableModel(
        shape_mean=_dataset(f, "shape/mean", FLOAT),
        shape_basis=_dataset(f, "shape/basis", FLOAT),
        shape_std=shape_std,
        shape_kind=_kinds(f),
        faces=faces,
        landmarks=landmarks,
        provenance=_read_provenance(f),
        **kw,
    )


def read_model(path: str | os.PathLike) -> MorphableModel:
    """Read a ``stn-morphable-model`` artifact (float32 on disk, float64 in memory).

    Raises:
        PrepError: not a file, not HDF5 or truncated, another format or version, a missing
            dataset, a dataset of the wrong data type or shape, NaN or infinity, a standard
            deviation that is not positive, an index out of range.
    """
    with _open_artifact(path, FORMAT_MODEL) as f:
        return _read_model_groups(f)


def read_uv(path: str | os.PathLike) -> UVEmbedding:
    """Read a ``stn-uv-embedding`` artifact (checked as :func:`read_model` says)."""
    with _open_artifact(path, FORMAT_UV) as f:
        emb = UVEmbedding(
            uv=_dataset(f, "uv", FLOAT),
            faces=_dataset(f, "faces", INDEX),
            mirror=_dataset(f, "symmetry/mirror", INDEX),
            symmetry_line=_dataset(f, "symmetry/line", INDEX),
            plane=_dataset(f, "symmetry/plane", FLOAT),
            checks=_attr_json(f, "checks"),
            provenance=_read_provenance(f),
        )
        _validate_uv(emb)
        return emb


def _validate_uv(emb: UVEmbedding) -> None:
    """Shapes and index ranges of a UV embedding read from a file (PrepError "Invalid UV ...")."""

    def bad(what: str) -> PrepError:
        return PrepError(f"Invalid UV embedding: {what}.")

    uv, faces, mirror = np.asarray(emb.uv), np.asarray(emb.faces), np.asarray(emb.mirror)
    if uv.ndim != 2 or uv.shape[1] != 2:
        raise bad(f"uv has shape {uv.shape}, expected (N, 2)")
    n = uv.shape[0]
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise bad(f"faces has shape {faces.shape}, expected (M, 3)")
    if faces.shape[0] == 0:
        raise bad("faces holds no triangles")
    if faces.size and (faces.min() < 0 or faces.max() >= n):
        raise bad(f"faces index vertices {faces.min()}..{faces.max()}, outside 0..{n - 1}")
    if mirror.shape != (n,):
        raise bad(f"symmetry/mirror has shape {mirror.shape}, expected ({n},)")
    if n and (mirror.min() < 0 or mirror.max() >= n):
        raise bad(f"symmetry/mirror indexes vertices outside 0..{n - 1}")
    line = np.asarray(emb.symmetry_line)
    check_shape(line, "symmetry/line", (None,))
    if line.size and (line.min() < 0 or line.max() >= n):
        raise bad(f"symmetry/line indexes vertices outside 0..{n - 1}")
    check_shape(np.asarray(emb.plane), "symmetry/plane", (4,))
    emb.uv = uv.astype(np.float64)
    emb.faces, emb.mirror = faces.astype(np.int64), mirror.astype(np.int64)
    emb.symmetry_line = line.astype(np.int64)
    emb.plane = np.asarray(emb.plane, dtype=np.float64)


def read_grid(path: str | os.PathLike) -> UVGridModel:
    """Read a ``stn-uv-grid-model`` artifact (checked as :func:`read_model` says)."""
    with _open_artifact(path, FORMAT_GRID) as f:
        res = _attr_whole(f, "res")
        if res is None or res < _MIN_GRID_RES:
            raise DamagedArray(
                "the attribute res",
                f"is {_attr_shown(f, 'res')}, expected a whole number >= {_MIN_GRID_RES}",
            )
        return UVGridModel(
            model=_read_model_groups(f),
            res=res,
            uv=_dataset(f, "uv", FLOAT),
            inside=_dataset(f, "inside", MASK).astype(bool),
        )
