"""``bfm-prep inspect FILE``: a summary of any artifact or supported input file.

Recognition is by content, in this order:

1. HDF5 with a ``format`` attribute: a bfm-prep artifact (the three formats of
   :mod:`bfm_prep.artifact`): counts, components by kind, colour, landmarks, res, checks,
   provenance with the input hashes.
2. HDF5 with ``shape/model/pcaBasis``: a Basel Face Model 2017/2019.
3. A MATLAB v5/v7.3 file, by its variables: BFM 2009 (``shapeMU``, ``shapePC``, ``tl``),
   3DDFA expression (``w_exp``), 3DDFA-to-Basel mapping (``map_tddfa_to_basel``), a UV
   embedding (``UV``, e.g. BFM_UV.mat), a resampled MATLAB model (``shapeMU``, ``shapePC``,
   ``faces``, e.g. model_112.mat); any other MAT-file: its variables.
4. A CoarseData ``Exp_Pca.bin`` (int32 count, size consistent with it).
5. A NumPy ``.npz`` (the Surrey Face Model shape or blendshapes; otherwise its arrays).
6. A PLY/OBJ mesh.
7. Text: a landmark definition (.anl, index list, eos mapping) or a list of numbers
   (e.g. ``std_exp.txt``).

Anything else is a PrepError (exit status 2 from the CLI), and so is a damaged file: an
artifact that fails the checks of its reader (:mod:`bfm_prep.validation`: text or NaN where
numbers belong, float indices, a standard deviation that is not positive, ...), an input whose
loaded arrays hold text, NaN or infinity. Reading is light: big arrays are described by their
shapes, not loaded.
"""

from __future__ import annotations

import json
import os
import struct
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from bfm_prep.artifact import (
    FORMAT_GRID,
    FORMAT_MODEL,
    FORMAT_UV,
    SUPPORTED_VERSIONS,
    read_grid,
    read_model,
    read_uv,
)
from bfm_prep.errors import PrepError
from bfm_prep.io._checks import as_index_array, check_real, fail, require_file
from bfm_prep.io.coarsedata import read_coarsedata_header
from bfm_prep.io.landmarks import (
    EOS_MAPPING,
    landmark_base,
    landmark_format,
    load_landmark_mapping,
    load_landmarks,
)
from bfm_prep.io.matfile import load_mat, mat_variables, open_hdf5, sniff
from bfm_prep.io.mesh import load_mesh, mesh_format
from bfm_prep.provenance import sha256_file


@dataclass
class Summary:
    """What ``inspect`` found: a kind (one line) and (field, value) rows, in display order."""

    path: Path
    kind: str
    rows: list[tuple[str, str]] = field(default_factory=list)

    def add(self, key: str, value) -> None:
        self.rows.append((key, value if isinstance(value, str) else _fmt(value)))

    def as_dict(self) -> dict[str, str]:
        return dict(self.rows)


def _fmt(v) -> str:
    if isinstance(v, float | np.floating):
        return f"{float(v):.6g}"
    if isinstance(v, tuple):
        return " x ".join(str(int(x)) for x in v) or "scalar"
    return str(v)


def _range(a: np.ndarray) -> str:
    a = np.asarray(a)
    if a.size == 0:
        return "empty"
    return f"{_fmt(a.min())} .. {_fmt(a.max())}"


def _attr(obj, name: str):
    v = obj.attrs.get(name)
    if isinstance(v, bytes):
        v = v.decode("utf-8", errors="replace")
    if isinstance(v, np.generic):
        v = v.item()
    return v


# ---------------------------------------------------------------------------------------------
# artifacts and HDF5 inputs


