"""The embedded default: a synthetic, face-like morphable model in the real files' formats.

:func:`write_synthetic` writes, into one folder, the files that the licensed inputs would be,
in their exact formats and units, so that every command runs without them:

- ``01_MorphableModel.mat``: BFM 2009 layout (MATLAB v5). ``shapeMU`` (3N, 1) float32 in
  micrometres, xyz interleaved per vertex; ``shapePC`` (3N, K) float32 with orthonormal columns;
  ``shapeEV`` (K, 1) float32 standard deviations in micrometres, decreasing; ``texMU`` (3N, 1)
  float32 RGB in [0, 255]; ``texPC`` (3N, Kc) float32 orthonormal; ``texEV`` (Kc, 1) float32
  standard deviations in [0, 255] units; ``tl`` (M, 3) float64, 1-based, wound clockwise seen
  from the front like the real file (eos and our loader reverse it).
- ``Model_Expression.mat``: 3DDFA layout. ``w_exp`` (3V, D) float32 and ``mu_exp`` (3V, 1)
  float32, micrometres, on the V "3DDFA vertices" (every vertex except the mouth interior) in
  a shuffled order; one unit of coefficient adds one column (as 3DDFA and 3DMM-STN use it).
- ``map_tddfa_to_basel.mat``: ``map_tddfa_to_basel`` (1, V) uint16, the 0-based model vertex
  of each 3DDFA vertex.
- ``Landmarks21_BFM.anl`` / ``Landmarks68_BFM.anl``: 1-based vertex indices of the AFLW 21 and
  iBUG 68 landmarks, ``%`` comment header (the 3DMM-STN files' format).
- ``README.txt``: what each file is.

The mesh and mean are fixed for a vertex count (:mod:`bfm_prep.synth_mesh`); the seed draws
the components and the 3DDFA vertex order. Everything is exactly mirror-symmetric: the mirror
of vertex i has exactly (-x, y, z), every identity, colour and expression component is
symmetric or antisymmetric.

Axes as Basel: x to the viewer's right in a frontal view, y up, z towards the viewer.
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io
import scipy.linalg

from bfm_prep.atomic import all_or_nothing, atomic_file
from bfm_prep.errors import PrepError
from bfm_prep.synth_mesh import (
    BASEL_TRIANGLES,
    BASEL_VERTICES,
    BROW_Y,
    EYE_U,
    EYE_Y,
    MOUTH_A,
    MOUTH_V,
    ParamMesh,
    face_color,
    face_surface,
    make_param_mesh,
    pick_landmarks,
)

DEFAULT_VERTICES = 5000
MIN_VERTICES = 500
MAX_VERTICES = 65536  # map_tddfa_to_basel stores vertex indices as uint16
DEFAULT_N_SHAPE = 199
DEFAULT_N_COLOR = 199
DEFAULT_N_EXP = 29
MAX_N_SHAPE = 199
MAX_N_COLOR = 199
MAX_N_EXP = 99

FILES = {
    "bfm": "01_MorphableModel.mat",
    "expression": "Model_Expression.mat",
    "mapping": "map_tddfa_to_basel.mat",
    "aflw21": "Landmarks21_BFM.anl",
    "ibug68": "Landmarks68_BFM.anl",
    "readme": "README.txt",
}

# Per-vertex RMS size (mm, or [0, 255] colour units) of component k at one standard deviation.
SHAPE_RMS_MM = 2.2
SHAPE_DECAY = 1.0
COLOR_RMS = 10.0
COLOR_DECAY = 0.8
# Expression columns keep the size designed for them (mm at one unit of coefficient), times
# (k + 1)^-EXP_DECAY so that later components are weaker.
EXP_DECAY = 0.3

# Mirror of a displacement / colour vector: symmetric x -> -x; antisymmetric is its negative.
_SHAPE_MIRROR = np.array([-1.0, 1.0, 1.0])
_COLOR_MIRROR = np.array([1.0, 1.0, 1.0])
_SKIN_DIRECTION = np.array([200.0, 156.0, 132.0]) / np.linalg.norm([200.0, 156.0, 132.0])


@dataclass
class SyntheticFace:
    """The synthetic model, in the files' layouts and units (see the module docstring).

    Attributes:
        bfm: ``01_MorphableModel.mat`` variables.
        expression: ``Model_Expression.mat`` variables.
        mapping: ``map_tddfa_to_basel.mat`` variables.
        landmarks: ``{"aflw21": (21,), "ibug68": (68,)}`` int64, **0-based**.
        mesh: the parameter mesh (faces counter-clockwise seen from the front, mirror map,
            mouth-interior mask).
        vertices: (N, 3) float64 mean shape, mm.
        component_parity: ``{"shape": (K,), "color": (Kc,), "expression": (D,)}`` +1 for a
            mirror-symmetric component, -1 for an antisymmetric one.
        expression_names: D names (``"jaw_open"``, ``"smile"``, ...; ``"local_<k>"``).
    """

    bfm: dict
    expression: dict
    mapping: dict
    landmarks: dict
    mesh: ParamMesh
    vertices: np.ndarray
    component_parity: dict = field(default_factory=dict)
    expression_names: list = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# argument checks


def check_arguments(n_vertices: int, seed: int, n_shape: int, n_color: int, n_exp: int) -> None:
    """Raise PrepError (one sentence naming the parameter, :meth:`PrepError.naming`) for an
    argument out of range."""
    for v, name in (
        (n_vertices, "n_vertices"),
        (seed, "seed"),
        (n_shape, "n_shape"),
        (n_color, "n_color"),
        (n_exp, "n_exp"),
    ):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise PrepError.naming("{" + name + "} must be a whole number, got {value!r}.", value=v)
    if not MIN_VERTICES <= n_vertices <= MAX_VERTICES:
        raise PrepError.naming(
            "{n_vertices} must be between {lo} and {hi} (got {value}); use {basel} for the "
            "Basel size.",
            lo=MIN_VERTICES,
            hi=MAX_VERTICES,
            value=n_vertices,
            basel=BASEL_VERTICES,
        )
    if seed < 0:
        raise PrepError.naming("{seed} must be a non-negative integer (got {value}).", value=seed)
    for v, name, hi in (
        (n_shape, "n_shape", MAX_N_SHAPE),
        (n_color, "n_color", MAX_N_COLOR),
        (n_exp, "n_exp", MAX_N_EXP),
    ):
        if not 1 <= v <= hi:
            raise PrepError.naming(
                "{" + name + "} must be between 1 and {hi} (got {value}).", hi=hi, value=v
            )


# ---------------------------------------------------------------------------------------------
# symmetric fields: computed on the half mesh (u <= 0), orthonormalised there, mirrored


class _Half:
    """The vertices with u <= 0 (left side and midline), where fields are built."""

    def __init__(self, pm: ParamMesh, closed: np.ndarray, vertices: np.ndarray) -> None:
        u = pm.uv[:, 0]
        self.idx = np.flatnonzero(u <= 0)
        self.left = u[self.idx] < 0
        self.n_full = len(u)
        self.mirror = pm.mirror
        self.uv = pm.uv[self.idx]
        self.closed = closed[self.idx]
        self.vertices = vertices[self.idx]
        self.pocket = pm.pocket[self.idx]

    def orthonormalize(
        self,
        fields: np.ndarray,
        mirror: np.ndarray,
        parity: int,
        skip_rows: np.ndarray | None = None,
    ) -> np.ndarray:
        """Orthonormal columns spanning ``fields`` (n_h, 3, k) in order (Gram-Schmidt sense),
        in the inner product of the full mirrored vectors.

        ``mirror * parity`` is the factor per coordinate from a left vertex to its mirror; a
        midline coordinate whose factor is -1 must vanish and is left out. ``skip_rows``
        (n_h,) bool marks vertices that must stay zero (the mouth interior for expressions).
        """
        n_h, _, k = fields.shape
        factor = mirror * parity
        keep = np.ones((n_h, 3), bool)
        keep[~self.left] = factor > 0
        if skip_rows is not None:
            keep[skip_rows] = False
        w = np.where(self.left, np.sqrt(2.0), 1.0)[:, None] * np.ones(3)
        rows = keep.ravel()
        a = (fields * w[:, :, None]).reshape(n_h * 3, k)[rows]
        q, r = np.linalg.qr(a)
        q *= np.sign(np.where(np.diag(r) == 0, 1.0, np.diag(r)))
        out = np.zeros((n_h * 3, k))
        out[rows] = q
        return out.reshape(n_h, 3, k) / w[:, :, None]


def _smooth_basis(half: _Half, p_max: int, q_max: int):
    """Even and odd (in u) smooth scalar fields on the half mesh, (n_h, p_max * q_max) each,
    and the frequency of each column."""
    uh = half.uv[:, 0] / 95.0
    vh = (half.uv[:, 1] + 6.0) / 106.0
    p = np.arange(p_max)
    q = np.arange(q_max)
    even_u = np.cos(np.pi * p[None, :] * uh[:, None])
    odd_u = np.sin(np.pi * (p[None, :] + 0.5) * uh[:, None])
    odd_u[half.uv[:, 0] == 0] = 0.0
    fv = np.cos(np.pi * q[None, :] * (vh[:, None] + 1.0) / 2.0)
    even = (even_u[:, :, None] * fv[:, None, :]).reshape(len(uh), -1)
    odd = (odd_u[:, :, None] * fv[:, None, :]).reshape(len(uh), -1)
    freq = np.sqrt((p[:, None] + 0.0) ** 2 + (q[None, :] * 0.8) ** 2).ravel()
    return even, odd, freq


def _parities(k: int, every: int) -> np.ndarray:
    """+1 / -1 per component: every ``every``-th component (from the third) antisymmetric."""
    par = np.ones(k, np.int64)
    idx = np.arange(k)
    par[(idx >= 2) & (idx % every == every - 1)] = -1
    return par


def _random_components(
    half: _Half, rng: np.random.Generator, parity: np.ndarray, mirror: np.ndarray, coupled: bool
) -> np.ndarray:
    """Orthonormal smooth random components (n_h, 3, K) in ``parity`` order.

    Each coordinate of a component is a random combination of smooth basis fields (cosines in
    v times cosines or sines in u, by the parity the mirror needs); early components favour low
    frequencies, so they are the smoother ones. ``coupled``: the three channels share one
    pattern plus a weaker own part (colour). The combinations are orthonormalised in
    coefficient space (Cholesky QR, twice), which is cheap: the basis has few fields.
    """
    k_total = len(parity)
    n_h = len(half.idx)
    out = np.zeros((n_h, 3, k_total))
    w = np.where(half.left, 2.0, 1.0)  # a left vertex counts for itself and its mirror
    for par in (1, -1):
        ks = np.flatnonzero(parity == par)
        if not len(ks):
            continue
        need = len(ks)
        p_max = 7
        q_max = max(9, int(np.ceil(1.5 * need / (3 * p_max))))
        even, odd, freq = _smooth_basis(half, p_max, q_max)
        nb = even.shape[1]
        gram = {1: even.T @ (even * w[:, None]), -1: odd.T @ (odd * w[:, None])}
        sigma = 1.3 + 5.0 * (np.arange(need) + 1.0) / need  # frequency reach per component
        amp = np.exp(-0.5 * (freq[:, None] / sigma[None, :]) ** 2)  # (nb, need)
        # The u-parity of each coordinate: its mirrored value is mirror[c] * par * value.
        kinds = [1 if mirror[c] * par > 0 else -1 for c in range(3)]
        if coupled:
            # Mostly along the skin colour (brighter / darker skin), a little hue.
            shared = rng.standard_normal((nb, need))
            tint = _SKIN_DIRECTION[:, None] * (1.0 + 0.15 * rng.standard_normal((3, need)))
            coef = [
                amp * (shared * tint[c] + 0.12 * rng.standard_normal((nb, need))) for c in range(3)
            ]
        else:
            coef = [amp * rng.standard_normal((nb, need)) for c in range(3)]
        for _ in range(2):
            g = sum(coef[c].T @ gram[kinds[c]] @ coef[c] for c in range(3))
            r = np.linalg.cholesky(g).T  # g = r^T r, r upper with a positive diagonal
            coef = [scipy.linalg.solve_triangular(r, cf.T, trans="T").T for cf in coef]
        for c in range(3):
            out[:, c, ks] = (even if kinds[c] > 0 else odd) @ coef[c]
    return out


def _fill_full(
    half: _Half, comps: np.ndarray, parity: np.ndarray, mirror: np.ndarray, dtype=np.float32
) -> np.ndarray:
    """Full components as a (3N, K) Fortran-ordered array (xyz interleaved per vertex)."""
    k_total = comps.shape[2]
    n_h = len(half.idx)
    src = np.empty(half.n_full, np.int64)  # the half row each vertex copies
    src[half.idx] = np.arange(n_h)
    mirrored = half.mirror[half.idx[half.left]]
    src[mirrored] = np.flatnonzero(half.left)
    out = np.empty((k_total, half.n_full, 3), dtype=dtype)
    c = comps.transpose(2, 0, 1).astype(dtype)  # (K, n_h, 3)
    for k in range(k_total):
        blk = c[k][src]
        blk[mirrored] *= (parity[k] * mirror).astype(dtype)
        out[k] = blk
    return out.reshape(k_total, -1).T


def _stds(k: int, rms: float, decay: float, n_rows: int) -> np.ndarray:
    """Standard deviations of unit-norm components: per-entry RMS ``rms * (k+1)^-decay``."""
    return rms * (np.arange(k) + 1.0) ** (-decay) * np.sqrt(n_rows)


# ---------------------------------------------------------------------------------------------
# expressions: designed, local displacement fields (mm per unit coefficient, left side)


def _gauss(a, b, a0, b0, sa, sb):
    return np.exp(-0.5 * (((a - a0) / sa) ** 2 + ((b - b0) / sb) ** 2))


def _sigmoid(t):
    return 0.5 * (1.0 + np.tanh(0.5 * t))


def _smoothstep(t):
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _expression_fields(half: _Half, n_exp: int, rng: np.random.Generator):
    """Named expression displacement fields on the half mesh: (names, parity, (n_h, 3, D)).

    Defined for the image-left side (u <= 0, x <= 0); the right side is the mirror (symmetric)
    or the negated mirror (antisymmetric). "Outwards" on the left is -x.
    """
    au = -half.closed[:, 0]
    y = half.closed[:, 1]
    v = half.uv[:, 1]
    p = half.vertices
    n_h = len(au)
    # The jaw: everything below the lip line (parameter v: the lens separates the lips), fading
    # towards the ears, rotating about a hinge in front of them. The lips part sharply between
    # the mouth corners; beyond them the cheek stretches.
    width = 1.5 + 0.8 * np.clip(au - (MOUTH_A - 4.0), 0.0, None)
    jaw = _sigmoid((MOUTH_V - v) / width) * _sigmoid((10.0 - y) / 6.0)
    jaw *= _smoothstep((88.0 - au) / 28.0)
    hinge = np.array([-5.0, 25.0])  # (y, z)
    ang = 0.12
    dy_, dz_ = p[:, 1] - hinge[0], p[:, 2] - hinge[1]
    jaw_open = np.stack(
        [
            np.zeros(n_h),
            (dy_ * np.cos(ang) - dz_ * np.sin(ang) - dy_) * jaw,
            (dy_ * np.sin(ang) + dz_ * np.cos(ang) - dz_) * jaw,
        ],
        axis=1,
    )
    corner = _gauss(au, y, MOUTH_A, MOUTH_V, 11.0, 10.0)
    cheek = _gauss(au, y, 40.0, -18.0, 12.0, 12.0)
    smile = corner[:, None] * [-2.5, 3.5, -1.5] + cheek[:, None] * [-0.5, 1.5, 1.0]
    brow = _gauss(au, y, 30.0, BROW_Y, 26.0, 10.0) + 0.4 * _gauss(au, y, 30.0, 65.0, 35.0, 20.0)
    brow_raise = brow[:, None] * [0.0, 5.0, 0.6]
    inner_brow = _gauss(au, y, 16.0, BROW_Y - 2.0, 10.0, 8.0)
    frown = inner_brow[:, None] * [1.2, -3.0, 0.5]
    lips = _gauss(au, y, 0.0, MOUTH_V, 20.0, 9.0)
    pucker = lips[:, None] * np.stack([2.0 * au / 20.0, np.zeros(n_h), 4.0 * np.ones(n_h)], 1)
    stretch = corner[:, None] * [-4.0, -2.0, -0.5]
    lid = _gauss(au, y, EYE_U, EYE_Y + 4.0, 12.0, 4.0)
    blink = lid[:, None] * [0.0, -4.5, 0.6]
    puff = _gauss(au, y, 45.0, -35.0, 14.0, 14.0)[:, None] * [-2.0, 0.0, 4.0]
    wrinkle = _gauss(au, y, 10.0, 2.0, 7.0, 8.0)[:, None] * [0.3, 2.5, 0.3]
    upper = _sigmoid(v - MOUTH_V)
    lower = 1.0 - upper
    lip_raise = (_gauss(au, y, 0.0, MOUTH_V + 5.0, 18.0, 6.0) * upper)[:, None] * [0.0, 3.0, 1.0]
    lip_depress = (_gauss(au, y, 0.0, MOUTH_V - 7.0, 18.0, 7.0) * lower)[:, None] * [0.0, -3.0, 0.8]
    jaw_forward = jaw[:, None] * [0.0, 0.0, 4.0]
    jaw_side = jaw[:, None] * [4.0, 0.0, 0.0]
    mouth_side = lips[:, None] * [3.0, 0.0, 0.0]

    named = [
        ("jaw_open", 1, jaw_open),
        ("smile", 1, smile),
        ("brow_raise", 1, brow_raise),
        ("jaw_sideways", -1, jaw_side),
        ("lip_pucker", 1, pucker),
        ("frown", 1, frown),
        ("mouth_stretch", 1, stretch),
        ("half_smile", -1, smile),
        ("blink", 1, blink),
        ("cheek_puff", 1, puff),
        ("wink", -1, blink),
        ("upper_lip_raise", 1, lip_raise),
        ("lower_lip_depress", 1, lip_depress),
        ("one_brow_raise", -1, brow_raise),
        ("nose_wrinkle", 1, wrinkle),
        ("mouth_sideways", -1, mouth_side),
        ("jaw_forward", 1, jaw_forward),
        ("one_cheek_puff", -1, puff),
    ]
    names, parity, fields = [], [], []
    for name, par, f in named[:n_exp]:
        names.append(name)
        parity.append(par)
        fields.append(f)
    # Further components: local bumps on the face (mostly around the mouth and eyes) moving in
    # a random direction, alternately symmetric and antisymmetric.
    k = len(fields)
    while len(fields) < n_exp:
        centre_u = rng.uniform(0.0, 60.0)
        centre_y = rng.choice([MOUTH_V, EYE_Y, BROW_Y, -10.0, -70.0]) + rng.normal(0.0, 8.0)
        s = rng.uniform(7.0, 16.0)
        d = rng.standard_normal(3) * 2.0
        fields.append(_gauss(au, y, centre_u, centre_y, s, s)[:, None] * d)
        par = 1 if (len(fields) - k) % 2 else -1
        names.append(f"local_{len(fields)}")
        parity.append(par)
    return names, np.array(parity, np.int64), np.stack(fields, axis=2)


# ---------------------------------------------------------------------------------------------
# the model


def make_synthetic(
    seed: int = 0,
    n_vertices: int = DEFAULT_VERTICES,
    n_shape: int = DEFAULT_N_SHAPE,
    n_color: int = DEFAULT_N_COLOR,
    n_exp: int = DEFAULT_N_EXP,
) -> SyntheticFace:
    """Build the synthetic model in memory (see :class:`SyntheticFace`)."""
    check_arguments(n_vertices, seed, n_shape, n_color, n_exp)
    rng = np.random.default_rng(seed)
    pm = make_param_mesh(n_vertices)
    vertices, closed = face_surface(pm)
    n = len(vertices)
    half = _Half(pm, closed, vertices)

    # Identity.
    shape_par = _parities(n_shape, 3)
    shape_half = _random_components(half, rng, shape_par, _SHAPE_MIRROR, coupled=False)
    shape_pc = _fill_full(half, shape_half, shape_par, _SHAPE_MIRROR)
    shape_ev = _stds(n_shape, SHAPE_RMS_MM * 1000.0, SHAPE_DECAY, 3 * n)
    del shape_half
    # Colour.
    color_par = _parities(n_color, 4)
    color_half = _random_components(half, rng, color_par, _COLOR_MIRROR, coupled=True)
    tex_pc = _fill_full(half, color_half, color_par, _COLOR_MIRROR)
    tex_ev = _stds(n_color, COLOR_RMS, COLOR_DECAY, 3 * n)
    del color_half
    tex_mu = face_color(closed, pm)

    # Expression: designed fields (mm per unit coefficient), orthonormalised over the
    # non-mouth-interior vertices in order (so the first ones keep their meaning), then given
    # back their designed sizes, times a mild decay.
    names, exp_par, fields = _expression_fields(half, n_exp, rng)
    fields[half.pocket] = 0.0
    wts = np.where(half.left, 2.0, 1.0)[:, None, None]
    exp_norm = np.sqrt((fields**2 * wts).sum(axis=(0, 1)))
    exp_norm *= (np.arange(n_exp) + 1.0) ** (-EXP_DECAY)
    exp_half = np.zeros_like(fields)
    for par in (1, -1):
        ks = np.flatnonzero(exp_par == par)
        if len(ks):
            exp_half[:, :, ks] = half.orthonormalize(
                fields[:, :, ks], _SHAPE_MIRROR, par, skip_rows=half.pocket
            )
    keep = np.flatnonzero(~pm.pocket)
    n_tddfa = len(keep)
    w_full = _fill_full(half, exp_half, exp_par, _SHAPE_MIRROR, dtype=np.float64)
    w_full = w_full.reshape(n, 3, n_exp) * (exp_norm * 1000.0)  # micrometres
    # A small symmetric mean expression offset (3DDFA's mu_exp is near zero).
    mu_coef = np.where(exp_par == 1, rng.normal(0.0, 0.08, n_exp), 0.0)
    mu_full = w_full @ mu_coef
    order = rng.permutation(keep)  # the 3DDFA vertices, shuffled
    w_exp = w_full[order].reshape(3 * n_tddfa, n_exp)
    mu_exp = mu_full[order].reshape(-1, 1)

    tl = pm.faces[:, [0, 2, 1]] + 1  # clockwise seen from the front, as the real file

    bfm = {
        "shapeMU": (vertices * 1000.0).reshape(-1, 1).astype(np.float32),
        "shapePC": shape_pc,
        "shapeEV": shape_ev.reshape(-1, 1).astype(np.float32),
        "texMU": tex_mu.reshape(-1, 1).astype(np.float32),
        "texPC": tex_pc,
        "texEV": tex_ev.reshape(-1, 1).astype(np.float32),
        "tl": tl.astype(np.float64),
    }
    expression = {
        "w_exp": np.asfortranarray(w_exp, dtype=np.float32),
        "mu_exp": mu_exp.astype(np.float32),
    }
    mapping = {"map_tddfa_to_basel": order.astype(np.uint16).reshape(1, -1)}
    landmarks = pick_landmarks(pm, vertices, closed)
    return SyntheticFace(
        bfm=bfm,
        expression=expression,
        mapping=mapping,
        landmarks=landmarks,
        mesh=pm,
        vertices=vertices,
        component_parity={"shape": shape_par, "color": color_par, "expression": exp_par},
        expression_names=names,
    )


# ---------------------------------------------------------------------------------------------
# writing


def _write_mat(path: Path, variables: dict) -> None:
    with atomic_file(path) as f:
        scipy.io.savemat(f, variables, format="5", do_compression=False, oned_as="column")


def _anl_text(indices0: np.ndarray, header: list[str]) -> bytes:
    lines = [f"%{h}" if h else "%" for h in header]
    lines += [str(int(i) + 1) for i in indices0]
    return ("\n".join(lines) + "\n").encode()


_AFLW_HEADER = [
    "21 Landmark points for the synthetic face model (AFLW annotation)",
    "1-6: left to right eyebrows",
    "7-12: left to right eyes",
    "13-17: left ear - nose - right ear",
    "18-20: mouth",
    "21: chin",
    "(left/right as seen in the image; 1-based vertex indices)",
    "",
]
_IBUG_HEADER = ["68 Landmark points for the synthetic face model (300W annotation, 1-based)"]


def _readme(face: SyntheticFace, seed: int) -> str:
    n = face.vertices.shape[0]
    m = face.bfm["tl"].shape[0]
    k = face.bfm["shapePC"].shape[1]
    kc = face.bfm["texPC"].shape[1]
    v, d = face.expression["w_exp"].shape[0] // 3, face.expression["w_exp"].shape[1]
    is_basel = (n, m) == (BASEL_VERTICES, BASEL_TRIANGLES)
    basel = " (the Basel Face Model 2009 size)" if is_basel else ""
    names = textwrap.fill(
        "Components: " + ", ".join(face.expression_names) + ".",
        width=88,
        initial_indent="    ",
        subsequent_indent="    ",
    )
    return f"""Synthetic face model written by `bfm-prep synth` (seed {seed}).

