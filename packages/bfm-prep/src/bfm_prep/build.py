"""Build a morphable model with identity and expression components from the input files.

:func:`build_model` is what ``bfm-prep build-expression`` runs:

1. the Basel Face Model: 2009 (``01_MorphableModel.mat``, MATLAB v5 or v7.3) or 2017/2019
   (``.h5``), recognised by content; identity components scaled by their standard deviations
   so that coefficients follow N(0, 1); the colour model carried along;
2. expression components: a BFM 2017/2019 file's own expression model when it has one
   (then ``expression_path``/``mapping_path`` are refused: the 3DDFA mapping is made for the 2009
   mesh, and two expression models in one artifact would not be what anyone wants); otherwise,
   with an expression file (3DDFA ``Model_Expression.mat`` or CoarseData ``Exp_Pca.bin``,
   recognised by content) and its vertex mapping, each component is transferred to every
   mesh vertex by :func:`bfm_prep.expression.transfer_expression` (Laplacian-preserving least
   squares into the mouth interior);
3. landmark index sets by name.

The result records, per component, its kind (``shape_kind``: identity then expression) and
the standard deviation it was multiplied by (``shape_std``), and in its provenance the
SHA-256 of every input file and every parameter (including how each kind was scaled).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import h5py
import numpy as np

from bfm_prep.errors import PrepError
from bfm_prep.expression import DEFAULT_WEIGHT, transfer_expression
from bfm_prep.io.bfm2009 import load_bfm2009
from bfm_prep.io.bfm2017 import load_bfm2017
from bfm_prep.io.expression import load_expression
from bfm_prep.io.landmarks import load_landmarks
from bfm_prep.io.tddfa import load_mapping
from bfm_prep.model import EXPRESSION, IDENTITY, MorphableModel
from bfm_prep.provenance import input_record

PathLike = str | os.PathLike
LANDMARK_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


def _existing_file(path: PathLike, what: str) -> Path:
    """``path`` as a Path, or a PrepError naming ``what`` when it is missing or not a file."""
    path = Path(path)
    if not path.exists():
        raise PrepError(f"{path}: no such file (the {what}); check the path.")
    if path.is_dir():
        raise PrepError(f"{path}: is a folder, not a file (the {what}); pass the file itself.")
    if not path.is_file():
        raise PrepError(f"{path}: not a file (the {what}); pass the file itself.")
    return path


def bfm_kind(path: PathLike) -> str:
    """``"bfm2017"`` for an HDF5 file with a ``shape/model`` group, else ``"bfm2009"``.

    (A MATLAB v7.3 ``01_MorphableModel.mat`` is HDF5 too; it has no ``shape`` group.)
    """
    path = Path(path)
    if h5py.is_hdf5(path):
        try:
            with h5py.File(path, "r") as f:
                if "shape" in f and isinstance(f["shape"], h5py.Group) and "model" in f["shape"]:
                    return "bfm2017"
        except OSError:
            pass  # let the 2009 loader say what is wrong with the file
    return "bfm2009"


def _bfm2017_has_expression(path: Path) -> bool:
    with h5py.File(path, "r") as f:
        return "expression" in f and "model" in f["expression"]


def _check_count(parameter: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, int | np.integer) or value < 0):
        raise PrepError.naming(
            "{" + parameter + "} must be a non-negative integer, got {value!r}.", value=value
        )


def build_model(
    bfm_path: PathLike,
    expression_path: PathLike | None = None,
    mapping_path: PathLike | None = None,
    expression_std_path: PathLike | None = None,
    n_shape: int = 5,
    n_exp: int | None = None,
    landmarks: dict[str, PathLike] | None = None,
    *,
    n_color: int | None = None,
    weight: float = DEFAULT_WEIGHT,
    diagnostics: dict | None = None,
) -> MorphableModel:
    """Read the input files and return the model (identity + expression components).

    Args:
        bfm_path: BFM 2009 ``.mat`` or BFM 2017/2019 ``.h5``.
        expression_path: 3DDFA ``Model_Expression.mat`` or CoarseData ``Exp_Pca.bin`` (not
            with a BFM 2017 file that has its own expression model).
        mapping_path: ``map_tddfa_to_basel.mat`` (or an index list): the 0-based mesh vertex
            of each expression-model vertex; required with ``expression_path``.
        expression_std_path: the CoarseData ``std_exp.txt``.
        n_shape: identity components to keep (up to all the file has; more is an error).
        n_exp: expression components to keep (up to all the expression model has; more is an
            error); None: 5 when there is an expression model, else 0.
        landmarks: name -> landmark file (``.anl`` or an index list).
        n_color: colour components to keep (None: all the file has).
        weight: the data weight lambda of the transfer (see :mod:`bfm_prep.expression`).
        diagnostics: if a dict is given, the transfer diagnostics are stored in it.

    Returns:
        The :class:`MorphableModel`, with ``provenance`` filled in.
    """
    landmarks = dict(landmarks or {})
    _check_count("n_shape", n_shape)
    _check_count("n_exp", n_exp)
    _check_count("n_color", n_color)
    for name in landmarks:
        if not LANDMARK_NAME.match(name):
            raise PrepError.naming(
                "Landmark set name {name!r} is not valid; use letters, digits and _ "
                "(e.g. {landmarks} ibug68=FILE).",
                name=name,
            )
    if expression_path is not None and mapping_path is None:
        raise PrepError.naming(
            "{path}: an expression model needs {mapping_path} (the mesh vertex of each "
            "expression-model vertex, e.g. map_tddfa_to_basel.mat).",
            path=expression_path,
        )
    if mapping_path is not None and expression_path is None:
        raise PrepError.naming(
            "{path}: {mapping_path} was given without {expression_path}.", path=mapping_path
        )
    if expression_std_path is not None and expression_path is None:
        raise PrepError.naming(
            "{path}: {expression_std_path} was given without {expression_path}.",
            path=expression_std_path,
        )
    # Every named file must exist before any work starts.
    bfm_path = _existing_file(bfm_path, "Basel Face Model file")
    if expression_path is not None:
        expression_path = _existing_file(expression_path, "expression model")
        mapping_path = _existing_file(mapping_path, "vertex mapping")
    if expression_std_path is not None:
        expression_std_path = _existing_file(expression_std_path, "expression standard deviations")
    landmarks = {k: _existing_file(v, f"landmark set {k!r}") for k, v in landmarks.items()}

    kind = bfm_kind(bfm_path)
    inputs: dict = {}
    parameters: dict = {
        "bfm_format": kind,
        "n_shape": int(n_shape),
        "n_color": None if n_color is None else int(n_color),
        "n_exp": 0,
        "expression_source": None,
        "identity_scaling": "each identity component multiplied by its standard deviation "
        "(BFM 2009 shapeEV; BFM 2017 sqrt(pcaVariance)), so coefficients follow N(0, 1); mm",
    }

    own = kind == "bfm2017" and _bfm2017_has_expression(bfm_path)
    if own and expression_path is not None:
        raise PrepError.naming(
            "{path}: this BFM 2017/2019 file has its own expression model, which "
            "replaces the 3DDFA/CoarseData one; drop {expression_path}, {mapping_path} and "
            "{expression_std_path}.",
            path=bfm_path,
        )
    if not own and expression_path is None and n_exp:
        raise PrepError.naming(
            "{n_exp} {value} needs an expression model: pass {expression_path} and "
            "{mapping_path} (or {n_exp} 0 for an identity-only model).",
            value=n_exp,
        )

    if kind == "bfm2017":
        n_own = (5 if n_exp is None else int(n_exp)) if own else 0
        base = load_bfm2017(bfm_path, n_shape=n_shape, n_exp=n_own, n_color=n_color)
        _check_loaded_count(bfm_path, "expression", base.n_expression, n_own)
        if own:
            parameters["n_exp"] = n_own
            parameters["expression_source"] = "bfm2017"
            parameters["expression_scaling"] = (
                "each expression component multiplied by sqrt(expression/model/pcaVariance), "
                "so coefficients follow N(0, 1); mm"
            )
    else:
        base = load_bfm2009(bfm_path, n_shape=n_shape, n_color=n_color)
    _check_loaded_count(bfm_path, "identity", base.n_identity, n_shape)
    inputs["bfm"] = _record(base, "bfm", bfm_path)

    exp_components = exp_std = None
    if expression_path is not None:
        n_exp = 5 if n_exp is None else int(n_exp)
        basis = load_expression(expression_path, std_path=expression_std_path, n_exp=n_exp)
        inputs["expression"] = _record(basis, "expression", expression_path)
        inputs["mapping"] = input_record(mapping_path)
        if expression_std_path is not None:
            inputs["expression_std"] = _record(basis, "expression_std", expression_std_path)
        _check_loaded_count(expression_path, "expression", basis.components.shape[2], n_exp)
        mapping = load_mapping(
            mapping_path, n_target=base.n_vertices, n_source=basis.components.shape[0]
        )
        if mapping.shape[0] != basis.components.shape[0]:
            raise PrepError(
                f"{mapping_path}: the mapping has {mapping.shape[0]} entries but the expression "
                f"model {expression_path.name} has {basis.components.shape[0]} vertices; pass "
                "the mapping made for this expression model."
            )
        exp_std = np.asarray(basis.std, dtype=np.float64).reshape(-1)[:n_exp]
        for key, value in getattr(basis, "provenance", {}).get("parameters", {}).items():
            parameters.setdefault(key, value)  # e.g. n_exp_available, the file's version
        parameters["n_exp"] = n_exp
        parameters["expression_source"] = str(basis.source)
        parameters["expression_scaling"] = str(basis.scaling)
        with warnings.catch_warnings():
            # load_mapping has already warned about Basel vertices named twice
            warnings.filterwarnings("ignore", message=r".*mapping entries repeat a mesh vertex")
            exp_components, diag = transfer_expression(
                base.shape_mean,
                base.faces,
                basis,
                mapping,
                weight=weight,
                return_diagnostics=True,
            )
        del basis, mapping  # free the source components before the model is assembled
        parameters["transfer"] = {
            "method": "Laplacian-preserving least squares: minimise |L d|^2 + lambda |S d - w|^2 "
            "with L the cotangent matrix of the mean shape (igl.cotmatrix) and S the selection "
            "of mapped vertices; one sparse factorisation, all components solved together",
            **diag.as_dict(),
        }
        if diagnostics is not None:
            diagnostics.update(diag.as_dict())

    landmark_sets = dict(base.landmarks)
    if landmarks:
        for name, path in sorted(landmarks.items()):
            inputs[f"landmarks/{name}"] = input_record(path)
            landmark_sets[name] = load_landmarks(path, n_vertices=base.n_vertices)
    parameters["landmarks"] = sorted(landmark_sets)

    if exp_components is not None:
        n, k_id = base.n_vertices, base.n_components
        shape_basis = np.empty((n, 3, k_id + exp_components.shape[2]), dtype=np.float64)
        shape_basis[:, :, :k_id] = base.shape_basis
        shape_basis[:, :, k_id:] = exp_components
        del exp_components
        base.shape_basis = None  # the identity block now lives in shape_basis only
        shape_std = np.concatenate([base.shape_std, exp_std])
        shape_kind = list(base.shape_kind) + [EXPRESSION] * exp_std.shape[0]
    else:
        shape_basis, shape_std, shape_kind = base.shape_basis, base.shape_std, base.shape_kind
    parameters["components"] = (
        f"{shape_kind.count(IDENTITY)} identity then {shape_kind.count(EXPRESSION)} expression"
    )
    provenance = {
        "inputs": {**base.provenance.get("inputs", {}), **inputs},
        "parameters": {**base.provenance.get("parameters", {}), **parameters},
    }
    return MorphableModel(
        shape_mean=base.shape_mean,
        shape_basis=shape_basis,
        shape_std=shape_std,
        shape_kind=shape_kind,
        faces=base.faces,
        color_mean=base.color_mean,
        color_basis=base.color_basis,
        color_std=base.color_std,
        landmarks=landmark_sets,
        provenance=provenance,
    )


def _record(obj, label: str, path: Path) -> dict:
    """The loader's ``{"path", "sha256"}`` record of ``path`` if it made one (hashing a
    258 MB BFM file twice costs half a second), else a new one."""
    rec = getattr(obj, "provenance", {}).get("inputs", {}).get(label)
    if isinstance(rec, dict) and rec.get("sha256") and rec.get("path") == str(path.resolve()):
        return rec
    return input_record(path)


def _check_loaded_count(path: PathLike, what: str, got: int, asked: int | None) -> None:
    """The loaders are asked for ``asked`` components; refuse if the file had fewer."""
    if asked is not None and got != asked:
        raise PrepError(
            f"{path}: asked for {asked} {what} components but the file has {got}; "
            f"use at most {got}."
        )