def _inspect_artifact(f, s: Summary, fmt: str) -> None:
    version = _attr(f, "format_version")
    supported = SUPPORTED_VERSIONS.get(fmt, ())
    s.add("format", fmt)
    s.add(
        "format version",
        f"{version}"
        + ("" if version in supported else f" (not supported by this bfm-prep: {supported})"),
    )
    for key in ("units", "created_by", "created_at"):
        if key in f.attrs:
            s.add(key.replace("_", " "), str(_attr(f, key)))
    if fmt in (FORMAT_MODEL, FORMAT_GRID):
        if fmt == FORMAT_GRID:
            res = _attr(f, "res")
            s.add("grid", f"{res} x {res}")
            if "inside" in f:
                inside = f["inside"][()]
                s.add("inside points", f"{int(np.count_nonzero(inside))} of {inside.size}")
        _inspect_model_groups(f, s)
        if fmt == FORMAT_GRID and "uv" in f:
            s.add("uv range", _range(f["uv"][()]))
    elif fmt == FORMAT_UV:
        uv = f["uv"][()]
        s.add("vertices", uv.shape[0])
        s.add("faces", f["faces"].shape[0])
        s.add("uv range", _range(uv))
        if "symmetry" in f:
            g = f["symmetry"]
            if "mirror" in g:
                mirror = g["mirror"][()]
                own = mirror == np.arange(mirror.size)
                on_line = own.copy()
                if "line" in g:
                    # a symmetry from the shape: a vertex that is its own mirror without
                    # being on the line has no partner
                    line = np.asarray(g["line"][()], dtype=np.int64)
                    on_line[:] = False
                    on_line[line[(line >= 0) & (line < mirror.size)]] = True
                s.add("on the symmetry plane", int(np.count_nonzero(own & on_line)))
                unpaired = int(np.count_nonzero(own & ~on_line))
                if unpaired:
                    s.add("without a mirror partner", unpaired)
            if "line" in g:
                s.add("symmetry line", f"{g['line'].shape[0]} vertices")
            if "plane" in g:
                s.add("symmetry plane", ", ".join(f"{x:.4g}" for x in g["plane"][()]))
        checks = json.loads(_attr(f, "checks") or "{}")
        for k, v in checks.items():
            s.add(f"check {k}", v)
    _inspect_provenance(f, s)


def _inspect_model_groups(f, s: Summary) -> None:
    g = f["shape"]
    n = g["mean"].shape[0]
    s.add("vertices", n)
    s.add("faces", f["faces"].shape[0] if "faces" in f else 0)
    kinds = [k.decode() if isinstance(k, bytes) else str(k) for k in g["kind"][()]]
    by_kind = {k: kinds.count(k) for k in dict.fromkeys(kinds)}
    s.add(
        "shape components",
        f"{len(kinds)}"
        + (" (" + ", ".join(f"{v} {k}" for k, v in by_kind.items()) + ")" if kinds else ""),
    )
    if "std" in g and len(kinds):
        std = g["std"][()]
        for k in by_kind:
            sel = np.array([x == k for x in kinds])
            s.add(f"std ({k})", _range(std[sel]))
    if "scaling" in g.attrs:
        s.add("scaling", str(_attr(g, "scaling")))
    mean = g["mean"][()]
    ext = mean.max(axis=0) - mean.min(axis=0) if mean.size else np.zeros(3)
    s.add("mean-shape extent (mm)", " x ".join(f"{x:.1f}" for x in ext))
    if "color" in f:
        c = f["color"]
        s.add("colour", f"{c['basis'].shape[-1]} components, mean in {_range(c['mean'][()])}")
    else:
        s.add("colour", "none")
    if "landmarks" in f and len(f["landmarks"]):
        s.add(
            "landmarks", ", ".join(f"{name} ({ds.shape[0]})" for name, ds in f["landmarks"].items())
        )
    else:
        s.add("landmarks", "none")


def _inspect_provenance(f, s: Summary) -> None:
    try:
        inputs = json.loads(_attr(f, "inputs") or "{}")
    except json.JSONDecodeError:
        inputs = {}
    for label, rec in inputs.items():
        if isinstance(rec, dict):
            s.add(f"input {label}", f"{rec.get('path', '?')} (sha256 {rec.get('sha256', '?')})")
        else:
            s.add(f"input {label}", str(rec))
    try:
        params = json.loads(_attr(f, "parameters") or "{}")
    except json.JSONDecodeError:
        params = {}
    for k, v in params.items():
        s.add(f"parameter {k}", v if isinstance(v, str) else json.dumps(v))


