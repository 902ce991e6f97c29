"""``stn-train run``: train the localiser (one process, or many with torchrun)."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from stn_train.cli.app import app, is_main_process, plural, progress_bar
from stn_train.config import resolve_run_config
from stn_train.train import train

_O = typer.Option


@app.command(short_help="Train the localiser (one process, or many with torchrun).")
def run(
    ctx: typer.Context,
    model: Path | None = _O(None, help="UV-grid model (.h5, from bfm-prep uv-resample)."),
    data: Path | None = _O(None, help="Training manifest (.jsonl, docs/data-format.md)."),
    synthetic: int | None = _O(None, help="Train on N faces rendered from the model instead."),
    val: Path | None = _O(None, help="Validation manifest (.jsonl)."),
    val_synthetic: int | None = _O(
        None, help="Validate on N rendered faces (default 64 with --synthetic)."
    ),
    synthetic_margin: float | None = _O(
        None,
        help="Frame the rendered faces like crops around their landmarks with this margin "
        "(as detector and manifest crops: 0.25) instead of by the model's extent.",
    ),
    synthetic_anchor: str | None = _O(
        None,
        help="With --synthetic-margin: centre | top: the landmark box centred (detector and "
        "manifest crops), or its larger side's square aligned with its top (the original's "
        "demo photographs) [centre].",
    ),
    out: Path | None = _O(None, help="Run folder: checkpoints, metrics, pictures."),
    config: Path | None = _O(
        None, help="TOML file whose keys are these options' names (command line wins)."
    ),
    landmarks: str | None = _O(None, help="The model's landmark set of the annotations [aflw21]."),
    backbone: str | None = _O(None, help="vgg16 | resnet18 | resnet50 | small [vgg16]."),
    weights: Path | None = _O(
        None, help="Backbone weights: vgg-face.mat or a state dict (never downloaded)."
    ),
    image_size: int | None = _O(None, help="Network input side, pixels [224]."),
    batch_size: int | None = _O(
        None, help="Images per step, all processes together (pairs: 2 per pair) [64]."
    ),
    epochs: int | None = _O(None, help="Epochs [20] (--steps wins)."),
    steps: int | None = _O(None, help="Optimiser steps (instead of --epochs)."),
    lr: float | None = _O(None, help="Learning rate [1e-4]."),
    optimizer: str | None = _O(None, help="adam | adamw | sgd [adam]."),
    weight_decay: float | None = _O(None, help="Weight decay [0]."),
    momentum: float | None = _O(None, help="SGD momentum (Nesterov) [0.9]."),
    schedule: str | None = _O(None, help="cosine | step | none [cosine]."),
    warmup_steps: int | None = _O(None, help="Linear learning-rate warm-up steps [0]."),
    weight_landmark: float | None = _O(None, help="Landmark loss weight, original's [0.8998]."),
    weight_prior: float | None = _O(None, help="Shape prior weight, original's [0.1]."),
    weight_siamese: float | None = _O(None, help="Siamese loss weight, original's [1e-4]."),
    weight_symmetry: float | None = _O(None, help="Symmetry loss weight, original's [1e-4]."),
    teacher: str | None = _O(
        None,
        help="none | lm: also fit each training image's landmarks (fit_landmarks, cached) "
        "and pull theta towards that fit [none].",
    ),
    weight_teacher: float | None = _O(
        None, help="Teacher loss weight (per px^2, like the landmark term's) [0.9]."
    ),
    teacher_prior: float | None = _O(
        None, help="The teacher fit's prior weight (fit_landmarks' prior_weight) [1]."
    ),
    teacher_shape: float | None = _O(
        None,
        help="Factor of the teacher's shape-only term (the shapes compared without pose) [3].",
    ),
    pairs: bool | None = _O(
        None, "--pairs/--no-pairs", help="Siamese pairs (subject or mirror) [pairs]."
    ),
    augment: bool | None = _O(
        None, "--augment/--no-augment", help="Crop, flip and colour jitter (manifests) [augment]."
    ),
    visibility_mode: str | None = _O(None, help="normals | depth [normals]."),
    bf16: bool | None = _O(None, "--bf16/--no-bf16", help="bfloat16 autocast on CUDA [bf16]."),
    channels_last: bool | None = _O(
        None, "--channels-last/--no-channels-last", help="channels_last on CUDA [on]."
    ),
    clip_grad: float | None = _O(None, help="Clip the gradient norm to this (0: off) [0]."),
    max_bad_steps: int | None = _O(
        None, help="Stop after this many non-finite steps in a row [5]."
    ),
    checkpoint_every: int | None = _O(
        None, help="Write checkpoints/last.pt every N steps (0: every epoch) [500]."
    ),
    val_every: int | None = _O(None, help="Validate and draw every N steps (0: every epoch) [0]."),
    log_every: int | None = _O(None, help="Log training metrics every N steps [10]."),
    pictures: int | None = _O(None, help="Validation images in each picture [4]."),
    resume: bool | None = _O(
        None, "--resume/--no-resume", help="Continue the run in --out from checkpoints/last.pt."
    ),
    seed: int | None = _O(None, help="Seed of the data order, augmentation, init [0]."),
    workers: int | None = _O(None, help="DataLoader worker processes [2]."),
    device: str | None = _O(None, help="cpu | cuda (default: cuda when available)."),
) -> None:
    """Train the localiser (one process, or many with torchrun)."""
    given = {k: v for k, v in ctx.params.items() if v is not None and k != "config"}
    cfg = resolve_run_config(given, config)
    with progress_bar("train") as progress:
        result = train(cfg, explicit=set(given), progress=progress)
    if is_main_process():
        best = (
            f"best validation NME (box) {result.best_metric:.4f}; "
            if math.isfinite(result.best_metric)
            else ""
        )
        typer.echo(
            f"{result.steps} {plural(result.steps, 'step')} in {result.seconds:.0f} s; "
            f"last loss {result.last_loss:.4g}; "
            f"{best}skipped steps {result.skipped_steps}, bad samples {result.bad_samples}."
        )
        d = result.run_dir
        typer.echo(f"checkpoints: {d / 'checkpoints'}   pictures: {d / 'pictures'}")
        typer.echo(f"metrics: {d / 'metrics.jsonl'}   tensorboard --logdir {d / 'tensorboard'}")
