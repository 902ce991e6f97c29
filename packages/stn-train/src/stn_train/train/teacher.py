"""The landmark teacher (``--teacher lm``): theta fitted to each training image's own
landmarks by :func:`stn_core.fitting.fit_landmarks`, used as an extra target.

Beyond the paper, and no ground truth: the teacher sees exactly what the landmark loss sees
(the image's annotated landmarks and their visibility), so it works the same on a real
landmark dataset as on rendered faces. What it adds is the solution of the per-image fit: the
2D landmark loss alone leaves pose and shape entangled (a network can lower it by explaining
a turned head with a wider face), while the fit, with the model's prior, resolves that per
image (``fit_landmarks`` reaches about 1 degree and 2 mm on exact landmarks of rendered
faces, where the network trained by the landmark loss alone stays near 11 degrees after the
demo's 400 steps; docs/benchmarks.md).

Cache: each training view is fitted once, when a batch first holds it, and its theta kept
with the landmarks it was fitted to, keyed by the dataset index. A later view of the same
index whose visible landmarks are those, up to a uniform scale and a shift (the crop jitter
of ``--augment``, which only moves and scales the crop window), reuses the fit: for landmarks
``a q + b`` the fit is theta with ``t -> a t + b`` and ``log_s -> log_s + log a`` (the fit
does not depend on where the face is in the image nor on its size: its landmark term is
measured in model millimetres). Any other view (a mirrored one, another annotation) is fitted
and kept beside it (at most :data:`MAX_VIEWS` per index). The cache travels in the run's
checkpoints (``"teacher"``), merged over the processes, so a resumed run fits nothing twice.

The loss (:func:`teacher_loss`) compares the two thetas where it matters: the mean squared
distance, in pixels and in 3D (the depth too), between the model's vertices placed by the
network's theta and by the teacher's, over a fixed spread of the face's vertices. Being a
distance between faces, it needs no per-parameter weights and no care for the axis-angle's
wrap-around, and it is in the landmark term's units (pixels squared), weighted the same way
(:meth:`stn_train.train.losses.LossWeights.multipliers`). A second term compares the shapes
alone (``RunConfig.teacher_shape``, default 3; :func:`teacher_loss`), so that the shape is not
learned only after the pose.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from stn_core import project_theta
from stn_core.fitting import fit_landmarks

__all__ = ["LandmarkTeacher", "MAX_VIEWS", "teacher_vertices", "teacher_loss", "TEACHERS"]

TEACHERS = ("none", "lm")
MAX_VIEWS = 4  # cached fits per dataset index (plain, mirrored, other annotations)
_MATCH_TOL = 1e-3  # rms landmark mismatch after scale + shift, relative to the face's spread
_LOSS_VERTICES = 512  # the spread of vertices the teacher loss compares


class LandmarkTeacher:
    """Per-view fits of the training images' landmarks, cached (module docstring).

    Args:
        model: the UV-grid model (``UVGridModel``).
        landmarks: the model's landmark set of the annotations (e.g. ``"aflw21"``).
        image_size: S, the side of the training images (pixels).
        prior_weight: ``fit_landmarks``' prior weight (mm^2 per unit |alpha|^2).
    """

    def __init__(self, model, landmarks: str, image_size: int, prior_weight: float = 1.0):
        # The fits run on the CPU in float64: a CPU copy, made once, not once per batch.
        self.model = model.to("cpu")
        self.landmarks = landmarks
        self.image_size = int(image_size)
        self.prior_weight = float(prior_weight)
        # index -> list of (points (L, 2) float64, visible (L,) bool, theta (P,) float64)
        self.views: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        self.fitted = 0  # views fitted by this process (not restored from a checkpoint)
        self.reused = 0  # views served from the cache

    def __len__(self) -> int:
        return sum(len(v) for v in self.views.values())

    def targets(
        self, index: torch.Tensor, points: torch.Tensor, visible: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's theta for a batch: (B, P) float32 and (B,) bool (False where the
        image has fewer than 2 visible landmarks: no target), on the points' device.

        Args:
            index: (B,) dataset indices. points: (B, L, 2) landmarks, pixels. visible: (B, L).
        """
        idx = index.detach().cpu().long().tolist()
        q = points.detach().cpu().double().numpy()
        v = visible.detach().cpu().numpy() > 0
        n_params = int(self.model.n_params)
        theta = np.zeros((len(idx), n_params))
        ok = np.zeros(len(idx), dtype=bool)
        missing = []
        for b, i in enumerate(idx):
            if v[b].sum() < 2:  # nothing to fit: no target
                continue
            found = self._lookup(i, q[b], v[b])
            if found is None:
                missing.append(b)
            else:
                theta[b], ok[b] = found, True
                self.reused += 1
        if missing:
            fit = fit_landmarks(
                self.model,
                torch.from_numpy(q[missing]),
                torch.from_numpy(v[missing].astype(np.float64)),
                self.landmarks,
                prior_weight=self.prior_weight,
                image_size=(self.image_size, self.image_size),
            )
            fitted = fit.theta.double().numpy()
            for j, b in enumerate(missing):
                if fit.status[j] == "skipped":
                    continue
                theta[b], ok[b] = fitted[j], True
                self._store(idx[b], q[b], v[b], fitted[j])
                self.fitted += 1
        dev = points.device
        return (
            torch.from_numpy(theta).to(device=dev, dtype=torch.float32),
            torch.from_numpy(ok).to(dev),
        )

    def _lookup(self, i: int, q: np.ndarray, v: np.ndarray) -> np.ndarray | None:
        for cq, cv, ctheta in self.views.get(i, ()):
            if not np.array_equal(cv, v):
                continue
            a, b = _scale_shift(cq[v], q[v])
            if a is None:
                continue
            out = ctheta.copy()
            out[3:5] = a * ctheta[3:5] + b
            out[5] = ctheta[5] + math.log(a)
            return out
        return None

    def _store(self, i: int, q: np.ndarray, v: np.ndarray, theta: np.ndarray) -> None:
        views = self.views.setdefault(i, [])
        if len(views) >= MAX_VIEWS:
            views.pop(0)
        views.append((q.copy(), v.copy(), theta.copy()))

    # ---------------------------------------------------------------------------------------
    # checkpoints

    def state_dict(self) -> dict:
        """The cache as tensors (for a checkpoint): index (M,), points (M, L, 2), visible
        (M, L), theta (M, P), and the settings the fits depend on."""
        rows = [(i, *view) for i, views in self.views.items() for view in views]
        n_lm = int(self.model.landmark_indices(self.landmarks).numel())
        n_params = int(self.model.n_params)
        return {
            "landmarks": self.landmarks,
            "image_size": self.image_size,
            "prior_weight": self.prior_weight,
            "index": torch.tensor([r[0] for r in rows], dtype=torch.int64),
            "points": torch.from_numpy(np.stack([r[1] for r in rows]))
            if rows
            else torch.zeros(0, n_lm, 2, dtype=torch.float64),
            "visible": torch.from_numpy(np.stack([r[2] for r in rows]))
            if rows
            else torch.zeros(0, n_lm, dtype=torch.bool),
            "theta": torch.from_numpy(np.stack([r[3] for r in rows]))
            if rows
            else torch.zeros(0, n_params, dtype=torch.float64),
        }

    def load_state_dict(self, *states: dict) -> None:
        """Add the views of one or more :meth:`state_dict` (those of several processes);
        a state fitted with other settings is ignored (its fits would differ)."""
        for state in states:
            same = (
                state.get("landmarks") == self.landmarks
                and int(state.get("image_size", -1)) == self.image_size
                and float(state.get("prior_weight", math.nan)) == self.prior_weight
            )
            if not same:
                continue
            for i, q, v, th in zip(
                state["index"].tolist(),
                state["points"].numpy(),
                state["visible"].numpy(),
                state["theta"].numpy(),
                strict=True,
            ):
                if self._lookup(int(i), q, v) is None:
                    self._store(int(i), q, v, th)