def _inspect_bfm2017(f, s: Summary) -> None:
    def dataset(name: str):
        item = f.get(name)
        return item if isinstance(item, h5py.Dataset) and item.ndim else None

    def cols(name: str):
        d = dataset(name)
        return d.shape[-1] if d is not None else 0

    mean = dataset("shape/model/mean")
    if mean is None:
        raise fail(
            s.path,
            "has shape/model/pcaBasis but no shape/model/mean vector, so it is a damaged "
            "Basel Face Model 2017/2019",
            "copy the file again",
        )
    n = mean.shape[0] // 3
    s.add("vertices", n)
    cells = dataset("shape/representer/cells") or dataset("representer/cells")
    s.add("faces", cells.shape[-1] if cells is not None else "missing")
    s.add("identity components", cols("shape/model/pcaBasis"))
    s.add("expression components", cols("expression/model/pcaBasis"))
    s.add("colour components", cols("color/model/pcaBasis") if "color" in f else "no colour model")
    if dataset("shape/model/pcaVariance") is not None:
        name = "shape/model/pcaVariance"
        var = check_real(f[name][()], name, s.path).astype(np.float64)
        s.add("identity std (mm)", _range(np.sqrt(np.maximum(var, 0))))
    s.add("units", "mm (pcaBasis orthonormal, pcaVariance = variances)")


def _validate_artifact(path: Path, fmt: str) -> None:
    """Read the artifact with the reader every command uses (the one ``plot`` uses), so a
    damaged artifact (unsupported version, missing dataset, an index out of range, ...) is
    the same one-line PrepError here as there."""
    {FORMAT_MODEL: read_model, FORMAT_UV: read_uv, FORMAT_GRID: read_grid}[fmt](path)


def _inspect_hdf5(path: Path, s: Summary) -> bool:
    with open_hdf5(path) as f:
        fmt = _attr(f, "format")
        if fmt in (FORMAT_MODEL, FORMAT_UV, FORMAT_GRID):
            s.kind = f"bfm-prep artifact ({fmt})"
            _validate_artifact(path, fmt)
            try:
                _inspect_artifact(f, s, fmt)
            except (KeyError, OSError) as e:
                raise fail(
                    path,
                    f"is a {fmt} artifact with a missing or unreadable part ({e})",
                    "rebuild the artifact",
                ) from None
            return True
        if fmt is not None:
            raise fail(
                path,
                f"is an HDF5 file of unknown format {fmt!r}",
                f"bfm-prep reads {FORMAT_MODEL}, {FORMAT_UV} and {FORMAT_GRID}",
            )
        if isinstance(f.get("shape/model/pcaBasis"), h5py.Dataset):
            s.kind = "Basel Face Model 2017/2019 (.h5)"
            _inspect_bfm2017(f, s)
            return True
    return False


# ---------------------------------------------------------------------------------------------
# MATLAB inputs


