"""The image fit's cost, residuals, closed-form Jacobian and normal equations (the problem
:func:`stn_core.fitting.fit_image` hands to the Levenberg-Marquardt solver).

The model is never rasterised inside the cost. As in the 3DMM-STN, the image is *sampled* at
the projected grid vertices (the bilinear sampler of :mod:`stn_core.sampler`) and compared
there with the model's colour, albedo times Lambertian shading. Per image b, with parameters

    x = [r (3), t (2), log_s (1), alpha (K), beta (Kc), sh (27)]

(theta = x[:6 + K] in the usual order; beta the colour model's coefficients, unit variance;
sh the (9, 3) lighting coefficients of :mod:`stn_core.shading`, flattened row-major so that
``sh[k, c]`` is entry ``3 k + c`` of the last block), the cost is

    C(x) = w_lm   * sum_l v_l |p_l(theta) - q_l|^2 / s0^2                       (landmarks, mm^2)
         + w_photo / N_ref * sum_{n visible} sum_c huber_delta(e_nc(x))            (photometric)
         + w_id |alpha_id|^2 + w_exp |alpha_exp|^2 + w_alb |beta|^2                 (priors)
         + w_sh * sum_{k >= 1, c} sh[k, c]^2                                       (lighting prior)

    e_nc = I_c(p_n(theta)) - albedo_c(n; beta) * shading_c(normal_n(theta), sh_c)

- p_n: the image position of grid vertex n (:func:`stn_core.geometry.project_theta`); I_c(p)
  the bilinear sample of channel c there (zeros outside the image, the sampler's contract).
- albedo = color_mean + color_basis @ beta (the model's colour model, RGB in [0, 1]).
- normal_n: the unit angle-weighted vertex normal (:func:`stn_core.normals.vertex_normals`)
  of the posed mesh's drawn faces (those whose three vertices are ``inside``), in camera
  space: exactly the normals :func:`stn_core.renderer.render` shades with.
- shading_c = sh_basis(normal) @ sh[:, c] (:func:`stn_core.shading.sh_basis`).
- Visible: the vertex is ``inside``, its normal faces the camera (n_z > 0; ``visibility=
  "depth"`` adds the z-buffer test of :func:`stn_core.visibility.depth_visibility`) and it
  projects into the image. Visibility is recomputed, without gradient, every time the cost
  is evaluated (every LM iteration, at the trial point), so the LM acceptance test compares
  true costs and accepted costs never increase.
- N_ref: the number of ``inside`` vertices fitted (not the visible count, which changes with
  the pose): the photometric term is a mean over the face, independent of the grid size.
- huber_delta: the Huber function (quadratic up to ``delta``, linear beyond) that makes the
  term robust to hair, glasses, occluders and background; Gauss-Newton runs on its exact
  square root (:func:`stn_core.fitting.solver.huber_residuals`).
- s0: the scale (pixels per mm) of the landmark fit, fixed per image, so that the landmark
  term is in model millimetres as in :func:`stn_core.fitting.fit_landmarks`.
- The ambient lighting coefficients sh[0, :] have no prior (the albedo prior fixes the
  albedo-brightness ambiguity).

Default weights (:class:`FitWeights`): w_lm = 1 per mm^2 (fit_landmarks' unit); w_photo = 1e4,
so that a face matched to 0.05 RMS per colour channel (typical of unmodelled skin detail,
shadows and specularities in photographs) costs 75, about what 21 landmarks off by 2 mm
(a good detector's error) cost; all three coefficient priors 1 (the MAP weight of unit-variance
coefficients in the landmark term's unit); w_sh = 1; huber_delta = 0.1 (colour values in
[0, 1]): residuals beyond 0.1, hair, glasses or background, pull linearly, not
quadratically.

The Jacobian is exact and in closed form, never materialised whole: for each chunk of
vertices its rows are built, contracted into ``J^T J`` and ``J^T r`` and dropped
(:class:`~stn_core.fitting.solver.NormalEquations`). Its photometric rows chain

- the image derivative (the derivative of the bilinear interpolant at p_n, one-sided at
  integer coordinates like grid_sample) into d p_n / d theta,
- the shading derivative d shading / d normal into d normal / d theta: the rotation's through
  the left Jacobian of SO(3), the shape's through the exact derivative of the angle-weighted
  normal (corner angles and unit face normals of all incident faces) with respect to every
  vertex of the 1-ring,
- albedo and lighting, in which the model colour is linear.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, fields

import torch

from stn_core.fitting.landmarks import DEFAULT_PRIOR_WEIGHT, landmark_residuals
from stn_core.fitting.solver import NormalEquations, huber_residuals
from stn_core.geometry import axis_angle_to_matrix, skew, so3_left_jacobian
from stn_core.normals import normals_and_jacobian, one_ring
from stn_core.sampler.bilinear import sample_with_gradient
from stn_core.shading import sh_basis, sh_basis_gradient
from stn_core.visibility import depth_visibility

__all__ = ["FitWeights", "TERMS", "ImageFitProblem"]

# The names of the cost's terms, as in NormalEquations.terms and LMHistory.terms.
TERMS = (
    "landmarks",
    "photometric",
    "prior_identity",
    "prior_expression",
    "prior_albedo",
    "prior_sh",
)


@dataclass(frozen=True)
class FitWeights:
    """The weights of the cost's terms (see the module docstring for their units).

    landmarks: per mm^2 of landmark error (the landmark fit's unit).
    photometric: of the mean over the fitted inside vertices of the Huber cost of the three
        colour residuals (colour values in [0, 1]).
    identity, expression, albedo: of |coefficients|^2 (unit variance per component).
    sh: of the squared lighting coefficients of bands 1 and 2 (the ambient band is free).
    huber_delta: where the Huber function turns linear, in colour units.
    """

    landmarks: float = 1.0
    photometric: float = 1e4
    identity: float = DEFAULT_PRIOR_WEIGHT
    expression: float = DEFAULT_PRIOR_WEIGHT
    albedo: float = 1.0
    sh: float = 1.0
    huber_delta: float = 0.1

    def __post_init__(self):
        for f in fields(self):
            v = float(getattr(self, f.name))
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"FitWeights.{f.name} must be finite and >= 0, got {v}.")
        if self.huber_delta <= 0:
            raise ValueError(f"FitWeights.huber_delta must be > 0, got {self.huber_delta}.")


class ImageFitProblem:
    """The fit's cost, residuals and normal equations for a batch of images.

    Built once per :func:`fit_image` call; :meth:`normal_equations` is the solver's
    linearisation. Parameters x (B, P), P = 6 + K + Kc + 27, laid out as in the module
    docstring; ``slices`` names the blocks.

    Args:
        model: UVGridModel (without a colour model the albedo is 0.7 grey and Kc = 0).
        images: (B, 3, H, W). landmarks: (B, L, 2) pixels. landmark_weight: (B, L) visibility
            weights. indices: (L,) grid vertices of the landmarks. s0: (B,) pixels per mm.
        weights: :class:`FitWeights`. visibility: "normals" or "depth".
        chunk_elements: bound on the elements of one chunk of Jacobian rows.
    """

    def __init__(
        self,
        model,
        images,
        landmarks,
        landmark_weight,
        indices,
        s0,
        weights: FitWeights,
        visibility: str = "normals",
        chunk_elements: int | None = None,
    ):
        dt = images.dtype
        dev = images.device
        self.dtype, self.device = dt, dev
        self.images = images
        self.h, self.w = images.shape[-2:]
        self.weights = weights
        self.visibility = visibility
        self.mean = model.mean.to(device=dev, dtype=dt)
        self.basis = model.basis.to(device=dev, dtype=dt)
        self.n = self.mean.shape[0]
        self.k = self.basis.shape[2]
        self.has_color = model.color_mean is not None
        if self.has_color:
            self.cmean = model.color_mean.to(device=dev, dtype=dt)
            self.cbasis = model.color_basis.to(device=dev, dtype=dt)
        else:
            self.cmean = torch.full((self.n, 3), 0.7, dtype=dt, device=dev)
            self.cbasis = torch.zeros(self.n, 3, 0, dtype=dt, device=dev)
        self.kc = self.cbasis.shape[2]
        self.inside = model.inside.to(dev)
        self.faces = model.drawn_faces.to(dev)
        self.ring = one_ring(self.faces, self.n)
        # The shape basis as a (3 N, K) matrix: one sparse product with the per-vertex ring
        # coefficients gives the alpha columns of the Jacobian.
        self.basis_flat = self.basis.reshape(self.n * 3, self.k)
        idx = indices.to(dev)
        self.lm_index = idx
        self.lm_mean = self.mean[idx]
        self.lm_basis = self.basis[idx]
        self.q = landmarks.to(device=dev, dtype=dt)
        lw = landmark_weight.to(device=dev, dtype=dt)
        self.lm_sqrt_w = (weights.landmarks * lw).sqrt() / s0.to(device=dev, dtype=dt)[:, None]
        k, kc = self.k, self.kc
        self.p = 6 + k + kc + 27
        self.slices = {
            "pose": slice(0, 6),
            "alpha": slice(6, 6 + k),
            "beta": slice(6 + k, 6 + k + kc),
            "sh": slice(6 + k + kc, self.p),
        }
        kinds = list(model.kind)
        pw = torch.zeros(self.p, dtype=torch.float64, device=dev)
        prior_group = torch.full((self.p,), -1, dtype=torch.long, device=dev)
        for i, kind in enumerate(kinds):
            ident = kind == "identity"
            pw[6 + i] = weights.identity if ident else weights.expression
            prior_group[6 + i] = 0 if ident else 1
        pw[6 + k : 6 + k + kc] = weights.albedo
        prior_group[6 + k : 6 + k + kc] = 2
        pw[6 + k + kc + 3 :] = weights.sh  # sh[0, :] (ambient) is free
        prior_group[6 + k + kc + 3 :] = 3
        self.prior_weight = pw
        self.prior_group = prior_group
        if chunk_elements is None:
            # A GPU chunk of 2^28 elements is about 26 images of R = 112, P = 222 at once
            # (~1 GB of Jacobian rows, a few GB with temporaries).
            chunk_elements = (1 << 28) if dev.type == "cuda" else (1 << 24)
        self.chunk_elements = int(chunk_elements)
        self.set_vertices(1)

    # -- vertex subsets -----------------------------------------------------------------------

    def set_vertices(self, stride: int) -> None:
        """Fit the photometric term on every stride-th grid row and column (inside only)."""
        r = int(round(math.sqrt(self.n)))
        k = torch.arange(self.n, device=self.device)
        on = (
            ((k // r) % stride == 0) & ((k % r) % stride == 0)
            if r * r == self.n
            else (k % stride == 0)
        )
        self.vertices = torch.nonzero(on & self.inside).flatten()
        self.n_ref = max(1, int(self.vertices.numel()))
        # The colour rows of the fitted vertices, gathered once per stage (chunks slice them).
        v = self.vertices
        self.sub_cbasis = self.cbasis if v.numel() == self.n else self.cbasis[v]
        # Sparsity pattern of the ring coefficients: row (vertex i, channel c) has the columns
        # 3 * ring[v_i, s] + xyz of the real ring slots s (padding dropped), in increasing
        # order; value_index points into the (m, 3, S, 3) coefficients, counts per vertex.
        s = self.ring.size
        idx = self.ring.index[v]  # (M, S)
        real = (idx != v[:, None]) | (
            torch.arange(s, device=self.device)[None] == self.ring.self_slot[v][:, None]
        )
        real = real[:, None, :, None].expand(-1, 3, s, 3)
        cols = (3 * idx[:, None, :, None] + torch.arange(3, device=self.device)).expand(-1, 3, s, 3)
        self.csr_cols = cols[real]
        self.csr_value_index = torch.nonzero(real.reshape(-1)).flatten()
        per_row = real.reshape(v.numel() * 3, s * 3).sum(1)
        self.csr_row_end = torch.cumsum(per_row, 0)  # (3 M,)

    # -- parameters -----------------------------------------------------------------------------

    def split(self, x: torch.Tensor):
        """x (B, P) -> (theta (B, 6 + K), beta (B, Kc), sh (B, 9, 3))."""
        sl = self.slices
        return x[:, : 6 + self.k], x[:, sl["beta"]], x[:, sl["sh"]].reshape(-1, 9, 3)

    def pack(self, theta, beta, sh) -> torch.Tensor:
        return torch.cat([theta, beta, sh.reshape(sh.shape[0], 27)], 1)

    # -- evaluation -----------------------------------------------------------------------------

    def geometry(self, theta: torch.Tensor, jacobian: bool):
        """Projected points, rotated vertices, normals (camera space) and their Jacobians."""
        r, t, log_s, alpha = theta[:, :3], theta[:, 3:5], theta[:, 5], theta[:, 6:]
        rot = axis_angle_to_matrix(r)
        x = self.mean + (alpha @ self.basis.reshape(self.n * 3, self.k).T).reshape(-1, self.n, 3)
        # The normal Jacobian only at the fitted vertices (a quarter of them when coarse).
        n_model, dn = normals_and_jacobian(
            x,
            self.faces,
            self.ring,
            jacobian,
            rows=None if self.vertices.numel() == self.n else self.vertices,
        )
        y = x @ rot.transpose(1, 2)
        normals = n_model @ rot.transpose(1, 2)
        s = torch.exp(log_s)
        points = torch.stack([s[:, None] * y[..., 0], -s[:, None] * y[..., 1]], -1) + t[:, None]
        return dict(rot=rot, x=x, y=y, s=s, t=t, r=r, points=points, normals=normals, dn=dn)

    def visible(self, geo) -> torch.Tensor:
        """(B, N) bool: inside, facing the camera (and unoccluded), projecting into the image."""
        p = geo["points"]
        vis = (geo["normals"][..., 2] > 0) & self.inside
        vis &= (p[..., 0] >= 0) & (p[..., 0] <= self.w - 1)
        vis &= (p[..., 1] >= 0) & (p[..., 1] <= self.h - 1)
        if self.visibility == "depth":
            vis &= depth_visibility(geo["y"], self.faces)
        return vis

    def appearance(self, beta, sh, normals):
        """Albedo (B, N, 3), SH basis (B, N, 9) and shading (B, N, 3)."""
        if self.kc:
            alb = self.cmean + (beta @ self.cbasis.reshape(self.n * 3, self.kc).T).reshape(
                -1, self.n, 3
            )
        else:
            alb = self.cmean.expand(normals.shape[0], self.n, 3)
        ysh = sh_basis(normals)
        return alb, ysh, ysh @ sh

    def normal_equations(self, x64: torch.Tensor, free: str = "all") -> NormalEquations:
        """The solver's linearisation at x (B, P) float64: cost, J^T J, J^T r (float64) and
        the named terms. ``free="appearance"`` skips the geometry columns (held fixed)."""
        x = x64.to(self.dtype)
        bsz = x.shape[0]
        # Chunks of images bound the per-face temporaries of the normal Jacobian.
        per_image = self.faces.shape[0] * 81 * 4 + self.n * self.ring.size * 9 * 2
        bc = max(1, min(bsz, self.chunk_elements // max(1, per_image)))
        parts = [
            self._normal_equations(x[i : i + bc], free, slice(i, i + bc)) for i in range(0, bsz, bc)
        ]
        if len(parts) == 1:
            return parts[0]
        return NormalEquations(
            torch.cat([p.cost for p in parts]),
            torch.cat([p.jtj for p in parts]),
            torch.cat([p.jtr for p in parts]),
            {k: torch.cat([p.terms[k] for p in parts]) for k in parts[0].terms},
        )

    def _normal_equations(self, x: torch.Tensor, free: str, batch: slice) -> NormalEquations:
        bsz, p_all = x.shape
        dt, dev = self.dtype, self.device
        jtj = torch.zeros(bsz, p_all, p_all, dtype=dt, device=dev)
        jtr = torch.zeros(bsz, p_all, dtype=dt, device=dev)
        photo = torch.zeros(bsz, dtype=dt, device=dev)
        # With the geometry held, its columns are zero: only the appearance block is formed.
        q0 = 0 if free == "all" else 6 + self.k
        for res, jac in self._photometric_rows(x, free, batch=batch):
            photo = photo + (res * res).sum(1)
            # J^T J straight from the transposed view: BLAS takes the transpose as a flag,
            # while a contiguous copy of J^T would cost half as much again.
            jac_t = jac.mT
            jtj[:, q0:, q0:] += jac_t @ jac
            jtr[:, q0:] += (jac_t @ res[..., None])[..., 0]
        r_lm, j_lm = self._landmark_rows(x, jacobian=free == "all", batch=batch)
        q = 6 + self.k
        if j_lm is not None:
            jt = j_lm.transpose(1, 2).contiguous()
            jtj[:, :q, :q] += jt @ j_lm
            jtr[:, :q] += (jt @ r_lm[..., None])[..., 0]
        # Priors (diagonal) and the sums in float64: the solver's small systems and its
        # acceptance test see float64 whatever the working dtype.
        pw = self.prior_weight
        x64 = x.to(torch.float64)
        jtj = jtj.to(torch.float64) + torch.diag_embed(pw.expand(bsz, -1))
        jtr = jtr.to(torch.float64) + pw * x64
        pc = pw * x64 * x64
        terms = {
            "landmarks": (r_lm * r_lm).sum(1).to(torch.float64),
            "photometric": photo.to(torch.float64),
        }
        for gi, name in enumerate(TERMS[2:]):
            terms[name] = (pc * (self.prior_group == gi)).sum(1)
        cost = sum(terms.values())
        return NormalEquations(cost, jtj, jtr, terms)

    def _landmark_rows(self, x: torch.Tensor, jacobian: bool = True, batch: slice = slice(None)):
        """Landmark residuals (B, 2 L) and their Jacobian (B, 2 L, 6 + K) or None; ``batch``
        selects the images x belongs to."""
        nl = self.lm_index.numel()
        r_lm, j_lm = landmark_residuals(
            x[:, : 6 + self.k],
            self.lm_mean,
            self.lm_basis,
            self.q[batch],
            self.lm_sqrt_w[batch],
            0.0,
            jacobian=jacobian,
        )
        return r_lm[:, : 2 * nl], None if j_lm is None else j_lm[:, : 2 * nl]

    def _photometric_rows(
        self, x: torch.Tensor, free: str = "all", vis=None, batch: slice = slice(None)
    ):
        """Yield, per chunk of the fitted vertices, the photometric residuals (B, 3 m) and
        their Jacobian rows (B, 3 m, P), rows ordered (vertex, channel); with ``free=
        "appearance"`` only the albedo and lighting columns (B, 3 m, Kc + 27). ``vis`` (B, N)
        overrides the visibility computed at x; ``batch`` selects the images x belongs to."""
        images = self.images[batch]
        bsz, p_all = x.shape
        dt, dev = self.dtype, self.device
        geom = free == "all"
        theta, beta, sh = self.split(x)
        geo = self.geometry(theta, jacobian=geom)
        if vis is None:
            vis = self.visible(geo)
        alb, ysh, shading = self.appearance(beta, sh, geo["normals"])
        sw = math.sqrt(self.weights.photometric / self.n_ref)
        k, kc = self.k, self.kc
        verts = self.vertices
        nc = max(1, self.chunk_elements // max(1, bsz * 3 * p_all))
        if geom:
            jl = so3_left_jacobian(geo["r"])  # (B, 3, 3)
            sign = torch.tensor([1.0, -1.0], dtype=dt, device=dev)
            # (s P R): d p / d X for every vertex, (B, 2, 3).
            spr = (geo["s"][:, None, None] * sign[:, None]) * geo["rot"][:, :2, :]
        for c0 in range(0, verts.numel(), nc):
            v = verts[c0 : c0 + nc]
            m = v.numel()
            rows = slice(c0, c0 + m)
            pts = geo["points"][:, v]
            val, grad = sample_with_gradient(images, pts)
            val = val.transpose(1, 2)  # (B, m, 3)
            grad = grad.transpose(1, 2)  # (B, m, 3 channels, 2)
            a = alb[:, v]
            sc = shading[:, v]
            rt, dh = huber_residuals(val - a * sc, self.weights.huber_delta)
            mask = vis[:, v].to(dt)[..., None] * sw
            res = rt * mask  # (B, m, 3)
            # Each block is written, row-scaled, straight into its columns of J: no
            # concatenation and no separate scaling pass over the whole Jacobian.
            w_row = (dh * mask)[..., None]  # (B, m, 3, 1)
            q0 = 0 if geom else 6 + k
            jac = torch.empty(bsz, m, 3, p_all - q0, dtype=dt, device=dev)
            if geom:
                nrm = geo["normals"][:, v]
                # d e / d normal (camera space), (B, m, 3 channels, 3): -albedo dY/dn^T sh_c.
                gn = -a[..., None] * torch.einsum("bmkx,bkc->bmcx", sh_basis_gradient(nrm), sh)
                # Pose: d p / d r = s sign (-[Y]_x J_l)[:2]; d n / d r = -[n]_x J_l.
                dp_dr = -(skew(geo["y"][:, v]) @ jl[:, None])[:, :, :2, :] * (
                    geo["s"][:, None, None, None] * sign[:, None]
                )
                dn_dr = -skew(nrm) @ jl[:, None]
                torch.mul(grad @ dp_dr + gn @ dn_dr, w_row, out=jac[..., 0:3])
                torch.mul(grad, w_row, out=jac[..., 3:5])
                j_s = (grad * (pts - geo["t"][:, None])[:, :, None, :]).sum(-1, keepdim=True)
                torch.mul(j_s, w_row, out=jac[..., 5:6])
                # Alpha, through every vertex of the ring: the normal's part dn^T (R^T gn)
                # and, at the vertex itself, the point's motion (s P R)^T grad.
                gm = gn @ geo["rot"][:, None]  # rows (R^T gn_c)^T
                hring = torch.einsum("bmcx,bmsxy->bmcsy", gm, geo["dn"][:, rows]).contiguous()
                own = grad @ spr[:, None]  # (B, m, 3, 3)
                slot = self.ring.self_slot[v][None, :, None, None, None].expand(bsz, m, 3, 1, 3)
                hring.scatter_add_(3, slot, own[:, :, :, None, :])
                j_a = self._ring_product(hring, c0, m)  # (B, m, 3, K)
                torch.mul(j_a, w_row, out=jac[..., 6 : 6 + k])
            o = 6 + k - q0
            if kc:
                torch.mul(
                    self.sub_cbasis[rows][None], -sc[..., None] * w_row, out=jac[..., o : o + kc]
                )
            j_sh = jac[..., o + kc :].view(bsz, m, 3, 9, 3)
            j_sh.zero_()
            y9 = ysh[:, v]
            for ch in range(3):
                torch.mul(
                    y9, -(a[:, :, ch] * w_row[:, :, ch, 0])[..., None], out=j_sh[:, :, ch, :, ch]
                )
            yield res.reshape(bsz, 3 * m), jac.view(bsz, 3 * m, jac.shape[-1])

    def _ring_product(self, hring: torch.Tensor, c0: int, m: int) -> torch.Tensor:
        """sum over ring slots s of hring[b, i, c, s, :] . basis[ring[v_i, s]] for the chunk
        of fitted vertices c0 .. c0 + m: a CSR (B 3 m, 3 N) by (3 N, K) product."""
        bsz = hring.shape[0]
        r0, r1 = 3 * c0, 3 * (c0 + m)
        start = int(self.csr_row_end[r0 - 1]) if r0 else 0
        end = int(self.csr_row_end[r1 - 1])
        nnz = end - start
        per_vertex = 3 * self.ring.size * 3
        vidx = self.csr_value_index[start:end] - c0 * per_vertex
        values = hring.reshape(bsz, m * per_vertex)[:, vidx].reshape(-1)
        rows = self.csr_row_end[r0:r1] - start  # (3 m,) row ends within the chunk
        offsets = nnz * torch.arange(bsz, device=self.device)
        crow = torch.cat(
            [
                torch.zeros(1, dtype=rows.dtype, device=self.device),
                (rows[None, :] + offsets[:, None]).reshape(-1),
            ]
        )
        cols = self.csr_cols[start:end].repeat(bsz)
        with warnings.catch_warnings():  # "sparse CSR support is in beta": it is used plainly
            warnings.simplefilter("ignore", UserWarning)
            a = torch.sparse_csr_tensor(
                crow,
                cols,
                values,
                (bsz * 3 * m, 3 * self.n),
                dtype=values.dtype,
                device=self.device,
            )
            return (a @ self.basis_flat).view(bsz, m, 3, self.k)

    def residuals(self, x: torch.Tensor, vis: torch.Tensor | None = None) -> torch.Tensor:
        """All residuals (B, 2 L + 3 N' + P) whose squares sum to the cost: landmarks, the
        photometric rows of the N' fitted vertices (zero where not visible), priors. ``vis``
        (B, N) fixes the visibility (None: computed at x). For tests and diagnostics."""
        x = x.to(self.dtype)
        r_lm, _ = self._landmark_rows(x, jacobian=False)
        photo = [r for r, _ in self._photometric_rows(x, "appearance", vis)]
        prior = self.prior_weight.to(self.dtype).sqrt() * x
        return torch.cat([r_lm, *photo, prior], 1)

    def jacobian(self, x: torch.Tensor, vis: torch.Tensor | None = None) -> torch.Tensor:
        """The closed-form Jacobian (B, 2 L + 3 N' + P, P) of :meth:`residuals`, from the
        same blocks as :meth:`normal_equations` (materialised: small problems only)."""
        x = x.to(self.dtype)
        bsz = x.shape[0]
        _, j_lm = self._landmark_rows(x)
        j_lm = torch.cat([j_lm, j_lm.new_zeros(bsz, j_lm.shape[1], self.p - j_lm.shape[2])], 2)
        photo = [j for _, j in self._photometric_rows(x, "all", vis)]
        prior = torch.diag_embed(self.prior_weight.to(self.dtype).sqrt().expand(bsz, -1))
        return torch.cat([j_lm, *photo, prior], 1)