def _scale_shift(source: np.ndarray, target: np.ndarray) -> tuple[float | None, np.ndarray]:
    """(a, b) with ``a * source + b == target`` (a > 0) to within the match tolerance, or
    (None, _) when no uniform scale and shift maps one set onto the other."""
    sc = source - source.mean(0)
    tc = target - target.mean(0)
    spread = float((sc * sc).sum())
    if spread <= 0:
        return None, np.zeros(2)
    a = float((sc * tc).sum()) / spread
    if a <= 0:
        return None, np.zeros(2)
    rms = math.sqrt(float(((a * sc - tc) ** 2).sum()) / len(source))
    if rms > _MATCH_TOL * math.sqrt(float((tc * tc).sum()) / len(source)):
        return None, np.zeros(2)
    return a, target.mean(0) - a * source.mean(0)


def teacher_vertices(model, n: int = _LOSS_VERTICES) -> torch.Tensor:
    """(V,) long grid indices: ``n`` vertices spread evenly over the face (the model's
    ``inside`` vertices, every k-th in grid order), the points :func:`teacher_loss`
    compares."""
    inside = getattr(model, "inside", None)
    if inside is None:
        candidates = torch.arange(model.mean.shape[0])
    else:
        candidates = torch.nonzero(torch.as_tensor(inside).reshape(-1)).flatten()
    step = max(1, len(candidates) // n)
    return candidates[::step].cpu()


def _placed(theta: torch.Tensor, mean: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """(B, V, 3) vertices placed by theta: the image points (pixels) of the grid generator
    and their depth, scaled to pixels like them."""
    points, rotated = project_theta(theta, mean, basis)
    depth = torch.exp(theta[:, 5])[:, None] * rotated[..., 2]
    return torch.cat([points, depth[..., None]], -1)


def teacher_loss(
    theta: torch.Tensor,
    target: torch.Tensor,
    have: torch.Tensor,
    mean: torch.Tensor,
    basis: torch.Tensor,
    shape_weight: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean squared 3D distance (px^2) between the vertices placed by ``theta`` and by the
    teacher's ``target``, over the images that have a target, plus ``shape_weight`` times the
    squared distance between the two shapes alone.

    The shape term compares the shapes in the model's frame (no rotation, no translation),
    drawn at the teacher's scale (mm times the teacher's pixels per mm, so pixels like the
    first term): ``|s_t B (alpha - alpha_t)|^2`` averaged over the vertices. In the placed
    vertices a shape error of a few millimetres is a pixel or two beside pose errors of many
    pixels, so the shape learns last; this term gives it a gradient of its own from the first
    step (docs/training.md, ``--teacher-shape``).

    Args:
        theta: (B, P) the network's output. target: (B, P) the teacher's (no gradient).
        have: (B,) bool, images with a target. mean: (V, 3) mm and basis (V, 3, K) of the
            compared vertices (:func:`teacher_vertices`).
        shape_weight: the shape term's factor (0: the placed vertices only).

    Returns:
        (mean over images with a target, their count): the mean is 0 when none has one.
    """
    w = have.to(theta.dtype)
    pred = _placed(theta, mean.to(theta.dtype), basis.to(theta.dtype))
    with torch.no_grad():
        goal = _placed(target.to(theta.dtype), mean.to(theta.dtype), basis.to(theta.dtype))
    per_image = ((pred - goal) ** 2).sum(-1).mean(-1)
    if shape_weight:
        delta = theta[:, 6:] - target[:, 6:].to(theta.dtype)
        mm = torch.einsum("vck,bk->bvc", basis.to(theta.dtype), delta)
        px = torch.exp(target[:, 5].to(theta.dtype))[:, None, None] * mm
        per_image = per_image + shape_weight * (px**2).sum(-1).mean(-1)
    per_image = torch.where(have, per_image, torch.zeros_like(per_image))
    count = w.sum()
    return per_image.sum() / count.clamp_min(1.0), count