def _inspect_mat(path: Path, s: Summary, version: str) -> None:
    variables = mat_variables(path)
    shapes = {name: shape for name, shape, _ in variables}
    names = set(shapes)
    tag = f"MATLAB v{version}"
    if {"shapeMU", "shapePC", "tl"} <= names:
        s.kind = f"Basel Face Model 2009 ({tag})"
        n3 = int(np.prod(shapes["shapeMU"])) if shapes["shapeMU"] else 0
        s.add("vertices", n3 // 3)
        s.add("faces", shapes["tl"][0] if shapes["tl"] else 0)
        s.add("identity components", shapes["shapePC"][-1] if shapes["shapePC"] else 0)
        s.add("colour components", shapes["texPC"][-1] if "texPC" in shapes else "no colour model")
        d = load_mat(path, keys=("shapeMU", "shapeEV", "texMU"))
        mu = check_real(d["shapeMU"], "shapeMU", path).astype(np.float64).reshape(-1)
        if mu.size and mu.size % 3 == 0:
            ext = np.ptp(mu.reshape(-1, 3), axis=0)
            s.add(
                "mean-shape extent",
                " x ".join(f"{x:.0f}" for x in ext) + " (micrometres in the file; / 1000 gives mm)",
            )
        if "shapeEV" in d:
            s.add("identity std (file units)", _range(check_real(d["shapeEV"], "shapeEV", path)))
        if "texMU" in d:
            s.add(
                "colour mean range",
                _range(check_real(d["texMU"], "texMU", path)) + " (/ 255 gives [0, 1])",
            )
        s.add("triangle indices", "1-based (tl)")
    elif "w_exp" in names:
        s.kind = f"3DDFA expression model ({tag})"
        w = shapes["w_exp"]
        s.add("vertices", (w[0] // 3) if w else 0)
        s.add("expression components", w[-1] if w else 0)
        s.add("mean expression (mu_exp)", "present" if "mu_exp" in names else "missing")
        s.add("sigma_exp", "present (not applied)" if "sigma_exp" in names else "absent")
        s.add("units", "micrometres (/ 1000 gives mm); components used as stored")
    elif "map_tddfa_to_basel" in names:
        s.kind = f"3DDFA-to-Basel vertex mapping ({tag})"
        raw = np.asarray(load_mat(path, keys=("map_tddfa_to_basel",))["map_tddfa_to_basel"])
        m = as_index_array(raw.reshape(-1), "map_tddfa_to_basel", path)
        s.add("entries (3DDFA vertices)", m.size)
        s.add("Basel index range", _range(m) + " (0-based)")
        s.add("distinct Basel vertices", int(np.unique(m).size))
        s.add("data type", str(raw.dtype))
    elif "UV" in names:
        s.kind = f"UV embedding ({tag}, e.g. BFM_UV.mat)"
        uv = check_real(load_mat(path, keys=("UV",))["UV"], "UV", path)
        s.add("vertices", uv.shape[0] if uv.ndim == 2 else uv.size)
        if uv.ndim == 2 and uv.shape[1] == 2:
            s.add("u range", _range(uv[:, 0]))
            s.add("v range", _range(uv[:, 1]))
    elif {"shapeMU", "shapePC", "faces"} <= names:
        s.kind = f"resampled MATLAB model ({tag}, e.g. model_112.mat)"
        n = int(np.prod(shapes["shapeMU"])) // 3 if shapes["shapeMU"] else 0
        s.add("vertices", n)
        r = int(round(np.sqrt(n)))
        if r * r == n:
            s.add("grid", f"{r} x {r}")
        s.add("faces", shapes["faces"][0] if shapes["faces"] else 0)
        s.add("components", shapes["shapePC"][-1] if shapes["shapePC"] else 0)
        s.add("colour", "present" if "texMU" in names else "none")
        s.add("triangle indices", "1-based (faces); units mm")
    else:
        s.kind = f"MATLAB file ({tag}; not a model file bfm-prep reads directly)"
    for name, shape, cls in variables:
        s.add(f"variable {name}", f"{_fmt(shape)} {cls}")


# ---------------------------------------------------------------------------------------------
# other inputs


def _inspect_npz(path: Path, s: Summary) -> None:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:
        raise fail(
            path,
            f"cannot be read as a .npz archive ({type(e).__name__}: {e})",
            "the file is truncated or damaged",
        ) from None
    if {"mean", "basis", "eigenvalues", "triangles"} <= set(arrays):
        s.kind = "Surrey Face Model shape (.npz)"
        s.add("vertices", arrays["mean"].size // 3)
        _require_matrices(path, arrays, ("basis", "triangles"))
        s.add("faces", arrays["triangles"].shape[0])
        s.add("identity components", arrays["basis"].shape[-1])
        ev = check_real(arrays["eigenvalues"], "eigenvalues", path).astype(np.float64)
        s.add("identity std (mm)", _range(np.sqrt(np.maximum(ev, 0))))
        s.add("own uv", "present" if "uv" in arrays else "absent")
    elif "deformations" in arrays:
        s.kind = "Surrey Face Model expression blendshapes (.npz)"
        _require_matrices(path, arrays, ("deformations",))
        s.add("vertices", arrays["deformations"].shape[0] // 3)
        s.add("blendshapes", arrays["deformations"].shape[-1])
        if "names" in arrays:
            s.add("names", ", ".join(str(x) for x in arrays["names"].reshape(-1)))
    else:
        s.kind = "NumPy archive (.npz)"
    for k, a in arrays.items():
        s.add(f"array {k}", f"{_fmt(a.shape)} {a.dtype}")


def _require_matrices(path: Path, arrays: dict, names: tuple[str, ...]) -> None:
    """The arrays ``names`` of a Surrey Face Model archive must be 2-D (as its reader says)."""
    for name in names:
        if arrays[name].ndim != 2:
            raise fail(
                path,
                f"{name} has the wrong shape {tuple(arrays[name].shape)}, expected a 2-D matrix",
                "the Surrey Face Model file is damaged",
            )


def _inspect_coarsedata(path: Path, s: Summary) -> None:
    d, v = read_coarsedata_header(path)
    s.kind = "CoarseData expression basis (Exp_Pca.bin)"
    s.add("expression components", d)
    s.add("vertices", v)
    s.add("layout", "int32 D, float32 mean 3V, D x float32 3V components (xyz interleaved)")
    s.add("needs", "std_exp.txt for the standard deviations")


def _inspect_mesh(path: Path, s: Summary, fmt: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v, f = load_mesh(path)
    s.kind = f"triangle mesh ({fmt.upper()})"
    s.add("vertices", v.shape[0])
    s.add("faces", f.shape[0])
    s.add("unused vertices", int(v.shape[0] - np.unique(f).size))
    s.add("extent", " x ".join(f"{x:.4g}" for x in np.ptp(v, axis=0)))
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    s.add("boundary edges", int(np.count_nonzero(counts == 1)))


def _inspect_text(path: Path, s: Summary) -> bool:
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return False
    if "\x00" in text:
        return False
    try:
        fmt = landmark_format(path)
        if fmt == EOS_MAPPING:
            mapping = load_landmark_mapping(path)
            s.kind = "landmark mapping (eos style, e.g. ibug_to_sfm.txt)"
            s.add("mapped landmarks", len(mapping))
            s.add("landmark numbers", ", ".join(map(str, mapping)))
            s.add("vertex index range", _range(np.array(list(mapping.values()))) + " (0-based)")
            return True
        idx = load_landmarks(path)
        base = landmark_base(path)
        s.kind = f"landmark list ({'.anl' if fmt == 'anl' else 'index list'})"
        s.add("landmarks", idx.size)
        s.add("index base in the file", base)
        s.add("vertex index range", _range(idx) + " (0-based)")
        return True
    except PrepError:
        pass
    tokens = [
        t
        for line in text.splitlines()
        if not line.lstrip().startswith(("#", "%"))
        for t in line.split()
    ]
    try:
        values = np.array([float(t) for t in tokens])
    except ValueError:
        return False
    if values.size == 0:
        return False
    if not np.isfinite(values).all():
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        raise fail(
            path,
            f"is a list of numbers with {bad} NaN or infinite value{'s' * (bad != 1)}",
            "a landmark list or a std_exp.txt holds finite numbers only",
        )
    s.kind = "list of numbers (e.g. CoarseData std_exp.txt)"
    s.add("count", values.size)
    s.add("range", _range(values))
    return True


# ---------------------------------------------------------------------------------------------
# public


def inspect_file(path: str | os.PathLike, hash_inputs: bool = True) -> Summary:
    """Summarise an artifact or a supported input file (see the module docstring).

    Args:
        path: the file.
        hash_inputs: add the SHA-256 of an input file (to compare with an artifact's provenance).
    Raises:
        PrepError: a file that is none of the recognised kinds, or a damaged one.
    """
    path = Path(path)
    require_file(path)
    s = Summary(path=path, kind="")
    s.add("file", str(path))
    s.add("size", f"{path.stat().st_size} bytes")
    is_artifact = False
    kind = sniff(path)
    if kind == "hdf5":
        if not _inspect_hdf5(path, s):
            raise fail(
                path,
                "is an HDF5 file but neither a bfm-prep artifact nor a Basel Face Model 2017/2019",
                "bfm-prep inspect cannot summarise it",
            )
        is_artifact = s.kind.startswith("bfm-prep artifact")
    elif kind in ("5", "7.3"):
        _inspect_mat(path, s, kind)
    else:
        with open(path, "rb") as f:
            head = f.read(4)
        if len(head) == 4 and 1 <= struct.unpack("<i", head)[0] <= 100_000:
            _inspect_coarsedata(path, s)
        elif zipfile.is_zipfile(path):
            _inspect_npz(path, s)
        elif (mfmt := mesh_format(path)) is not None and path.suffix.lower() not in (
            ".anl",
            ".txt",
        ):
            _inspect_mesh(path, s, mfmt)
        elif not _inspect_text(path, s):
            raise PrepError.naming(
                "{path}: is not a file bfm-prep recognises (not an artifact, a MATLAB or "
                "BFM 2017 file, a CoarseData .bin, an .npz, a mesh or a landmark list); see "
                "bfm-prep inspect {help} for the supported kinds.",
                path=path,
            )
    if hash_inputs and not is_artifact:
        s.add("sha256", sha256_file(path))
    return s


def format_plain(s: Summary) -> str:
    """The summary as ``key: value`` lines, the kind first."""
    width = max((len(k) for k, _ in s.rows), default=0)
    lines = [s.kind]
    lines += [f"  {k.ljust(width)}  {v}" for k, v in s.rows]
    return "\n".join(lines)


__all__ = ["Summary", "inspect_file", "format_plain"]
