"""Shared helpers of the stn-train training tests: a small real grid model and rendered faces.

The grid model comes from the bfm-prep pipeline on its synthetic face (synth ->
build-expression -> uv-embed -> uv-resample at a small R), built once per test process. Faces
are rendered with stn-core's renderer at random poses, so tests do not depend on the synthetic
dataset's own choices.
"""

from __future__ import annotations

import functools
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

GRID_RES = 32


@functools.cache
def grid_model_file(res: int = GRID_RES) -> Path:
    """A ``stn-uv-grid-model`` .h5 at ``res`` (aflw21 and ibug68 landmarks, colour model)."""
    out = Path(tempfile.mkdtemp(prefix="stn_train_grid_"))

    def prep(*args: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "bfm_prep", *args], check=True, capture_output=True, text=True
        )

    s = out / "synth"
    prep("synth", str(s), "--seed", "0")
    prep(
        "build-expression",
        "--bfm",
        str(s / "01_MorphableModel.mat"),
        "--expression",
        str(s / "Model_Expression.mat"),
        "--mapping",
        str(s / "map_tddfa_to_basel.mat"),
        "--landmarks",
        f"aflw21={s / 'Landmarks21_BFM.anl'}",
        "--landmarks",
        f"ibug68={s / 'Landmarks68_BFM.anl'}",
        "--n-shape",
        "6",
        "--n-exp",
        "4",
        "--out",
        str(out / "model.h5"),
    )
    prep("uv-embed", "--model", str(out / "model.h5"), "--out", str(out / "uv.h5"))
    prep(
        "uv-resample",
        "--model",
        str(out / "model.h5"),
        "--uv",
        str(out / "uv.h5"),
        "--res",
        str(res),
        "--out",
        str(out / f"grid{res}.h5"),
    )
    return out / f"grid{res}.h5"


def load_model(path: Path | None = None):
    from stn_core import UVGridModel

    return UVGridModel.load(path or grid_model_file())


def random_theta(model, n: int, size: int, seed: int, spread: float = 1.0) -> torch.Tensor:
    """Plausible poses: yaw up to 0.5 rad, pitch 0.25, roll 0.15 (times ``spread``), the face
    filling about 70 % of the image, shifted up to 8 %."""
    from stn_core.geometry import initial_log_scale

    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, 6, generator=g, dtype=torch.float64) * 2 - 1
    r = torch.stack([0.25 * u[:, 0], 0.5 * u[:, 1], 0.15 * u[:, 2]], 1) * spread
    t = (size - 1) / 2 + 0.08 * size * u[:, 3:5] * spread
    log_s = initial_log_scale(model.mean, (size, size), fill=0.75, inside=model.inside)
    ls = log_s + 0.1 * u[:, 5:6] * spread
    alpha = 0.7 * spread * torch.randn(n, model.n_components, generator=g, dtype=torch.float64)
    return torch.cat([r, t, ls, alpha], 1).float()


def render_faces(model, n: int, size: int, seed: int, spread: float = 1.0) -> dict:
    """``n`` rendered faces: images (n, 3, S, S) in [0, 1], landmarks (n, 21, 2), visible
    (n, 21), theta (n, 6 + K)."""
    from stn_core.renderer import render
    from stn_core.shading import sh_ambient, sh_directional

    theta = random_theta(model, n, size, seed, spread)
    g = torch.Generator().manual_seed(seed + 1)
    kc = model.color_basis.shape[2]
    beta = 0.5 * torch.randn(n, kc, generator=g)
    colors = (model.color_mean + torch.einsum("nck,bk->bnc", model.color_basis, beta)).clamp(0, 1)
    light = torch.randn(n, 3, generator=g) * 0.4 + torch.tensor([0.0, 0.3, 1.0])
    sh = sh_ambient(0.55, n) + sh_directional(light / light.norm(dim=1, keepdim=True), 0.5)
    background = 0.2 + 0.6 * torch.rand(n, 3, 1, 1, generator=g).expand(n, 3, size, size)
    out = render(model, theta, colors, (size, size), sh=sh, background=background.contiguous())
    from stn_core.geometry import project_theta

    points, _ = project_theta(theta, model.mean, model.basis)
    idx = model.landmarks["aflw21"]
    return {
        "images": out.image,
        "landmarks": points[:, idx],
        "visible": out.vertex_visible[:, idx].float(),
        "theta": theta,
    }


def write_manifest_of_renders(
    folder: Path, model, n: int, size: int, seed: int, subjects: bool = False
) -> Path:
    """Render ``n`` faces to PNG files and a manifest describing them; returns the manifest."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    faces = render_faces(model, n, size, seed)
    lines = []
    for i in range(n):
        a = (faces["images"][i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        name = f"face_{i:04d}.png"
        Image.fromarray(a).save(folder / name)
        lms = [
            [float(x), float(y), int(v)]
            for (x, y), v in zip(
                faces["landmarks"][i].tolist(), faces["visible"][i].tolist(), strict=True
            )
        ]
        line = {"image": name, "landmarks": lms}
        if subjects:
            line["subject"] = f"s{i // 2}"
        lines.append(json.dumps(line))
    manifest = folder / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def small_run_config(**overrides):
    """A RunConfig for a tiny CPU run (small CNN, 64 px), overridable."""
    from stn_train.config import RunConfig

    base = dict(
        model=str(grid_model_file()),
        backbone="small",
        image_size=64,
        batch_size=8,
        workers=0,
        log_every=1,
        checkpoint_every=0,
        val_every=0,
        pictures=2,
        device="cpu",
        lr=1e-3,
        schedule="none",
    )
    base.update(overrides)
    return RunConfig(**base)


def finite(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x)


@functools.cache
def render_manifest(n: int = 16, size: int = 64, seed: int = 0) -> Path:
    """A manifest of ``n`` rendered faces (cached per process)."""
    folder = Path(tempfile.mkdtemp(prefix="stn_train_faces_"))
    return write_manifest_of_renders(folder, load_model(), n, size, seed)


@functools.cache
def tiny_checkpoint() -> Path:
    """``best.pt`` of a short run on rendered faces (cached per process)."""
    from stn_train.train import train

    out = Path(tempfile.mkdtemp(prefix="stn_train_run_")) / "run"
    cfg = small_run_config(
        data=str(render_manifest()),
        val=str(render_manifest(8, 64, 1)),
        out=str(out),
        steps=8,
        augment=False,
    )
    train(cfg)
    return out / "checkpoints" / "best.pt"
