"""The UV-grid morphable model: the ``stn-uv-grid-model`` artifact as torch tensors.

The artifact is written by ``bfm-prep uv-resample`` (docs/artifact-format.md); this module reads
it with h5py alone. Grid order: vertex k is row ``k // res`` from the top (row 0 the forehead)
and column ``k % res``.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import torch

from stn_core._validate import expect
from stn_core.errors import ArtifactError
from stn_core.geometry import morphable_shape

__all__ = ["UVGridModel", "FORMAT", "SUPPORTED_VERSIONS", "orient_faces_towards_camera"]

FORMAT = "stn-uv-grid-model"
SUPPORTED_VERSIONS = (1,)


def orient_faces_towards_camera(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, bool]:
    """Make consistently wound faces counter-clockwise seen from the front (+z).

    Args:
        vertices: (N, 3) float, a frontal shape (y up, z towards the viewer), e.g. the mean.
        faces: (M, 3) int, 0-based.

    Returns:
        ``(faces, flipped)``: the faces with their winding reversed (columns 1 and 2 swapped)
        when the area-weighted sum of face normals ``(v1 - v0) x (v2 - v0)`` points to -z,
        else unchanged; ``flipped`` says which. The artifact contract already has normals
        towards +z; the original's ``model_112.mat`` has them the other way (its visibility
        code used the opposite cross product), so its faces are flipped on loading.

    bfm-prep has a twin (``bfm_prep.io._checks.orient_front``) that cannot be shared: bfm-prep
    never imports torch or stn-core and stn-core never imports bfm-prep, and each must orient
    the files it reads itself, since those may be written by other tools.
    """
    faces = np.asarray(faces, dtype=np.int64)
    if faces.size == 0:
        return faces, False
    v = np.asarray(vertices, dtype=np.float64)[faces]
    normal_z = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])[:, 2].sum()
    if normal_z < 0:
        return np.ascontiguousarray(faces[:, [0, 2, 1]]), True
    return faces, False


class UVGridModel:
    """A morphable model on an R x R UV grid, as tensors on one device.

    Attributes:
        mean: (N, 3) float, mm; N = res * res. Axes: x to the viewer's right in a frontal
            view (the subject's left), y up, z towards the viewer.
        basis: (N, 3, K) float, mm per unit coefficient (identity components first, then
            expression).
        std: (K,) float, the standard deviation each component was multiplied by.
        kind: K strings, ``"identity"`` or ``"expression"``.
        faces: (F, 3) int64, 0-based, counter-clockwise seen from the front (normals +z).
        drawn_faces: (F', 3) int64, the faces whose three vertices are all ``inside``: the
            surface the renderer draws, the fits shade and the exported meshes hold.
        res: R.
        uv: (N, 2) float, each grid vertex's (u, v).
        inside: (N,) bool, True where the grid point fell on the source mesh.
        landmarks: name -> (L,) int64 0-based grid vertex indices (e.g. ``"aflw21"``).
        color_mean (N, 3), color_basis (N, 3, Kc), color_std (Kc,): RGB in [0, 1], or None.
        faces_flipped: True when the faces were rewound on construction (see
            :func:`orient_faces_towards_camera`).
        n_identity, n_expression, n_components (K), n_params (6 + K), n_vertices (N).

    Floating-point tensors share one dtype (float32 unless asked otherwise); integer and
    boolean tensors keep theirs.
    """

    _FLOAT_FIELDS = ("mean", "basis", "std", "uv", "color_mean", "color_basis", "color_std")
    _OTHER_FIELDS = ("faces", "inside")

    def __init__(
        self,
        mean: torch.Tensor,
        basis: torch.Tensor,
        faces: torch.Tensor,
        res: int,
        *,
        std: torch.Tensor,
        kind: list[str],
        uv: torch.Tensor,
        inside: torch.Tensor,
        landmarks: dict[str, torch.Tensor],
        color_mean: torch.Tensor | None = None,
        color_basis: torch.Tensor | None = None,
        color_std: torch.Tensor | None = None,
        faces_flipped: bool = False,
        source: str | None = None,
    ):
        """Low-level constructor from tensors already checked; use :meth:`from_arrays`."""
        self.mean = mean
        self.basis = basis
        self.faces = faces
        self.res = int(res)
        self.std = std
        self.kind = list(kind)
        self.uv = uv
        self.inside = inside
        self.drawn_faces = faces[inside[faces].all(1)]
        self.landmarks = dict(landmarks)
        self.color_mean = color_mean
        self.color_basis = color_basis
        self.color_std = color_std
        self.faces_flipped = bool(faces_flipped)
        self.source = source

    # -----------------------------------------------------------------------------------------
    # construction

    @classmethod
    def from_arrays(
        cls,
        mean,
        basis,
        faces,
        res: int | None = None,
        *,
        std=None,
        kind=None,
        n_identity: int | None = None,
        uv=None,
        inside=None,
        landmarks: dict | None = None,
        color_mean=None,
        color_basis=None,
        color_std=None,
        orient_faces: bool = True,
        device=None,
        dtype: torch.dtype = torch.float32,
        source: str | None = None,
    ) -> UVGridModel:
        """Build a model from arrays (numpy or torch), checking every shape.

        Args:
            mean: (N, 3) mm, or (3 N,) xyz interleaved per vertex (MATLAB ``shapeMU``).
            basis: (N, 3, K) mm per unit coefficient, or (3 N, K) xyz interleaved rows
                (MATLAB ``shapePC``).
            faces: (F, 3) int, **0-based** (subtract 1 from MATLAB's).
            res: R with N = R * R (default: sqrt(N), which must be an integer).
            std: (K,) (default ones). kind: K strings ``"identity"``/``"expression"``
                (default: the first ``n_identity`` identity, the rest expression; all
                identity when ``n_identity`` is None too).
            uv: (N, 2) (default: the grid's own, u = col / (R - 1), v = 1 - row / (R - 1)).
            inside: (N,) bool (default all True).
            landmarks: name -> 0-based grid indices.
            color_mean, color_basis, color_std: optional colour model.
            orient_faces: rewind the faces so that the mean shape's normals face +z when they
                do not (see :func:`orient_faces_towards_camera`); False keeps them as given.
            device, dtype: where the tensors live and the floating-point dtype.
        """
        mean_np = _numbers(mean, "mean")
        if mean_np.ndim == 2 and mean_np.shape[1] == 1:
            mean_np = mean_np[:, 0]
        if mean_np.ndim == 1:
            _check(mean_np.size % 3 == 0, f"mean has {mean_np.size} values, not a multiple of 3")
            mean_np = mean_np.reshape(-1, 3)
        _check(
            mean_np.ndim == 2 and mean_np.shape[1] == 3, f"mean must be (N, 3), got {mean_np.shape}"
        )
        n = mean_np.shape[0]
        basis_np = _numbers(basis, "basis")
        if basis_np.ndim == 2:
            _check(
                basis_np.shape[0] == 3 * n,
                f"basis must be (3 N, K) = ({3 * n}, K), got {basis_np.shape}",
            )
            basis_np = basis_np.reshape(n, 3, basis_np.shape[1])
        _check(
            basis_np.ndim == 3 and basis_np.shape[:2] == (n, 3),
            f"basis must be ({n}, 3, K), got {basis_np.shape}",
        )
        k = basis_np.shape[2]
        if res is None:
            res = int(round(np.sqrt(n)))
        res = int(res)
        _check(res * res == n, f"{n} vertices do not form a {res} x {res} grid")
        faces_np = _indices(faces, "faces")
        _check(
            faces_np.ndim == 2 and faces_np.shape[1] == 3,
            f"faces must be (F, 3), got {faces_np.shape}",
        )
        if faces_np.size:
            _check(
                faces_np.min() >= 0 and faces_np.max() < n,
                f"faces index vertices {faces_np.min()}..{faces_np.max()}, outside 0..{n - 1} "
                "(faces must be 0-based)",
            )
        std_np = np.ones(k) if std is None else _numbers(std, "std").reshape(-1)
        _check(std_np.shape == (k,), f"std must have {k} entries, got {std_np.shape}")
        _check(
            bool((std_np > 0).all()), "std must be positive (a standard deviation per component)"
        )
        if kind is None:
            n_id = k if n_identity is None else int(n_identity)
            _check(0 <= n_id <= k, f"n_identity must be in 0..{k}, got {n_id}")
            kind = ["identity"] * n_id + ["expression"] * (k - n_id)
        kind = [x.decode() if isinstance(x, bytes) else str(x) for x in kind]
        _check(len(kind) == k, f"kind must have {k} entries, got {len(kind)}")
        bad = sorted(set(kind) - {"identity", "expression"})
        _check(not bad, f"kind has unknown values {bad}; use 'identity' or 'expression'")
        if uv is None:
            rows, cols = np.divmod(np.arange(n), res)
            uv_np = (
                np.stack([cols / (res - 1), 1 - rows / (res - 1)], 1)
                if res > 1
                else np.zeros((n, 2))
            )
        else:
            uv_np = _numbers(uv, "uv")
        _check(uv_np.shape == (n, 2), f"uv must be ({n}, 2), got {uv_np.shape}")
        inside_np = (
            np.ones(n, bool) if inside is None else np.asarray(_np(inside)).astype(bool).reshape(-1)
        )
        _check(inside_np.shape == (n,), f"inside must have {n} entries, got {inside_np.shape}")
        lms = {}
        for name, idx in (landmarks or {}).items():
            idx_np = _indices(idx, f"landmark set {name!r}").reshape(-1)
            if idx_np.size:
                _check(
                    idx_np.min() >= 0 and idx_np.max() < n,
                    f"landmark set {name!r} indexes {idx_np.min()}..{idx_np.max()}, "
                    f"outside 0..{n - 1} (indices must be 0-based)",
                )
            lms[str(name)] = idx_np
        color = None
        if color_mean is not None:
            cm = _numbers(color_mean, "color_mean")
            if cm.ndim == 1:
                cm = cm.reshape(-1, 3)
            _check(cm.shape == (n, 3), f"color_mean must be ({n}, 3), got {cm.shape}")
            _check(color_basis is not None, "color_mean was given without color_basis")
            cb = _numbers(color_basis, "color_basis")
            if cb.ndim == 2:
                cb = cb.reshape(n, 3, -1)
            _check(
                cb.ndim == 3 and cb.shape[:2] == (n, 3),
                f"color_basis must be ({n}, 3, Kc), got {cb.shape}",
            )
            cs = (
                np.ones(cb.shape[2])
                if color_std is None
                else _numbers(color_std, "color_std").reshape(-1)
            )
            _check(cs.shape == (cb.shape[2],), f"color_std must have {cb.shape[2]} entries")
            _check(bool((cs > 0).all()), "color_std must be positive")
            color = (cm, cb, cs)
        flipped = False
        if orient_faces:
            faces_np, flipped = orient_faces_towards_camera(mean_np, faces_np)

        def f(a):
            return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=device)

        return cls(
            f(mean_np),
            f(basis_np),
            torch.as_tensor(faces_np, dtype=torch.long, device=device),
            res,
            std=f(std_np),
            kind=kind,
            uv=f(uv_np),
            inside=torch.as_tensor(inside_np, dtype=torch.bool, device=device),
            landmarks={
                k_: torch.as_tensor(v, dtype=torch.long, device=device) for k_, v in lms.items()
            },
            color_mean=None if color is None else f(color[0]),
            color_basis=None if color is None else f(color[1]),
            color_std=None if color is None else f(color[2]),
            faces_flipped=flipped,
            source=source,
        )

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        device=None,
        dtype: torch.dtype = torch.float32,
        *,
        orient_faces: bool = True,
    ) -> UVGridModel:
        """Read a ``stn-uv-grid-model`` HDF5 artifact (format version 1).

        Raises :class:`stn_core.ArtifactError` (a ValueError) with one sentence when the file
        is missing, not HDF5, another format, an unsupported version, or lacks a dataset.
        """
        path = Path(path)
        if path.is_dir():
            raise ArtifactError(
                f"{path} is a folder, not a file; pass a grid model (.h5) written by bfm-prep "
                "uv-resample."
            )
        if not path.is_file():
            raise ArtifactError(
                f"{path}: no such file; pass a grid model written by bfm-prep uv-resample."
            )
        if not h5py.is_hdf5(path):
            raise ArtifactError(
                f"{path}: not an HDF5 file (or truncated); pass a grid model "
                "written by bfm-prep uv-resample."
            )
        try:
            f = h5py.File(path, "r")
        except OSError as e:
            raise ArtifactError(
                f"{path}: cannot be opened as HDF5 ({e}); the file may be truncated."
            ) from None
        with f:
            fmt = _attr_str(f, "format")
            if fmt != FORMAT:
                raise ArtifactError(
                    f"{path}: format is {fmt!r}, expected {FORMAT!r}; pass the output of "
                    "bfm-prep uv-resample (not a model or embedding artifact)."
                )
            try:
                version = int(f.attrs.get("format_version", -1))
            except (TypeError, ValueError):
                version = -1
            if version not in SUPPORTED_VERSIONS:
                raise ArtifactError(
                    f"{path}: {FORMAT} format version {version} is not supported by this stn-core "
                    f"(supported: {', '.join(map(str, SUPPORTED_VERSIONS))}); upgrade stn-core or "
                    "rebuild the artifact."
                )
            try:
                res = f.attrs["res"]
                if not (np.issubdtype(np.asarray(res).dtype, np.integer) and np.ndim(res) == 0):
                    raise ArtifactError(
                        f"{path}: attribute res is {res!r}, not an integer; the file is damaged "
                        "(rebuild it with bfm-prep uv-resample)."
                    )
                g = f["shape"]
                color = {}
                if "color" in f:
                    c = f["color"]
                    color = dict(
                        color_mean=c["mean"][()], color_basis=c["basis"][()], color_std=c["std"][()]
                    )
                landmarks = (
                    {name: ds[()] for name, ds in f["landmarks"].items()}
                    if "landmarks" in f
                    else {}
                )
                arrays = dict(
                    mean=g["mean"][()],
                    basis=g["basis"][()],
                    std=g["std"][()],
                    kind=list(np.atleast_1d(g["kind"][()])),
                    faces=f["faces"][()],
                    uv=f["uv"][()],
                    inside=f["inside"][()],
                    landmarks=landmarks,
                    **color,
                )
            except KeyError as e:
                raise ArtifactError(
                    f"{path}: missing dataset or attribute ({e}); rebuild the artifact "
                    "with bfm-prep uv-resample."
                ) from None
        for name, a in [("faces", arrays["faces"])] + [
            (f"landmark set {k!r}", v) for k, v in arrays["landmarks"].items()
        ]:
            if np.asarray(a).dtype.kind not in "iu":
                raise ArtifactError(
                    f"{path}: {name} must hold integer indices, got values of type "
                    f"{np.asarray(a).dtype}; the file is damaged (rebuild it with bfm-prep "
                    "uv-resample)."
                )
        try:
            return cls.from_arrays(
                res=int(res),
                orient_faces=orient_faces,
                device=device,
                dtype=dtype,
                source=str(path),
                **arrays,
            )
        except ArtifactError as e:
            raise ArtifactError(f"{path}: {e}") from None

    # -----------------------------------------------------------------------------------------
    # device and dtype

    def to(self, device=None, dtype: torch.dtype | None = None) -> UVGridModel:
        """A copy on ``device`` with floating-point tensors in ``dtype`` (either may be None).

        Accepts ``model.to(torch.float64)`` and ``model.to("cuda")`` too.
        """
        if isinstance(device, torch.dtype):
            device, dtype = None, device
        expect(
            dtype is None or (isinstance(dtype, torch.dtype) and dtype.is_floating_point),
            f"UVGridModel.to takes a floating-point dtype for the model arrays, got {dtype}.",
        )

        def move(x, floating):
            if x is None:
                return None
            return x.to(device=device, dtype=dtype if floating else None)

        return UVGridModel(
            move(self.mean, True),
            move(self.basis, True),
            move(self.faces, False),
            self.res,
            std=move(self.std, True),
            kind=self.kind,
            uv=move(self.uv, True),
            inside=move(self.inside, False),
            landmarks={k: move(v, False) for k, v in self.landmarks.items()},
            color_mean=move(self.color_mean, True),
            color_basis=move(self.color_basis, True),
            color_std=move(self.color_std, True),
            faces_flipped=self.faces_flipped,
            source=self.source,
        )

    def cuda(self, device=None) -> UVGridModel:
        """A copy on the (current or given) CUDA device, as ``torch.nn.Module.cuda``."""
        return self.to(
            torch.device("cuda")
            if device is None
            else torch.device("cuda", device)
            if isinstance(device, int)
            else device
        )

    def cpu(self) -> UVGridModel:
        """A copy on the CPU."""
        return self.to("cpu")

    def float(self) -> UVGridModel:
        """A copy with float32 model arrays."""
        return self.to(torch.float32)

    def double(self) -> UVGridModel:
        """A copy with float64 model arrays."""
        return self.to(torch.float64)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @property
    def dtype(self) -> torch.dtype:
        return self.mean.dtype

    # -----------------------------------------------------------------------------------------
    # sizes

    @property
    def n_vertices(self) -> int:
        return self.mean.shape[0]

    @property
    def n_components(self) -> int:
        return self.basis.shape[2]

    @property
    def n_identity(self) -> int:
        return sum(k == "identity" for k in self.kind)

    @property
    def n_expression(self) -> int:
        return sum(k == "expression" for k in self.kind)

    @property
    def n_params(self) -> int:
        """Length of theta: 6 pose parameters + K shape coefficients."""
        return 6 + self.n_components

    @property
    def has_color(self) -> bool:
        return self.color_mean is not None

    def landmark_indices(self, landmarks) -> torch.Tensor:
        """Grid indices (L,) long on the model's device for a set name or an index sequence."""
        if isinstance(landmarks, str):
            if landmarks not in self.landmarks:
                raise ArtifactError(
                    f"landmark set {landmarks!r} is not in this model (it has "
                    f"{sorted(self.landmarks) or 'none'}); pass one of those or explicit indices."
                )
            return self.landmarks[landmarks]
        return torch.as_tensor(landmarks, dtype=torch.long, device=self.device).reshape(-1)

    def shape(self, alpha: torch.Tensor | None = None) -> torch.Tensor:
        """Vertices (N, 3) (alpha None or (K,)) or (B, N, 3) (alpha (B, K)), mm."""
        if alpha is None:
            return self.mean
        if alpha.dim() == 1:
            return morphable_shape(alpha[None], self.mean, self.basis)[0]
        return morphable_shape(alpha, self.mean, self.basis)

    def __repr__(self) -> str:
        return (
            f"UVGridModel(res={self.res}, n_identity={self.n_identity}, "
            f"n_expression={self.n_expression}, faces={self.faces.shape[0]}, "
            f"landmarks={sorted(self.landmarks)}, color={self.has_color}, "
            f"device={self.device}, dtype={self.dtype})"
        )


def _np(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return x


def _numbers(x, name: str) -> np.ndarray:
    """``x`` as a finite float64 array, or an ArtifactError naming ``name``: an array of
    strings, objects or booleans, or one holding NaN or infinity, is not a model array."""
    a = np.asarray(_np(x))
    _check(
        a.dtype.kind in "fiu",
        f"{name} must hold numbers, but its values are of type {a.dtype} (the file is damaged)",
    )
    a = a.astype(np.float64)
    bad = ~np.isfinite(a)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        _check(False, f"{name} holds {int(bad.sum())} NaN or infinite values (first at {first})")
    return a


def _indices(x, name: str) -> np.ndarray:
    """``x`` as an int64 array of indices, or an ArtifactError naming ``name``: integers, or
    (from MATLAB, which stores them as doubles) floats with integer values."""
    a = np.asarray(_np(x))
    if a.dtype.kind in "iu":
        return a.astype(np.int64)
    _check(
        a.dtype.kind == "f" and bool(np.isfinite(a).all()) and bool((a == np.round(a)).all()),
        f"{name} must hold integer indices, got values of type {a.dtype}"
        + (" that are not whole numbers" if a.dtype.kind == "f" else ""),
    )
    return a.astype(np.int64)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ArtifactError(f"Invalid grid model: {message}.")


def _attr_str(f: h5py.File, name: str) -> str | None:
    v = f.attrs.get(name)
    if isinstance(v, bytes):
        v = v.decode()
    return None if v is None else str(v)
