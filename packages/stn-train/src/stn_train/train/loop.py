"""The training loop of ``stn-train run`` (one process, or one of many under torchrun).

Per step: the localiser regresses theta from a batch of images (bf16 autocast on CUDA), the
STN (:class:`stn_core.STN`) turns theta into landmarks, flattened faces and visibility, and
the objective (:mod:`stn_train.train.losses`) combines stn-core's four losses. A step whose
loss or gradient is not finite is skipped on every process; several in a row stop the run
with a message. Checkpoints (:mod:`stn_train.train.checkpoint`) are written by rank 0 every
``checkpoint_every`` steps (0: every epoch), at the end, and as ``best.pt`` when the
validation NME improves; ``--resume`` continues from ``last.pt`` exactly: the same batches,
augmentations, RNG states and optimiser state as an uninterrupted run.

Run folder::

    RUN_DIR/config.toml          the settings (readable by --config)
    RUN_DIR/metrics.jsonl        one JSON record per logged step / validation
    RUN_DIR/tensorboard/         TensorBoard event files
    RUN_DIR/checkpoints/         last.pt, best.pt
    RUN_DIR/pictures/            curves.png, epoch_NNN.png (or step_NNNNNNN.png)
    RUN_DIR/summary.json         final figures
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from stn_core import STN, UVGridModel
from stn_core._validate import StnError
from stn_core.geometry import initial_log_scale
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from stn_train.config import RunConfig, merge_for_resume, write_config
from stn_train.errors import TrainError, check_output_folder, make_output_folder
from stn_train.evaluate import evaluate_localiser
from stn_train.localiser import build_localiser
from stn_train.train import inputs
from stn_train.train.checkpoint import (
    check_same_model,
    grid_model_fingerprint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from stn_train.train.distributed import (
    DistContext,
    GlobalBatchSampler,
    epoch_seed,
    init_distributed,
)
from stn_train.train.losses import LossWeights, training_objective
from stn_train.train.metrics import MetricsLog
from stn_train.train.pictures import write_flattening_grid, write_loss_curves

__all__ = ["RunResult", "train", "load_grid_model", "make_optimizer", "make_scheduler"]


@dataclass
class RunResult:
    """What :func:`train` returns (on every process; figures are rank 0's)."""

    run_dir: Path
    steps: int
    epochs_started: int
    last_loss: float
    best_metric: float
    skipped_steps: int
    bad_samples: int
    seconds: float


def load_grid_model(path: str | Path, device: torch.device | str = "cpu") -> UVGridModel:
    """The grid model, stn-core's artifact errors turned into :class:`TrainError`."""
    try:
        return UVGridModel.load(path, device=device)
    except StnError as exc:
        raise TrainError(str(exc)) from None


def make_optimizer(config: RunConfig, params) -> torch.optim.Optimizer:
    """Adam / AdamW / SGD (with Nesterov momentum) at ``config.lr``."""
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        params,
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.momentum > 0,
        weight_decay=config.weight_decay,
    )


