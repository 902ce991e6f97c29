"""Synthetic training faces rendered from the UV-grid model, with exact landmarks and theta.

Each face is the model under a random pose, shape, expression, colour, lighting and background,
rendered by :func:`stn_core.renderer.render_mesh` (z-buffer, Lambertian second-order
spherical-harmonics shading, Gouraud interpolation). What a sample holds (the stn-train
sample contract, ``TRAIN_API.md``):

- ``"image"`` (3, S, S) float32 in [0, 1];
- ``"landmarks"`` (L, 2) float32 pixels (x right, y down, (0, 0) the centre of the top-left
  pixel): the landmark grid vertices projected exactly as ``stn_core.project_theta(theta)``
  projects them (up to float32 rounding);
- ``"visible"`` (L,) float32 0/1: the renderer's ``vertex_visible`` (faces the camera, passes
  the depth test, inside the image);
- ``"subject"`` () int64: ``index // images_per_subject``; by default (1 image per subject)
  every synthetic face is its own subject, so siamese pairs fall back to mirror pairs. With
  ``images_per_subject = k`` the k faces of a subject share identity and colour (pose,
  expression, lighting and background differ), and ``SiamesePairs`` pairs them;
- ``"index"`` () int64; ``"skipped"`` () int64 0 (the manifest datasets' count of bad entries);
- ``"theta"`` (6 + K,) float32, the ground truth ``[r, t, log_s, alpha]``.

Random draws (all uniform unless stated; every range is an argument):

- pose: yaw in +-60 degrees, pitch +-25, roll +-15 (R = R_z(roll) R_y(yaw) R_x(pitch), stored
  as the axis-angle r); the scale is the localiser's start scale
  (:func:`stn_core.geometry.initial_log_scale` with ``fill``: the mean face's box, symmetric
  about the model origin, covers ``fill`` of the image) times exp(+-``scale_jitter``); the
  translation puts the rotated centroid of the mean face where the unrotated one is at the
  start pose (t at the image centre), so a frontal face sits exactly at the localiser's start
  pose and turned faces stay centred like detector crops, then moves it by +-``shift`` of the
  image size;
- framing with ``margin`` (a number instead of None): each face is placed as crops of real
  photographs are cut. The scale makes the face's own landmark box (all of its landmarks,
  hidden ones too, as a detector gives them) have its larger side 1 / (1 + 2 margin) of the
  image, times exp(+-``scale_jitter``); the translation puts at the image centre, moved by
  +-``shift`` of the image size, either the box's centre (``anchor="centre"``:
  :func:`stn_train.data.transforms.crop_window`'s rule, that of detector and manifest crops)
  or the centre of the square of the box's larger side aligned with the box's top
  (``anchor="top"``: how the original 3DMM-STN's demo photographs were cut, their labels'
  box touching the same margin at the top whatever its height). Use it to train for crops;
  the default framing centres the mean face's centroid, which sits where the model's extent
  puts it (a model covering the whole front of the head, like the original's model_112, has
  its landmarks well below its centroid);
- shape: identity and expression coefficients N(0, 1) times ``shape_sigma`` /
  ``expression_sigma``, clipped to +-``clip``;
- colour: with a colour model, its coefficients N(0, 1) times ``color_sigma`` clipped to
  +-``clip``; without one, a skin tone between light and dark with brows, eyes, lips and
  nostrils painted around the landmarks (``"aflw21"`` in the model) on the UV grid, and hair
  (below); then a per-channel skin-tone gain exp(N(0, 0.06));
- hair (models without a colour model only, since their painted skin is this module's own
  stand-in for a face's appearance; a colour model's rendering is left as the model has it;
  the ranges are fixed, in ``_hair``): per subject, with probability 0.88, a hair colour
  (mostly dark), a hairline 25 to 65 mm above the brows (lower towards the temples, none on
  the ears) painted on the scalp, and a hair mass drawn around the upper head's outline (8 to
  30 mm thick, down to 40 to 170 mm below the brows: short to shoulder-long hair), over the
  background only, so the face and its landmarks are never hidden by it. Real photographs
  show hair there; a bald head against the background, the only alternative, is rare in them;
- lighting: ambient in [0.35, 0.75] plus a directional light within 75 degrees of the view
  direction, slightly tinted per channel (:mod:`stn_core.shading`);
- background: smooth random colour gradients and blobs (no external images) and a little pixel
  noise.

Determinism: every random number of item ``i`` comes from ``numpy.random.SeedSequence([seed,
i])`` (identity and colour from ``[seed, subject, 1]``), so an item is the same whatever batch
or loader worker renders it. The geometry is computed so that it is bitwise independent of the
batch (one matrix-vector product per item for the shape, the rotation built in float64 per
item, elementwise arithmetic after that), hence the same pixels are covered and the landmarks
are identical; colour and shading (batched products) may differ in the last float32 bits
between batch compositions (images equal to about 1e-6).

Speed: :meth:`SyntheticFaces.render_batch` renders many faces at once (the DataLoader calls
``__getitems__`` with a whole batch of indices); ``tools/bench_synth.py`` measures it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from stn_core import StnError
from stn_core.geometry import (
    euler_to_matrix,
    initial_log_scale,
    initial_theta,
    matrix_to_axis_angle,
)
from stn_core.grid_model import UVGridModel
from stn_core.renderer import render_mesh
from stn_core.shading import sh_ambient, sh_directional

from stn_train.errors import TrainError

__all__ = ["SyntheticFaces", "synthetic_faces", "VAL_SEED_OFFSET", "ANCHORS"]

# Validation faces are drawn with seed + this offset: a stream disjoint from training's
# (``stn-train run --val-synthetic`` validates on them, ``stn-train eval --synthetic`` too).
VAL_SEED_OFFSET = 1_000_003

# Where a face framed by ``margin`` sits: its landmark box centred, or its top-aligned square.
ANCHORS = ("centre", "top")
# Skin tones (linear RGB albedo) between which a model without colour picks its base colour.
_SKIN_LIGHT = np.array([0.93, 0.76, 0.66])
_SKIN_DARK = np.array([0.42, 0.28, 0.20])
# Pixel noise: a few fixed noise images per dataset, cropped at random offsets.
_NOISE_BANK = 4
_NOISE_PAD = 16
# Background layers: name -> (resolution, upsampling mode).
_BG_RES = 28
_BG_LAYERS = {"corners": (2, "bilinear"), "blobs": (6, "bicubic"), "fine": (_BG_RES, "bilinear")}


class SyntheticFaces(torch.utils.data.Dataset):
    """Faces rendered from a UV-grid model, deterministic per (seed, index).

    Args:
        model: the UV-grid model (``UVGridModel``); a copy is kept on ``device``.
        n: number of faces (the dataset's length).
        image_size: S (square images) or (H, W).
        seed: the dataset's seed; item i's draws come from (seed, i).
        landmarks: the landmark set's name in the model (e.g. ``"aflw21"``) or grid indices.
        yaw, pitch, roll: the largest angle drawn, degrees (uniform in +-that).
        fill: the start pose's fill fraction (:func:`stn_core.geometry.initial_log_scale`).
        margin: None (default): the face framed by the model's extent and centroid; a number
            >= 0: framed like a crop around its landmarks with this margin (module docstring).
        anchor: with ``margin``, ``"centre"`` (the landmark box centred) or ``"top"`` (the
            square of its larger side aligned with its top; module docstring).
        scale_jitter: log-scale drawn in +-this around the start scale.
        shift: translation drawn in +-this fraction of the image size around the centred face.
        shape_sigma, expression_sigma, color_sigma: standard deviations of the coefficients.
        clip: coefficients are clipped to +-this.
        images_per_subject: consecutive items sharing identity and colour (see module doc).
        noise: the largest standard deviation of the pixel noise.
        device: where faces are rendered (outputs stay there).

    Items are sample dicts (module docstring); ``render_batch(indices)`` returns the same,
    batched.
    """

    def __init__(
        self,
        model: UVGridModel,
        n: int,
        image_size: int | Sequence[int] = 224,
        seed: int = 0,
        landmarks: str | Sequence[int] = "aflw21",
        *,
        yaw: float = 60.0,
        pitch: float = 25.0,
        roll: float = 15.0,
        fill: float = 0.9,
        scale_jitter: float = 0.1,
        shift: float = 0.05,
        shape_sigma: float = 1.0,
        expression_sigma: float = 1.0,
        color_sigma: float = 1.0,
        clip: float = 3.0,
        images_per_subject: int = 1,
        noise: float = 0.02,
        margin: float | None = None,
        anchor: str = "centre",
        device: str | torch.device = "cpu",
    ):
        if not isinstance(model, UVGridModel):
            raise TrainError(f"SyntheticFaces needs a UVGridModel, got {type(model).__name__}.")
        if int(n) < 0:
            raise TrainError(f"the number of synthetic faces must be >= 0, got {n}.")
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        if min(self.image_size) < 8:
            raise TrainError(f"image_size must be at least 8 pixels, got {self.image_size}.")
        if int(images_per_subject) < 1:
            raise TrainError(f"images_per_subject must be >= 1, got {images_per_subject}.")
        self.n = int(n)
        self.seed = int(seed)
        self.device = torch.device(device)
        self.model = model.to(self.device, torch.float32)
        try:
            self.landmark_index = self.model.landmark_indices(landmarks)
        except StnError as e:  # the model's own one-sentence message
            raise TrainError(str(e)) from None
        lm = self.landmark_index
        if lm.numel() and not (0 <= int(lm.min()) and int(lm.max()) < self.model.n_vertices):
            raise TrainError(
                f"landmark indices must be grid vertices 0..{self.model.n_vertices - 1}, got "
                f"{int(lm.min())}..{int(lm.max())}."
            )
        self.landmarks = landmarks if isinstance(landmarks, str) else None
        if margin is not None:
            margin = float(margin)
            if not (math.isfinite(margin) and margin >= 0):
                raise TrainError(f"margin must be a finite number >= 0, got {margin}.")
            if lm.numel() < 2:
                raise TrainError("framing by margin needs at least two landmarks to box.")
        if anchor not in ANCHORS:
            raise TrainError(f"anchor must be one of {', '.join(ANCHORS)}, got {anchor!r}.")
        self.margin, self.anchor = margin, anchor
        self.yaw, self.pitch, self.roll = float(yaw), float(pitch), float(roll)
        self.fill = float(fill)
        self.scale_jitter = float(scale_jitter)
        self.shift = float(shift)
        self.shape_sigma = float(shape_sigma)
        self.expression_sigma = float(expression_sigma)
        self.color_sigma = float(color_sigma)
        self.clip = float(clip)
        self.images_per_subject = int(images_per_subject)
        self.noise = float(noise)
        self.subjects = np.arange(self.n, dtype=np.int64) // self.images_per_subject

        m = self.model
        h, w = self.image_size
        self.faces = m.drawn_faces
        self.n_vertices = m.n_vertices
        self.identity = np.array([k == "identity" for k in m.kind], dtype=bool)
        self.log_s0 = initial_log_scale(m.mean, self.image_size, fill=self.fill, inside=m.inside)
        # The point kept centred when the face turns: the centroid of the mean face.
        self.centroid = m.mean[m.inside].double().mean(0).cpu().numpy()
        self.centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
        # The landmark vertices' mean and basis (float64): the crop framing boxes each face's.
        self.landmark_mean = m.mean[self.landmark_index].double().cpu().numpy()
        self.landmark_basis = m.basis[self.landmark_index].double().cpu().numpy()
        # (K, 3N) and (Kc, 3N), the right-hand sides of the coefficient products.
        self.shape_basis = m.basis.reshape(-1, m.n_components).T.contiguous()
        self.color_basis = (
            m.color_basis.reshape(-1, m.color_basis.shape[2]).T.contiguous()
            if m.has_color
            else None
        )
        self.features = None if m.has_color else _feature_maps(m)
        self.hair_field, self.hair_frame = (None, None) if m.has_color else _hair_field(m)
        self.upsample = tuple(
            torch.cat([_upsampling_matrix(r, size, mode) for r, mode in _BG_LAYERS.values()], 1).to(
                self.device
            )
            for size in (h, w)
        )
        g = torch.Generator().manual_seed(self.seed)
        self.noise_bank = torch.randn(
            _NOISE_BANK, 3, h + _NOISE_PAD, w + _NOISE_PAD, generator=g
        ).to(self.device)

    # -----------------------------------------------------------------------------------------
    # Dataset protocol

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        """The items of a batch, rendered together (the DataLoader's batched fetch)."""
        batch = self.render_batch(indices)
        return [{k: v[i] for k, v in batch.items()} for i in range(len(indices))]

    # -----------------------------------------------------------------------------------------
    # drawing and rendering

    def draw(self, index: int) -> dict:
        """Item ``index``'s random parameters (numpy, float64): ``rotation`` (3, 3), ``r``,
        ``t``, ``log_s``, ``alpha`` (K,), ``color`` (Kc,) or None, ``skin`` (3,) the base skin
        tone (no colour model) or None, ``gain`` (3,), ``feature_colors`` (4, 3), ``hair``
        (no colour model: {"color" (3,), "line", "mass", "length"} mm, or None), ``ambient``
        (3,), ``light_dir`` (3,), ``light`` (3,), ``background`` dict, ``noise`` (bank, dy,
        dx, sigma)."""
        index = int(index)
        if not 0 <= index < self.n:
            raise IndexError(f"synthetic face {index} is out of range 0..{self.n - 1}.")
        # Generator(PCG64(...)) is default_rng(...) without its argument checks.
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, index])))
        subject = index // self.images_per_subject
        srng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, subject, 1])))
        h, w = self.image_size
        deg = math.pi / 180.0
        yaw, pitch, roll = rng.uniform(-1, 1, 3) * np.array([self.yaw, self.pitch, self.roll])
        rot = euler_to_matrix(torch.tensor([yaw, pitch, roll], dtype=torch.float64) * deg)
        r = matrix_to_axis_angle(rot).numpy()
        rot = rot.numpy()
        jitter = rng.uniform(-1, 1) * self.scale_jitter
        shift = rng.uniform(-1, 1, 2) * self.shift * np.array([w, h])
        k = self.identity.shape[0]
        ident = np.clip(srng.standard_normal(k) * self.shape_sigma, -self.clip, self.clip)
        expr = np.clip(rng.standard_normal(k) * self.expression_sigma, -self.clip, self.clip)
        alpha = np.where(self.identity, ident, expr)
        if self.margin is None:
            log_s = self.log_s0 + jitter
            s = math.exp(log_s)
            c = self.centroid
            rc = rot @ c
            t = self.centre + s * np.array([c[0] - rc[0], rc[1] - c[1]])
        else:
            # The rotated landmarks' box in mm; image points are s (x, -y) + t.
            lm = (self.landmark_mean + self.landmark_basis @ alpha) @ rot.T
            lo, hi = lm[:, :2].min(0), lm[:, :2].max(0)
            larger = max(float((hi - lo).max()), 1e-6)
            log_s = math.log(min(h, w) / (larger * (1.0 + 2.0 * self.margin))) + jitter
            s = math.exp(log_s)
            mid = (lo + hi) / 2.0
            if self.anchor == "top":  # y up: the square's middle is half its side below the top
                mid[1] = hi[1] - larger / 2.0
            t = self.centre - s * np.array([mid[0], -mid[1]])
        t = t + shift
        color = skin = None
        if self.color_basis is not None:
            kc = self.color_basis.shape[0]
            color = np.clip(srng.standard_normal(kc) * self.color_sigma, -self.clip, self.clip)
        else:
            tone = srng.uniform() ** 1.5  # more light than dark tones
            skin = _SKIN_LIGHT + (_SKIN_DARK - _SKIN_LIGHT) * tone
        gain = np.exp(srng.normal(0.0, 0.04, 3))
        feature_colors = np.stack(
            [
                srng.uniform(0.12, 0.4) * np.array([1.0, 0.78, 0.6]),  # brows
                srng.uniform(0.8, 0.92) * np.ones(3),  # sclera
                _iris(srng),  # iris
                np.array([0.75, 0.38, 0.38]) * srng.uniform(0.75, 1.05),  # lips
            ]
        )
        # Drawn last from the subject's stream, so the draws above are as they were before hair.
        hair = _hair(srng) if self.hair_field is not None else None
        tint = np.exp(rng.normal(0.0, 0.03, 3))
        ambient = rng.uniform(0.35, 0.75) * tint
        theta_l = rng.uniform(0.0, 75.0) * deg
        phi = rng.uniform(0.0, 2.0 * math.pi)
        sin_l = math.sin(theta_l)
        light_dir = np.array([sin_l * math.cos(phi), sin_l * math.sin(phi), math.cos(theta_l)])
        light = rng.uniform(0.3, 1.0) * (1.3 - ambient.mean()) * tint
        background = {
            "corners": _muted_colors(rng, (2, 2)),
            "blobs": _blobs(rng, (6, 6), rng.uniform(0.03, 0.2)),
            "fine": _blobs(rng, (_BG_RES, _BG_RES), rng.uniform(0.0, 0.06)),
        }
        noise = (
            int(rng.integers(_NOISE_BANK)),
            int(rng.integers(_NOISE_PAD)),
            int(rng.integers(_NOISE_PAD)),
            rng.uniform(0.0, self.noise),
        )
        return dict(
            rotation=rot,
            r=r,
            t=t,
            log_s=log_s,
            alpha=alpha,
            color=color,
            skin=skin,
            gain=gain,
            feature_colors=feature_colors,
            hair=hair,
            ambient=ambient,
            light_dir=light_dir,
            light=light,
            background=background,
            noise=noise,
        )

    @torch.no_grad()
    def render_batch(self, indices: Sequence[int]) -> dict:
        """Render items ``indices`` together: the sample dict with a batch dimension first."""
        indices = [int(i) for i in indices]
        b = len(indices)
        if b == 0:
            raise TrainError("render_batch needs at least one index.")
        draws = [self.draw(i) for i in indices]
        m = self.model
        dev = self.device
        h, w = self.image_size
        n = self.n_vertices

        def stack(key):
            return torch.as_tensor(
                np.stack([d[key] for d in draws]), dtype=torch.float32, device=dev
            )

        alpha = stack("alpha")
        rot = stack("rotation")  # (B, 3, 3)
        t = stack("t")
        s = torch.exp(stack("log_s"))
        shape = m.mean + _rows_matmul(alpha, self.shape_basis).view(b, n, 3)
        # Rotation written out per coordinate (not a batched matrix product) so that an item's
        # bits do not depend on its batch.
        rotated = (
            shape[..., 0:1] * rot[:, None, :, 0]
            + shape[..., 1:2] * rot[:, None, :, 1]
            + shape[..., 2:3] * rot[:, None, :, 2]
        )
        points = torch.stack(
            [s[:, None] * rotated[..., 0] + t[:, 0:1], -s[:, None] * rotated[..., 1] + t[:, 1:2]],
            -1,
        )
        albedo = self._albedo(draws, b)
        sh = sh_ambient(stack("ambient"))
        sh = sh + sh_directional(stack("light_dir"), stack("light"))
        background = self._background(draws)
        lm = self.landmark_index
        out = render_mesh(
            points,
            rotated,
            self.faces,
            albedo,
            (h, w),
            sh=sh,
            background=background,
            inside=m.inside,
            pixels_per_mm=s,
            visible_for=lm,
        )
        image = out.image
        if self.hair_field is not None:
            image = self._add_hair_mass(image, out.mask, rot, s, t, draws)
        if self.noise > 0:
            image = self._add_noise(image, draws).clamp_(0.0, 1.0)
        theta = initial_theta(b, m.n_components, h, w, device=dev)
        theta[:, 0:3] = stack("r")
        theta[:, 3:5] = t
        theta[:, 5] = stack("log_s")
        theta[:, 6:] = alpha
        index = torch.tensor(indices, dtype=torch.int64, device=dev)
        return {
            "image": image,
            "landmarks": points[:, lm].contiguous(),
            "visible": out.vertex_visible.to(torch.float32),
            "subject": torch.as_tensor(self.subjects[indices], dtype=torch.int64, device=dev),
            "index": index,
            "skipped": torch.zeros(b, dtype=torch.int64, device=dev),
            "theta": theta,
        }

    def backgrounds(self, indices: Sequence[int]) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1]: the backgrounds items ``indices`` are rendered over, alone
        (no face, hair or pixel noise); ``stn-train synthesize --background synthetic``."""
        return self._background([self.draw(int(i)) for i in indices])

    def _albedo(self, draws, b: int) -> torch.Tensor:
        """(B, N, 3) per-vertex albedo in [0, 1]."""
        m = self.model
        n = self.n_vertices
        gain = torch.as_tensor(
            np.stack([d["gain"] for d in draws]), dtype=torch.float32, device=self.device
        )[:, None, :]
        if self.color_basis is not None:
            beta = torch.as_tensor(
                np.stack([d["color"] for d in draws]), dtype=torch.float32, device=self.device
            )
            # A plain batched product: its last bits may depend on the batch, which only
            # changes the shading by a rounding error (the geometry is exact, see above).
            albedo = m.color_mean + (beta @ self.color_basis).view(b, n, 3)
        else:
            skin = torch.as_tensor(
                np.stack([d["skin"] for d in draws]), dtype=torch.float32, device=self.device
            )
            cols = torch.as_tensor(
                np.stack([d["feature_colors"] for d in draws]),
                dtype=torch.float32,
                device=self.device,
            )  # (B, 4, 3)
            weights, shade = self.features  # (4, N), (N,)
            base = skin[:, None, :] * shade[None, :, None]
            # Blend each feature's colour in turn by its weight (later features on top).
            albedo = base
            for k in range(weights.shape[0]):
                wk = weights[k][None, :, None]
                albedo = albedo + wk * (cols[:, k, None, :] - albedo)
            if self.hair_field is not None:
                albedo = self._scalp(albedo, draws)
        return (albedo * gain).clamp_(0.0, 1.0)

    def _hair_params(self, draws, key: str) -> torch.Tensor:
        """(B, ...) one hair parameter per item (a subject without hair: line inf, mass 0)."""
        none = {"color": np.zeros(3), "line": np.inf, "mass": 0.0, "length": 0.0}
        values = [none[key] if d["hair"] is None else d["hair"][key] for d in draws]
        return torch.as_tensor(np.stack(values), dtype=torch.float32, device=self.device)

    def _scalp(self, albedo: torch.Tensor, draws) -> torch.Tensor:
        """Hair painted where the hair field rises above the subject's hairline (soft edge)."""
        field, grain = self.hair_field  # (N,) mm, (N,) brightness variation
        line = self._hair_params(draws, "line")[:, None]
        color = self._hair_params(draws, "color")[:, None, :]
        wt = ((field[None, :] - line) / _HAIR_EDGE_MM).clamp(0.0, 1.0)
        wt = (wt * wt * (3.0 - 2.0 * wt))[..., None]
        return albedo + wt * (color * grain[None, :, None] - albedo)

    def _add_hair_mass(self, image, mask, rot, s, t, draws) -> torch.Tensor:
        """Hair around the outline of the head above the hair's lower end, over the background
        only: the face's mask dilated by the hair's thickness (pixels), cut by the line through
        the posed point ``length`` mm below the brows, across the face."""
        b, _, h, w = image.shape
        dev = self.device
        mass_px = self._hair_params(draws, "mass") * s  # (B,)
        length = self._hair_params(draws, "length")
        color = self._hair_params(draws, "color")
        x_mid, brow_y, z_ref = self.hair_frame
        # The lower end's point and the face's up direction, posed: image point = s (x, -y) + t.
        end = torch.stack(
            [torch.full_like(length, x_mid), brow_y - length, torch.full_like(length, z_ref)], 1
        )
        end = (rot @ end[:, :, None])[:, :, 0]
        end_px = torch.stack([s * end[:, 0], -s * end[:, 1]], 1) + t
        up = torch.stack([rot[:, 0, 1], -rot[:, 1, 1]], 1)  # R e_y, projected, image y down
        ys = torch.arange(h, device=dev, dtype=torch.float32)[:, None]
        xs = torch.arange(w, device=dev, dtype=torch.float32)[None, :]
        face = mask[:, 0].float()
        alpha = torch.zeros(b, h, w, device=dev)
        for i in range(b):
            r = int(round(float(mass_px[i])))
            if r < 1:
                continue
            # A box blur of the mask reaches r pixels out; where it exceeds a few percent is
            # the mask grown with rounded corners (a square's corner: the product of the two
            # 1-D coverages), its rise a soft edge.
            k = 2 * r + 1
            grown = F.avg_pool2d(face[i][None, None], (k, 1), 1, (r, 0), count_include_pad=False)
            grown = F.avg_pool2d(grown, (1, k), 1, (0, r), count_include_pad=False)[0, 0]
            above = (xs - end_px[i, 0]) * up[i, 0] + (ys - end_px[i, 1]) * up[i, 1] > 0
            alpha[i] = (grown * 25.0).clamp(0.0, 1.0) * above
        alpha = alpha * (1.0 - face)  # never over the face
        light = torch.as_tensor(
            np.stack([d["ambient"].mean() + 0.5 * d["light"].mean() for d in draws]),
            dtype=torch.float32,
            device=dev,
        )
        hair = (color * light[:, None]).clamp(0.0, 1.0)[:, :, None, None]
        return image + alpha[:, None] * (hair - image)

    def _background(self, draws) -> torch.Tensor:
        """(B, 3, H, W) smooth random backgrounds: a bilinear gradient between corner colours,
        bicubic blobs and finer bilinear texture, upsampled together as one matrix product
        ``U_h X U_w^T`` with X block-diagonal (one block per layer)."""
        b = len(draws)
        u_h, u_w = self.upsample
        x = torch.zeros(b, 3, u_h.shape[1], u_w.shape[1], device=self.device)
        at = 0
        for key in _BG_LAYERS:
            layer = torch.as_tensor(
                np.stack([d["background"][key] for d in draws]),
                dtype=torch.float32,
                device=self.device,
            )
            r = layer.shape[-1]
            x[..., at : at + r, at : at + r] = layer
            at += r
        return (u_h @ x @ u_w.T).clamp_(0.0, 1.0)

    def _add_noise(self, image: torch.Tensor, draws) -> torch.Tensor:
        """Add each image's pixel noise in place: a crop of the dataset's fixed noise images,
        scaled (image by image, so no (B, 3, H, W) noise batch is built)."""
        h, w = self.image_size
        for i, (k, dy, dx, sigma) in enumerate(d["noise"] for d in draws):
            image[i].add_(self.noise_bank[k, :, dy : dy + h, dx : dx + w] * float(sigma))
        return image


