"""Thin command-line front of stn-train: a command parses, calls one library function, reports.

Errors a user can cause (:class:`stn_train.errors.TrainError`, and stn-core's
:class:`stn_core.StnError` for unreadable model files) print one line on stderr and exit with
status 2, without a traceback.

    stn-train run --model grid.h5 --synthetic 2000 --out runs/a --backbone small --steps 2000
    torchrun --nproc-per-node 4 -m stn_train run --model grid.h5 --data train.jsonl --out runs/b
    stn-train eval --checkpoint runs/a/checkpoints/best.pt --model grid.h5 --synthetic 200 \
        --out runs/a/eval
    stn-train predict faces/*.jpg --checkpoint runs/a/checkpoints/best.pt --model grid.h5 --out pred
    stn-train fit faces/*.jpg --model grid.h5 --landmarks faces/ --out fits
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import typer
from stn_core import StnError

from stn_train.errors import TrainError

app = typer.Typer(
    name="stn-train",
    help="Train, evaluate and apply the 3DMM-STN localiser.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_O = typer.Option


@app.command()
def version() -> None:
    """Print the stn-train and stn-core versions."""
    import stn_core

    import stn_train

    typer.echo(f"stn-train {stn_train.__version__} (stn-core {stn_core.__version__})")


@app.command()
def run(
    ctx: typer.Context,
    model: Path | None = _O(None, help="UV-grid model (.h5, from bfm-prep uv-resample)."),
    data: Path | None = _O(None, help="Training manifest (.jsonl, docs/data-format.md)."),
    synthetic: int | None = _O(None, help="Train on N faces rendered from the model instead."),
    val: Path | None = _O(None, help="Validation manifest (.jsonl)."),
    val_synthetic: int | None = _O(
        None, help="Validate on N rendered faces (default 64 with --synthetic)."
    ),
    out: Path | None = _O(None, help="Run folder: checkpoints, metrics, pictures."),
    config: Path | None = _O(
        None, help="TOML file whose keys are these options' names (command line wins)."
    ),
    landmarks: str | None = _O(
        None, help="The model's landmark set of the annotations \\[aflw21]."
    ),
    backbone: str | None = _O(None, help="vgg16 | resnet18 | resnet50 | small \\[vgg16]."),
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
    optimizer: str | None = _O(None, help="adam | adamw | sgd \\[adam]."),
    weight_decay: float | None = _O(None, help="Weight decay [0]."),
    momentum: float | None = _O(None, help="SGD momentum (Nesterov) [0.9]."),
    schedule: str | None = _O(None, help="cosine | step | none \\[cosine]."),
    warmup_steps: int | None = _O(None, help="Linear learning-rate warm-up steps [0]."),
    weight_landmark: float | None = _O(None, help="Landmark loss weight, original's [0.8998]."),
    weight_prior: float | None = _O(None, help="Shape prior weight, original's [0.1]."),
    weight_siamese: float | None = _O(None, help="Siamese loss weight, original's [1e-4]."),
    weight_symmetry: float | None = _O(None, help="Symmetry loss weight, original's [1e-4]."),
    pairs: bool | None = _O(
        None, "--pairs/--no-pairs", help="Siamese pairs (subject or mirror) \\[pairs]."
    ),
    augment: bool | None = _O(
        None, "--augment/--no-augment", help="Crop, flip and colour jitter (manifests) \\[augment]."
    ),
    visibility_mode: str | None = _O(None, help="normals | depth \\[normals]."),
    bf16: bool | None = _O(None, "--bf16/--no-bf16", help="bfloat16 autocast on CUDA \\[bf16]."),
    channels_last: bool | None = _O(
        None, "--channels-last/--no-channels-last", help="channels_last on CUDA \\[on]."
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
    from stn_train.config import resolve_run_config
    from stn_train.train import train

    given = {k: v for k, v in ctx.params.items() if v is not None and k != "config"}
    cfg = resolve_run_config(given, config)
    result = train(cfg, explicit=set(given), progress=True)
    if result.run_dir is not None and _is_main():
        best = (
            f"best validation NME (box) {result.best_metric:.4f}; "
            if math.isfinite(result.best_metric)
            else ""
        )
        typer.echo(
            f"{result.steps} {_plural(result.steps, 'step')} in {result.seconds:.0f} s; "
            f"last loss {result.last_loss:.4g}; "
            f"{best}skipped steps {result.skipped_steps}, bad samples {result.bad_samples}."
        )
        d = result.run_dir
        typer.echo(f"checkpoints: {d / 'checkpoints'}   pictures: {d / 'pictures'}")
        typer.echo(f"metrics: {d / 'metrics.jsonl'}   tensorboard --logdir {d / 'tensorboard'}")


@app.command("eval")
def eval_(
    checkpoint: Path = _O(..., help="checkpoints/best.pt or last.pt of a run."),
    model: Path = _O(..., help="The grid model it was trained with."),
    out: Path = _O(..., help="Folder for eval.json, per_image.csv, per_landmark.csv, ced.png."),
    data: Path | None = _O(None, help="Manifest (.jsonl) to evaluate on."),
    synthetic: int | None = _O(None, help="Evaluate on N rendered faces instead."),
    seed: int | None = _O(
        None, help="Seed of the rendered faces (default: the run's validation faces)."
    ),
    landmarks: str | None = _O(None, help="Landmark set (default: the checkpoint's)."),
    batch_size: int = _O(32, help="Images per batch."),
    device: str | None = _O(None, help="cpu | cuda."),
    workers: int = _O(0, help="DataLoader worker processes."),
) -> None:
    """Landmark NME, per-landmark errors, CED; pose and shape errors on rendered faces."""
    from stn_train.evaluate import evaluate

    result = evaluate(
        checkpoint,
        model,
        out,
        data=data,
        synthetic=synthetic,
        batch_size=batch_size,
        seed=seed,
        landmarks=landmarks,
        device=device,
        workers=workers,
    )
    s = result.summary
    line = (
        f"{s['images']} images: NME box {s['nme_box']:.4f}, inter-ocular "
        f"{s['nme_interocular']:.4f}, mean error {s['mean_error_px']:.2f} px"
    )
    if "pose_error_deg" in s:
        line += f", pose {s['pose_error_deg']:.2f} deg, shape {s['shape_error_mm']:.2f} mm"
    typer.echo(line)
    typer.echo(f"wrote {result.out_dir}/eval.json, per_image.csv, per_landmark.csv, ced.png")


@app.command()
def predict(
    images: list[Path] = typer.Argument(..., help="Face images (cropped around the face)."),
    checkpoint: Path = _O(..., help="checkpoints/best.pt or last.pt of a run."),
    model: Path = _O(..., help="The grid model it was trained with."),
    out: Path = _O(..., help="Output folder."),
    batch_size: int = _O(16, help="Images per batch."),
    average_by_subject: bool = _O(
        False, help="Also write each subject's (parent folder's) mean flattened face."
    ),
    device: str | None = _O(None, help="cpu | cuda."),
) -> None:
    """theta JSON, flattened face and mask PNGs, textured OBJ mesh, per image."""
    from stn_train.predict import predict as run_predict

    result = run_predict(
        images,
        checkpoint,
        model,
        out,
        batch_size=batch_size,
        average_by_subject=average_by_subject,
        device=device,
        progress=True,
    )
    n = result.n_images
    skipped = f" ({len(result.skipped)} skipped)" if result.skipped else ""
    typer.echo(f"{n} {_plural(n, 'image')}{skipped} -> {result.out_dir}")
    if result.subjects:
        k = len(result.subjects)
        typer.echo(f"{k} subject {_plural(k, 'mean')} in {result.out_dir / 'subjects'}")
    for image, reason in result.skipped:
        print(f"stn-train: skipped {image}: {' '.join(reason.split())}.", file=sys.stderr)


def _plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"


def _register_fit() -> None:
    """``stn-train fit`` (per-image model fitting) lives in its own module."""
    from stn_train.fit_command import register

    register(app)


_register_fit()


def _is_main() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def main(argv: list[str] | None = None) -> None:
    """Console entry point ``stn-train``."""
    try:
        app(args=argv, prog_name="stn-train")
    except (TrainError, StnError) as e:
        _fail(str(e))
    except UnicodeDecodeError as e:
        _fail(
            f"a file that should be text is not UTF-8 text ({e.reason} at byte {e.start}); "
            "check that each file argument is the kind of file its option asks for."
        )
    except (
        PermissionError,
        FileNotFoundError,
        FileExistsError,
        NotADirectoryError,
        IsADirectoryError,
    ) as e:
        _fail(_os_error_message(e))
    except OSError as e:
        if e.errno is None or (e.filename is None and e.strerror is None):
            raise  # not about a file the user named: a genuine bug, keep the traceback
        _fail(_os_error_message(e))


def _fail(message: str) -> None:
    print(f"stn-train: error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(2)


def _os_error_message(e: OSError) -> str:
    """One sentence for an operating-system error on a file: which file, what, what to do."""
    what = e.strerror or type(e).__name__
    where = e.filename if e.filename is not None else "a file"
    if e.filename2 is not None:
        where = f"{where} -> {e.filename2}"
    return f"{where}: {what}; check the path and its permissions, or choose another."