def _lr_factor(schedule: str, warmup: int, total: int):
    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if schedule == "cosine":
            span = max(1, total - warmup)
            progress = min(1.0, (step - warmup) / span)
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if schedule == "step":  # x0.1 at half and at three quarters of the run
            return 0.1 ** ((step >= total // 2) + (step >= (3 * total) // 4))
        return 1.0

    return factor


def make_scheduler(config: RunConfig, optimizer, total_steps: int):
    """A per-step LambdaLR: cosine to 0, step (x0.1 at 1/2 and 3/4), or constant; with an
    optional linear warm-up of ``warmup_steps``."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_factor(config.schedule, config.warmup_steps, total_steps)
    )


def _to_device(batch: dict, device: torch.device) -> dict:
    return {
        k: (_to_device(v, device) if isinstance(v, dict) else v.to(device, non_blocking=True))
        if isinstance(v, (dict, torch.Tensor))
        else v
        for k, v in batch.items()
    }


def _join_pairs(batch: dict) -> tuple[dict, int, torch.Tensor | None]:
    """A batch of pairs {"a", "b", "mirrored"} -> one batch (a's then b's), the pair count
    and the mirrored flags."""
    if "a" not in batch:
        return batch, 0, None
    a, b = batch["a"], batch["b"]
    joined = {k: torch.cat([a[k], b[k]]) for k in ("image", "landmarks", "visible")}
    return joined, a["image"].shape[0], batch.get("mirrored")


class _Progress:
    """A rich progress bar on rank 0 (loss and throughput), or nothing."""

    def __init__(self, enabled: bool, total: int, done: int):
        self.enabled = enabled
        if not enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        self.bar.start()
        self.task = self.bar.add_task("train", total=total, completed=done, info="")

    def update(self, step: int, info: str) -> None:
        if self.enabled:
            self.bar.update(self.task, completed=step, info=info)

    def close(self) -> None:
        if self.enabled:
            self.bar.stop()


class _Trainer:
    def __init__(self, config: RunConfig, ctx: DistContext, explicit: set[str], progress: bool):
        self.ctx = ctx
        self.progress_enabled = progress and ctx.is_main
        self.run_dir = Path(config.out) if config.out else None
        self.ckpt = None
        if config.resume:
            if self.run_dir is None:
                raise TrainError("--resume needs --out RUN_DIR, the run to continue.")
            last = self.run_dir / "checkpoints" / "last.pt"
            if not last.is_file():
                raise TrainError(
                    f"--resume: {last} does not exist; drop --resume to start a new run there."
                )
            self.ckpt = load_checkpoint(last)
            config = merge_for_resume(self.ckpt["config"], config, explicit)
        config.validate()
        self.config = config
        self.run_dir = Path(config.out)
        check_output_folder(self.run_dir)
        if self.ckpt is None and (self.run_dir / "checkpoints" / "last.pt").exists():
            raise TrainError(
                f"{self.run_dir} already holds a run; pass --resume to continue it, or choose "
                "another --out."
            )

    # -------------------------------------------------------------------------------------
    def run(self, crash_at_step: int | None = None) -> RunResult:
        cfg, ctx = self.config, self.ctx
        t_start = time.perf_counter()
        device = ctx.device
        on_cuda = device.type == "cuda"
        self.model = load_grid_model(cfg.model, device=device)
        fingerprint = grid_model_fingerprint(self.model)
        if self.ckpt is not None:
            last = self.run_dir / "checkpoints" / "last.pt"
            check_same_model(self.ckpt.get("grid_model", {}), fingerprint, last)
        try:
            self.indices = self.model.landmark_indices(cfg.landmarks)
        except StnError as exc:
            raise TrainError(f"--landmarks: {exc}") from None
        data = inputs.build_data(cfg, self.model)
        if ctx.is_main:
            make_output_folder(self.run_dir)
            (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            write_config(cfg, self.run_dir / "config.toml")

        size = cfg.image_size
        torch.manual_seed(cfg.seed)
        net = build_localiser(
            cfg.backbone,
            self.model.n_params,
            (size, size),
            weights=cfg.weights,
            init_log_s=initial_log_scale(self.model.mean, (size, size), inside=self.model.inside),
        )
        channels_last = cfg.channels_last and on_cuda
        net = net.to(device)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.net = net
        self.stn = STN(self.model, cfg.visibility_mode).to(device)
        optimizer = make_optimizer(cfg, net.parameters())

        items_per_step = cfg.batch_size // (2 if cfg.pairs else 1)  # pairs or images
        if items_per_step % ctx.world_size:
            unit = f" ({items_per_step} pairs)" if cfg.pairs else ""
            raise TrainError(
                f"--batch-size {cfg.batch_size}{unit} cannot be split evenly over "
                f"{ctx.world_size} processes; pick a multiple of "
                f"{ctx.world_size * (2 if cfg.pairs else 1)}."
            )
        sampler = GlobalBatchSampler(data.train, items_per_step, ctx.rank, ctx.world_size, cfg.seed)
        steps_per_epoch = sampler.steps_per_epoch
        total_steps = cfg.steps if cfg.steps is not None else cfg.epochs * steps_per_epoch
        scheduler = make_scheduler(cfg, optimizer, total_steps)

        step, epoch, batch_in_epoch = 0, 0, 0
        best, best_step = math.inf, -1
        counters = {"skipped_steps": 0, "bad_samples": 0}
        if self.ckpt is not None:
            net.load_state_dict(self.ckpt["localiser"])
            optimizer.load_state_dict(self.ckpt["optimizer"])
            scheduler.load_state_dict(self.ckpt["scheduler"])
            step, epoch = int(self.ckpt["step"]), int(self.ckpt["epoch"])
            batch_in_epoch = int(self.ckpt["batch_in_epoch"])
            best, best_step = float(self.ckpt["best_metric"]), int(self.ckpt["best_step"])
            counters.update(self.ckpt.get("counters", {}))
            states = self.ckpt["rng"]
            if len(states) != ctx.world_size:
                raise TrainError(
                    f"the run was checkpointed by {len(states)} processes but resumed with "
                    f"{ctx.world_size}; resume with the same number (the model and data "
                    "order do not depend on it, the dropout streams do)."
                )
            set_rng_state(states[ctx.rank])
        else:
            torch.manual_seed(cfg.seed + 1 + ctx.rank)

        if ctx.enabled and on_cuda:
            # BatchNorm (ResNets) over the global batch, as in one process. SyncBatchNorm is
            # CUDA-only; on the CPU each process normalises its own share (the small CNN and
            # VGG-16 have no BatchNorm).
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
            self.net = net
        if on_cuda:
            torch.backends.cudnn.benchmark = True
        ddp = (
            DistributedDataParallel(net, device_ids=[device.index] if on_cuda else None)
            if ctx.enabled
            else net
        )
        loader_kwargs = dict(
            batch_size=sampler.per_rank,
            sampler=sampler,
            drop_last=True,
            num_workers=cfg.workers,
            collate_fn=inputs.collate,
            pin_memory=on_cuda,
            persistent_workers=False,
        )
        self.log = MetricsLog(
            self.run_dir, enabled=ctx.is_main, resume_step=step if self.ckpt is not None else None
        )
        if self.ckpt is not None:
            self.log.log("event", step, message=f"resumed from step {step} (epoch {epoch})")
        multipliers = LossWeights(
            cfg.weight_landmark, cfg.weight_prior, cfg.weight_siamese, cfg.weight_symmetry
        ).multipliers(size)
        use_bf16 = cfg.bf16 and on_cuda
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else nullcontext()
        all_reduce = ctx.all_reduce_sum if ctx.enabled else None
        params = [p for p in net.parameters() if p.requires_grad]

        bar = _Progress(self.progress_enabled, total_steps, step)
        bad_in_row, last_loss = 0, math.nan
        window_images, window_t0 = 0, time.perf_counter()
        val_every = cfg.val_every or None
        validated_at = -1
        ckpt_every = cfg.checkpoint_every or None

        def checkpoint(name: str, next_epoch: int, next_batch: int) -> None:
            states = ctx.all_gather_object(rng_state())
            if ctx.is_main:
                save_checkpoint(
                    self.run_dir / "checkpoints" / name,
                    {
                        "grid_model": fingerprint,
                        "localiser": net.state_dict(),
                        "backbone": cfg.backbone,
                        "image_size": size,
                        "landmarks": cfg.landmarks,
                        "visibility_mode": cfg.visibility_mode,
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "step": step,
                        "epoch": next_epoch,
                        "batch_in_epoch": next_batch,
                        "best_metric": best,
                        "best_step": best_step,
                        "rng": states,
                        "config": cfg.to_dict(),
                        "counters": dict(counters),
                    },
                )
            ctx.barrier()

        def validate_and_draw(
            tag: str, step_epoch: int, next_epoch: int, next_batch: int, track: bool = True
        ) -> None:
            nonlocal best, best_step, validated_at
            validated_at = step
            improved = False
            if ctx.is_main:
                record = None
                if data.val is not None:
                    record = evaluate_localiser(
                        net,
                        self.stn,
                        data.val,
                        self.indices,
                        cfg.landmarks,
                        self.model,
                        batch_size=max(1, sampler.per_rank),
                        device=device,
                        multipliers=multipliers,
                    )
                if record is not None:
                    self.log.log("val", step, epoch=step_epoch, **record)
                    metric = record.get("nme_box", math.nan)
                    if track and math.isfinite(metric) and metric < best:
                        best, best_step, improved = metric, step, True
                self._draw(data, tag)
                self.log.flush()
            improved = ctx.broadcast_object(improved)
            best, best_step = ctx.broadcast_object((best, best_step))
            if improved:
                checkpoint("best.pt", next_epoch, next_batch)

        try:
            if self.ckpt is None and data.val is not None:
                # The start: the curves then show what training gained.
                validate_and_draw("start", 0, 0, 0, track=False)
            net.train()
            while step < total_steps:
                data.set_epoch(epoch)
                sampler.set_epoch(epoch)
                sampler.set_start(batch_in_epoch)
                # Its own generator: creating the loader must not draw from the global RNG,
                # or a resumed run's dropout stream would differ from an uninterrupted one's.
                loader = DataLoader(
                    data.train,
                    generator=torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch)),
                    **loader_kwargs,
                )
                for batch in loader:
                    batch_in_epoch += 1
                    counters["bad_samples"] += int(batch.pop("bad_samples", 0))
                    batch = _to_device(batch, device)
                    flat, n_pairs, mirrored = _join_pairs(batch)
                    images = flat["image"]
                    if channels_last:
                        images = images.contiguous(memory_format=torch.channels_last)
                    with autocast:
                        theta = ddp(images)
                    theta = theta.float()
                    out = self.stn(images.float(), theta)
                    terms = training_objective(
                        out,
                        theta,
                        flat["landmarks"],
                        flat["visible"],
                        self.indices,
                        multipliers,
                        n_pairs,
                        all_reduce,
                        mirrored,
                    )
                    bad = ctx.any_true(not bool(torch.isfinite(terms.total)))
                    grad_norm = math.nan
                    if not bad:
                        optimizer.zero_grad(set_to_none=True)
                        terms.total.backward()
                        max_norm = cfg.clip_grad if cfg.clip_grad > 0 else math.inf
                        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
                        bad = ctx.any_true(not math.isfinite(grad_norm))
                    if bad:
                        optimizer.zero_grad(set_to_none=True)
                    else:
                        optimizer.step()
                    scheduler.step()
                    step += 1
                    window_images += cfg.batch_size
                    if bad:
                        bad_in_row += 1
                        counters["skipped_steps"] += 1
                        self.log.log(
                            "event", step, message="non-finite loss or gradient: step skipped"
                        )
                        if bad_in_row >= cfg.max_bad_steps:
                            raise TrainError(
                                f"the loss or its gradient was not finite for {bad_in_row} steps "
                                f"in a row (up to step {step}); lower --lr, set --clip-grad, or "
                                "check the data for broken annotations."
                            )
                    else:
                        bad_in_row = 0
                        total = terms.total.detach()
                        if ctx.enabled:  # each process holds its share: they sum to world x J
                            total = ctx.all_reduce_sum(total) / ctx.world_size
                        last_loss = float(total)
                    if ctx.is_main and (step % cfg.log_every == 0 or step == total_steps):
                        now = time.perf_counter()
                        rate = window_images / max(now - window_t0, 1e-9)
                        window_images, window_t0 = 0, now
                        self.log.log(
                            "train",
                            step,
                            epoch=epoch,
                            time=now - t_start,
                            loss=last_loss,
                            landmark=float(terms.landmark),
                            prior=float(terms.prior),
                            siamese=float(terms.siamese),
                            symmetry=float(terms.symmetry),
                            lr=optimizer.param_groups[0]["lr"],
                            grad_norm=grad_norm,
                            images_per_s=rate,
                            skipped_steps=counters["skipped_steps"],
                            bad_samples=counters["bad_samples"],
                        )
                        bar.update(step, f"loss {last_loss:.4g}  {rate:.1f} img/s")
                    if crash_at_step is not None and step >= crash_at_step:
                        return self._result(step, epoch, last_loss, best, counters, t_start)
                    epoch_done = batch_in_epoch >= steps_per_epoch
                    next_epoch, next_batch = (
                        (epoch + 1, 0) if epoch_done else (epoch, batch_in_epoch)
                    )
                    # Validate before checkpointing, so that last.pt knows the best so far.
                    if val_every and step % val_every == 0:
                        validate_and_draw(f"step_{step:07d}", epoch, next_epoch, next_batch)
                    elif not val_every and epoch_done:
                        validate_and_draw(f"epoch_{epoch:03d}", epoch, next_epoch, next_batch)
                    due = (step % ckpt_every == 0) if ckpt_every else epoch_done
                    if due and step < total_steps:
                        checkpoint("last.pt", next_epoch, next_batch)
                    if step >= total_steps:
                        break
                if batch_in_epoch >= steps_per_epoch:
                    epoch, batch_in_epoch = epoch + 1, 0
            if validated_at != step:  # the run ended between validations
                last_epoch = epoch if batch_in_epoch else epoch - 1
                validate_and_draw(f"step_{step:07d}", last_epoch, epoch, batch_in_epoch)
            checkpoint("last.pt", epoch, batch_in_epoch)
        finally:
            bar.close()
            self.log.close()
        result = self._result(step, epoch, last_loss, best, counters, t_start)
        if ctx.is_main:
            summary = {
                k: (str(v) if isinstance(v, Path) else v) for k, v in result.__dict__.items()
            }
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return result

    def _result(self, step, epoch, last_loss, best, counters, t_start) -> RunResult:
        return RunResult(
            run_dir=self.run_dir,
            steps=step,
            epochs_started=epoch,
            last_loss=last_loss,
            best_metric=best,
            skipped_steps=counters["skipped_steps"],
            bad_samples=counters["bad_samples"],
            seconds=time.perf_counter() - t_start,
        )

    def _draw(self, data, tag: str) -> None:
        pictures = self.run_dir / "pictures"
        samples = data.picture_batch
        if samples is not None:
            was_training = self.net.training
            self.net.eval()
            with torch.no_grad():
                images = samples["image"].to(self.ctx.device)
                theta = self.net(images).float()
                out = self.stn(images.float(), theta)
            self.net.train(was_training)
            write_flattening_grid(
                images.cpu(),
                out.flattened.cpu(),
                out.visibility.cpu(),
                pictures / f"{tag}.png",
                target=samples["landmarks"],
                predicted=out.points[:, self.indices].cpu(),
                visible=samples["visible"],
                title=(
                    f"{self.run_dir.name}: {tag.replace('_', ' ')} (green: target, red: predicted)"
                ),
            )
        write_loss_curves(self.log.records, pictures / "curves.png", title=str(self.run_dir.name))


def train(
    config: RunConfig,
    explicit: set[str] | frozenset[str] = frozenset(),
    progress: bool = False,
    crash_at_step: int | None = None,
) -> RunResult:
    """Train the localiser as ``config`` says (module docstring); one process or torchrun.

    Args:
        config: the settings (:func:`stn_train.config.resolve_run_config`).
        explicit: the settings given on the command line (checked against a resumed run's).
        progress: show a progress bar (rank 0).
        crash_at_step: for tests: stop abruptly after this step, writing nothing more, as a
            killed process would.

    Raises:
        TrainError: bad settings or files, a run folder already in use, a checkpoint of another
            model, or a run of non-finite losses.
    """
    ctx = init_distributed(config.device)
    try:
        trainer = _Trainer(config, ctx, set(explicit), progress)
        return trainer.run(crash_at_step)
    finally:
        ctx.close()