def _muted_colors(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """(3, *size) colours of random brightness and mostly low saturation, like walls,
    furniture and foliage rather than a paint box."""
    light = rng.uniform(0.08, 0.92, size)
    hue = rng.uniform(0.0, 1.0, (3, *size))
    hue = hue - hue.mean(0)
    return np.clip(light + rng.uniform(0.05, 0.6) * hue, 0.0, 1.0)


def _blobs(rng: np.random.Generator, size: tuple[int, int], amplitude: float) -> np.ndarray:
    """(3, *size) zero-mean variations: mostly brightness, a little colour."""
    light = rng.uniform(-1.0, 1.0, size)
    color = rng.uniform(-1.0, 1.0, (3, *size)) * 0.3
    return amplitude * (light + color)


def _upsampling_matrix(r: int, size: int, mode: str) -> torch.Tensor:
    """(size, r): ``matrix @ x`` upsamples a length-r signal like ``F.interpolate`` (corners
    aligned for the 2-sample gradient, pixel centres aligned otherwise)."""
    eye = torch.eye(r, dtype=torch.float64)[:, None, :, None].expand(r, 1, r, 2)
    align = True if r == 2 else False
    out = F.interpolate(eye, size=(size, 2), mode=mode, align_corners=align)
    return out[:, 0, :, 0].T.to(torch.float32).contiguous()


def _rows_matmul(coeffs: torch.Tensor, basis_t: torch.Tensor) -> torch.Tensor:
    """``coeffs @ basis_t`` (B, M), one (1, K) x (K, M) product per row: BLAS computes a
    matrix product's rows differently depending on how many there are, but one row alone
    always the same way (whatever the thread count), so each face's shape has the same bits
    whatever else is in its batch."""
    b, k = coeffs.shape
    if k == 0:
        return torch.zeros(b, basis_t.shape[1], dtype=coeffs.dtype, device=coeffs.device)
    return torch.cat([row @ basis_t for row in coeffs.split(1)])


# Hair colours (albedo) and how often a subject has each; a subject has hair with _HAIR_P.
_HAIR_COLORS = (
    (0.25, (0.05, 0.04, 0.035)),  # black
    (0.30, (0.14, 0.09, 0.06)),  # dark brown
    (0.20, (0.30, 0.20, 0.12)),  # brown
    (0.13, (0.62, 0.50, 0.32)),  # blond
    (0.12, (0.55, 0.55, 0.55)),  # grey
)
_HAIR_P = 0.88
_HAIR_EDGE_MM = 6.0  # the hairline's soft edge


def _hair(rng: np.random.Generator) -> dict | None:
    """A subject's hair: None (bald or shaven), or its colour, hairline above the brows,
    thickness beyond the outline and lower end below the brows (mm)."""
    if rng.uniform() >= _HAIR_P:
        return None
    p = np.array([q for q, _ in _HAIR_COLORS])
    kind = int(np.searchsorted(np.cumsum(p), rng.uniform() * p.sum()))
    color = np.array(_HAIR_COLORS[min(kind, len(p) - 1)][1]) * rng.uniform(0.75, 1.25)
    return {
        "color": np.clip(color, 0.0, 1.0),
        "line": rng.uniform(25.0, 65.0),
        "mass": rng.uniform(8.0, 30.0),
        "length": rng.uniform(40.0, 170.0),
    }


def _hair_field(model: UVGridModel):
    """Where hair grows on a model without colour, from its mean shape (mm) and AFLW-21
    landmarks: ``((field (N,), grain (N,)), (x_mid, brow_y, z_ref))`` or ``(None, None)``
    without ``"aflw21"`` landmarks.

    ``field``: height above the brows (mm), raised by 2.4 mm per mm beyond the outer eye
    corners (so hair comes down the temples and the sides of the head to about the ears' top
    for a hairline 50 mm above the brows), and -inf within 28 mm of a point 18 mm above each
    ear landmark (ears stay bare); a subject has hair where ``field`` exceeds its hairline.
    ``grain``: a fixed per-vertex brightness variation (0.85 to 1.15). ``x_mid``, ``brow_y``:
    the landmarks' middle and the brows' height; ``z_ref``: the ears' depth (where the hair
    mass's lower end is placed).
    """
    if "aflw21" not in model.landmarks:
        return None, None
    dev = model.device
    v = model.mean.double().cpu().numpy()
    lm = v[model.landmarks["aflw21"].cpu().numpy()]
    brow_y = float(lm[0:6, 1].mean())
    x_mid = float(lm[:, 0].mean())
    eye_half = float(np.abs(lm[[6, 11], 0] - x_mid).mean())
    field = v[:, 1] - brow_y + 2.4 * np.maximum(np.abs(v[:, 0] - x_mid) - eye_half, 0.0)
    for k in (12, 16):
        ear = lm[k] + np.array([0.0, 18.0, 0.0])
        field[np.linalg.norm(v - ear, axis=1) < 28.0] = -np.inf
    grain = np.random.default_rng(0).uniform(0.85, 1.15, len(v))
    as_t = lambda a: torch.as_tensor(a, dtype=torch.float32, device=dev)  # noqa: E731
    return (as_t(field), as_t(grain)), (x_mid, brow_y, float(lm[[12, 16], 2].mean()))


def _iris(rng: np.random.Generator) -> np.ndarray:
    """A random iris colour: mostly browns, some hazel, blue and grey."""
    kind = rng.uniform()
    if kind < 0.6:
        return np.array([0.30, 0.18, 0.10]) * rng.uniform(0.5, 1.2)
    if kind < 0.8:
        return np.array([0.40, 0.35, 0.18]) * rng.uniform(0.7, 1.1)
    if kind < 0.93:
        return np.array([0.25, 0.40, 0.60]) * rng.uniform(0.7, 1.1)
    return np.array([0.45, 0.48, 0.50]) * rng.uniform(0.7, 1.1)


def _feature_maps(model: UVGridModel) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Where to paint brows, sclera, iris and lips on a model without colour, from its AFLW-21
    landmarks on the UV grid: ``(weights (4, N), shade (N,))`` in [0, 1] (``shade`` darkens
    nostrils), or plain skin when the model has no ``"aflw21"`` landmarks."""
    n = model.n_vertices
    dev = model.device
    if "aflw21" not in model.landmarks:
        return torch.zeros(4, n, device=dev), torch.ones(n, device=dev)
    uv = model.uv.double().cpu().numpy()
    lm = uv[model.landmarks["aflw21"].cpu().numpy()]
    # Typical feature sizes relative to the distance between the outer eye corners.
    eye_span = np.linalg.norm(lm[11] - lm[6])
    unit = eye_span / 90.0  # about one millimetre in UV units

    def smooth(d, width):
        """1 inside (d < 0), 0 beyond ``width``, smooth in between."""
        x = np.clip(1.0 - d / width, 0.0, 1.0)
        return x * x * (3.0 - 2.0 * x)

    def seg_dist(p, a, b):
        ab = b - a
        tt = np.clip(((p - a) @ ab) / max(ab @ ab, 1e-12), 0.0, 1.0)
        return np.linalg.norm(p - (a + tt[:, None] * ab), axis=1)

    def ellipse(p, centre, a_vec, b_len):
        """Signed-ish distance to an ellipse with semi-axis a_vec (2,) and minor semi-axis."""
        a_len = np.linalg.norm(a_vec)
        ax = a_vec / max(a_len, 1e-12)
        q = p - centre
        u = q @ ax
        v = q @ np.array([-ax[1], ax[0]])
        r = np.sqrt((u / a_len) ** 2 + (v / b_len) ** 2)
        return (r - 1.0) * b_len

    brow = np.zeros(len(uv))
    for a, b_, c in ((0, 1, 2), (3, 4, 5)):
        d = np.minimum(seg_dist(uv, lm[a], lm[b_]), seg_dist(uv, lm[b_], lm[c]))
        brow = np.maximum(brow, 0.75 * smooth(d - 2.0 * unit, 2.0 * unit))
    sclera = np.zeros(len(uv))
    iris = np.zeros(len(uv))
    for a, b_ in ((6, 8), (9, 11)):  # eye corners
        half = (lm[b_] - lm[a]) / 2.0
        centre = (lm[a] + lm[b_]) / 2.0
        e = ellipse(uv, centre, half, 0.38 * np.linalg.norm(half))
        sclera = np.maximum(sclera, smooth(e, 1.0 * unit))
        r_iris = 0.42 * np.linalg.norm(half)
        iris = np.maximum(iris, smooth(np.linalg.norm(uv - centre, axis=1) - r_iris, unit) * sclera)
    half = (lm[19] - lm[17]) / 2.0
    centre = lm[18]
    lips = 0.8 * smooth(ellipse(uv, centre, half * 1.05, 0.42 * np.linalg.norm(half)), 1.5 * unit)
    nostrils = np.zeros(len(uv))
    for k in (13, 15):
        p = lm[k] + (lm[14] - lm[k]) * 0.25
        nostrils = np.maximum(
            nostrils, smooth(np.linalg.norm(uv - p, axis=1) - 2.0 * unit, 2.0 * unit)
        )
    weights = np.stack([brow, sclera, iris, lips])
    shade = 1.0 - 0.55 * nostrils
    as_t = lambda a: torch.as_tensor(a, dtype=torch.float32, device=dev)  # noqa: E731
    return as_t(weights), as_t(shade)


def synthetic_faces(
    model,
    n: int,
    image_size: int,
    seed: int,
    landmarks: str,
    margin: float | None = None,
    anchor: str = "centre",
) -> SyntheticFaces:
    """``n`` rendered faces of ``image_size`` on a CPU copy of the model (they are rendered in
    the DataLoader's worker processes), framed by the model (``margin`` None) or like crops
    around their landmarks (``margin``, ``anchor``, see :class:`SyntheticFaces`)."""
    return SyntheticFaces(
        model.to("cpu"),
        n,
        image_size,
        seed=seed,
        landmarks=landmarks,
        margin=margin,
        anchor=anchor,
    )