A synthetic, face-like stand-in for the licensed input files, in their exact formats and
units, so that every bfm-prep / stn-train command runs without them. It is NOT the Basel
Face Model and NOT the 3DDFA expression model: shapes, colours and expressions are made up.

Mesh: {n} vertices, {m} triangles{basel}; a mirror-symmetric topological disk with a
mouth interior (a pocket behind the lips: {int(face.mesh.pocket.sum())} vertices). Axes as the
Basel model: x to the viewer's right in a frontal view, y up, z towards the viewer; the
vertex with exactly (-x, y, z) is the mirror of the vertex at (x, y, z).

01_MorphableModel.mat   BFM 2009 layout (MATLAB v5):
    shapeMU (3N x 1, float32) mean shape in micrometres, x y z interleaved per vertex;
    shapePC (3N x {k}, float32) identity components, orthonormal columns;
    shapeEV ({k} x 1, float32) their standard deviations in micrometres (decreasing);
    texMU (3N x 1, float32) mean colour, RGB in [0, 255], interleaved per vertex;
    texPC (3N x {kc}, float32) colour components, orthonormal columns;
    texEV ({kc} x 1, float32) their standard deviations in [0, 255] units;
    tl (M x 3, double) triangles, 1-based vertex indices, wound clockwise seen from the
    front (as in the real file).
Model_Expression.mat    3DDFA layout: w_exp (3V x {d}, float32) and mu_exp (3V x 1,
    float32), micrometres, on V = {v} "3DDFA vertices" (every vertex except the mouth
    interior) in the order of the mapping; one unit of coefficient adds one column of w_exp.
{names}
map_tddfa_to_basel.mat  map_tddfa_to_basel (1 x V, uint16): the 0-based model vertex of
    each 3DDFA vertex (a shuffled order).
Landmarks21_BFM.anl     the 21 AFLW landmarks, 1-based vertex indices (lines starting with %
    are comments); 1-6 brows, 7-12 eyes, 13-17 left ear, nose, right ear, 18-20 mouth,
    21 chin, left to right as seen in the image.
Landmarks68_BFM.anl     the 68 iBUG (300-W) landmarks, same format.
"""


def write_synthetic(
    outdir: str | os.PathLike,
    seed: int = 0,
    n_vertices: int = DEFAULT_VERTICES,
    n_shape: int = DEFAULT_N_SHAPE,
    n_color: int = DEFAULT_N_COLOR,
    n_exp: int = DEFAULT_N_EXP,
) -> dict[str, Path]:
    """Write the synthetic model's files into ``outdir`` (created if needed).

    Returns ``{"bfm", "expression", "mapping", "aflw21", "ibug68", "readme"} -> Path``.
    Raises PrepError for bad arguments (before anything is written) or an unusable outdir.
    Each file is written atomically, and all six together (a failure leaves none of them).
    """
    check_arguments(n_vertices, seed, n_shape, n_color, n_exp)
    out = Path(outdir)
    if out.exists() and not out.is_dir():
        raise PrepError(
            f"{out}: exists and is not a folder; pass a folder for the synthetic files."
        )
    face = make_synthetic(
        seed=seed, n_vertices=n_vertices, n_shape=n_shape, n_color=n_color, n_exp=n_exp
    )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PrepError(
            f"{out}: cannot create the folder ({e.strerror}); pass a writable path."
        ) from None
    paths = {key: out / name for key, name in FILES.items()}
    texts = {
        "aflw21": _anl_text(face.landmarks["aflw21"], _AFLW_HEADER),
        "ibug68": _anl_text(face.landmarks["ibug68"], _IBUG_HEADER),
        "readme": _readme(face, seed).encode(),
    }
    with all_or_nothing():  # a failure on the way leaves none of the six files
        _write_mat(paths["bfm"], face.bfm)
        _write_mat(paths["expression"], face.expression)
        _write_mat(paths["mapping"], face.mapping)
        for key, data in texts.items():
            with atomic_file(paths[key]) as f:
                f.write(data)
    return paths


__all__ = [
    "DEFAULT_VERTICES",
    "FILES",
    "SyntheticFace",
    "check_arguments",
    "make_synthetic",
    "write_synthetic",
]
