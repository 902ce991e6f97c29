"""The training loop of ``stn-train run`` (one process, or one of many under torchrun).

Per step: the localiser regresses theta from a batch of images (bf16 autocast on CUDA), the
STN (:class:`stn_core.STN`) turns theta into landmarks, flattened faces and visibility, and
the objective (:mod:`stn_train.train.losses`) combines stn-core's four losses. A step whose
loss or gradient is not finite is skipped on every process; several in a row stop the run
with a message. Checkpoints (:mod:`stn_train.checkpoint`) are written by rank 0 every
``checkpoint_every`` steps (0: every epoch), at the end, and as ``best.pt`` when the
validation NME improves; ``resume`` continues from ``last.pt`` exactly: the same batches,
augmentations, RNG states and optimiser state as an uninterrupted run.

The run, in the order :meth:`_Trainer.run` takes it: :meth:`~_Trainer.setup` (model, data,
network, optimiser, schedule), :meth:`~_Trainer.restore` (a checkpoint's state, or fresh
seeds), :meth:`~_Trainer.distribute` (DDP and the data loader), then per batch
:meth:`~_Trainer.step` (forward, objective, backward, update), :meth:`~_Trainer.log_step`,
and at the due steps :meth:`~_Trainer.validate` (metrics and pictures) and
:meth:`~_Trainer.checkpoint`; :meth:`~_Trainer.finish` writes the summary.

Run folder::

    RUN_DIR/config.toml          the settings (readable by --config)
    RUN_DIR/metrics.jsonl        one JSON record per logged step / validation
    RUN_DIR/tensorboard/         TensorBoard event files
    RUN_DIR/checkpoints/         last.pt, best.pt
    RUN_DIR/pictures/            curves.png, epoch_NNN.png (or step_NNNNNNN.png)
    RUN_DIR/summary.json         final figures
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from stn_core import STN, StnError
from stn_core.geometry import initial_log_scale
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from stn_train.checkpoint import (
    check_same_model,
    grid_model_fingerprint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from stn_train.config import RunConfig, merge_for_resume, write_config
from stn_train.data import collate_batch
from stn_train.errors import TrainError
from stn_train.evaluate import evaluate_localiser
from stn_train.localiser import build_localiser
from stn_train.outputs import check_output_folder, make_output_folder, write_json
from stn_train.pictures.training import write_flattening_grid, write_loss_curves
from stn_train.runtime import load_grid_model
from stn_train.train import inputs
from stn_train.train.distributed import (
    DistContext,
    GlobalBatchSampler,
    epoch_seed,
    init_distributed,
)
from stn_train.train.losses import LossWeights, training_objective
from stn_train.train.optim import make_optimizer, make_scheduler
from stn_train.train.run_log import RunLog
from stn_train.train.teacher import LandmarkTeacher, teacher_loss, teacher_vertices

__all__ = ["RunResult", "train", "Progress", "StepCallback"]

Progress = Callable[[int, int, str], None]
"""``progress(step, total_steps, info)``: called on rank 0 after each logged step."""
StepCallback = Callable[[int], None]
"""``on_step(step)``: called on every process after each optimiser step and its logging."""


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


@dataclass
class _State:
    """Where the run is: what a checkpoint saves and a resumed run continues from."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best: float = math.inf
    best_step: int = -1
    counters: dict = field(default_factory=lambda: {"skipped_steps": 0, "bad_samples": 0})


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
    keys = ("image", "landmarks", "visible", "index", "trust")
    joined = {k: torch.cat([a[k], b[k]]) for k in keys if k in a and k in b}
    return joined, a["image"].shape[0], batch.get("mirrored")


def _trusted_only(out):
    """The STN output of images with a trust channel appended (``(B, C + 1, H, W)``: quality
    masks, ``stn-train synthesize``; flattened by the same theta in the same sampler pass)
    with that channel taken off and the invented texels left out of the visibility mask, so
    that the siamese and symmetry terms compare only the photographs' own pixels: a texel
    counts where it is visible and its flattened trust is above one half."""
    flattened = out.flattened[:, :-1]
    trusted = (out.flattened[:, -1:] > 0.5).to(out.visibility.dtype)
    vis = out.visibility * trusted
    return out._replace(flattened=flattened, visibility=vis, masked=flattened * vis)


class _Trainer:
    """One training run: its settings, its state, and the steps of :meth:`run`."""

    def __init__(self, config: RunConfig, ctx: DistContext, explicit: set[str]):
        self.ctx = ctx
        self.ckpt = None
        if config.resume:
            if not config.out:
                raise TrainError("{0} needs {1} RUN_DIR, the run to continue.", ("resume", "out"))
            last = Path(config.out) / "checkpoints" / "last.pt"
            if not last.is_file():
                raise TrainError(
                    f"{{0}}: {last} does not exist; drop {{0}} to start a new run there.",
                    ("resume",),
                )
            self.ckpt = load_checkpoint(last)
            config = merge_for_resume(self.ckpt["config"], config, explicit)
        config.validate()
        self.config = config
        self.run_dir = Path(config.out)
        check_output_folder(self.run_dir)
        if self.ckpt is None and (self.run_dir / "checkpoints" / "last.pt").exists():
            raise TrainError(
                f"{self.run_dir} already holds a run; pass {{0}} to continue it, or choose "
                "another {1}.",
                ("resume", "out"),
            )
        self.state = _State()

    # -------------------------------------------------------------------------------------
    # the run, in order

    def run(self, progress: Progress | None, on_step: StepCallback | None) -> RunResult:
        self.t_start = time.perf_counter()
        self.setup()
        self.restore()
        self.distribute()
        st, cfg = self.state, self.config
        self.log = RunLog(
            self.run_dir,
            enabled=self.ctx.is_main,
            resume_step=st.step if self.ckpt is not None else None,
        )
        if self.ckpt is not None:
            self.log.log(
                "event", st.step, message=f"resumed from step {st.step} (epoch {st.epoch})"
            )
        self.bad_in_row, self.last_loss = 0, math.nan
        self.window_images, self.window_t0 = 0, time.perf_counter()
        self.validated_at = -1
        try:
            if self.ckpt is None and self.data.val is not None:
                # The start: the curves then show what training gained.
                self.validate("start", 0, 0, 0, track=False)
            self.net.train()
            while st.step < self.total_steps:
                for batch in self.epoch_loader():
                    st.batch_in_epoch += 1
                    terms, grad_norm, bad = self.step(batch)
                    self.log_step(terms, grad_norm, bad, progress)
                    if on_step is not None:
                        on_step(st.step)
                    epoch_done = st.batch_in_epoch >= self.sampler.steps_per_epoch
                    after = (st.epoch + 1, 0) if epoch_done else (st.epoch, st.batch_in_epoch)
                    # Validate before checkpointing, so that last.pt knows the best so far.
                    if cfg.val_every and st.step % cfg.val_every == 0:
                        self.validate(f"step_{st.step:07d}", st.epoch, *after)
                    elif not cfg.val_every and epoch_done:
                        self.validate(f"epoch_{st.epoch:03d}", st.epoch, *after)
                    due = (
                        st.step % cfg.checkpoint_every == 0 if cfg.checkpoint_every else epoch_done
                    )
                    if due and st.step < self.total_steps:
                        self.checkpoint("last.pt", *after)
                    if st.step >= self.total_steps:
                        break
                if st.batch_in_epoch >= self.sampler.steps_per_epoch:
                    st.epoch, st.batch_in_epoch = st.epoch + 1, 0
            if self.validated_at != st.step:  # the run ended between validations
                last_epoch = st.epoch if st.batch_in_epoch else st.epoch - 1
                self.validate(f"step_{st.step:07d}", last_epoch, st.epoch, st.batch_in_epoch)
            self.checkpoint("last.pt", st.epoch, st.batch_in_epoch)
        finally:
            self.log.close()
        return self.finish()

    def setup(self) -> None:
        """The grid model, the data, the network, the optimiser and the schedule."""
        cfg, ctx = self.config, self.ctx
        self.model = load_grid_model(cfg.model, device=ctx.device)
        self.fingerprint = grid_model_fingerprint(self.model)
        if self.ckpt is not None:
            last = self.run_dir / "checkpoints" / "last.pt"
            check_same_model(self.ckpt.get("grid_model", {}), self.fingerprint, last)
        try:
            self.indices = self.model.landmark_indices(cfg.landmarks)
        except StnError as exc:
            raise TrainError(f"{{0}}: {exc}", ("landmarks",)) from None
        self.data = inputs.build_data(cfg, self.model)

        size = cfg.image_size
        torch.manual_seed(cfg.seed)
        net = build_localiser(
            cfg.backbone,
            self.model.n_params,
            (size, size),
            weights=cfg.weights,
            init_log_s=initial_log_scale(self.model.mean, (size, size), inside=self.model.inside),
        )
        self.channels_last = cfg.channels_last and ctx.device.type == "cuda"
        net = net.to(ctx.device)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.net = net
        self.stn = STN(self.model, cfg.visibility_mode).to(ctx.device)
        self.optimizer = make_optimizer(cfg, net.parameters())

        items_per_step = cfg.batch_size // (2 if cfg.pairs else 1)  # pairs or images
        if items_per_step % ctx.world_size:
            unit = f" ({items_per_step} pairs)" if cfg.pairs else ""
            raise TrainError(
                f"{{0}} {cfg.batch_size}{unit} cannot be split evenly over "
                f"{ctx.world_size} processes; pick a multiple of "
                f"{ctx.world_size * (2 if cfg.pairs else 1)}.",
                ("batch_size",),
            )
        self.sampler = GlobalBatchSampler(
            self.data.train, items_per_step, ctx.rank, ctx.world_size, cfg.seed
        )
        steps_per_epoch = self.sampler.steps_per_epoch
        self.total_steps = cfg.steps if cfg.steps is not None else cfg.epochs * steps_per_epoch
        self.scheduler = make_scheduler(cfg, self.optimizer, self.total_steps)
        self.multipliers = LossWeights(
            cfg.weight_landmark,
            cfg.weight_prior,
            cfg.weight_siamese,
            cfg.weight_symmetry,
            cfg.weight_teacher if cfg.teacher != "none" else 0.0,
        ).multipliers(size)
        self.teacher = None
        if cfg.teacher == "lm":
            self.teacher = LandmarkTeacher(self.model, cfg.landmarks, size, cfg.teacher_prior)
            compared = teacher_vertices(self.model).to(ctx.device)
            self.teacher_mean = self.model.mean[compared]
            self.teacher_basis = self.model.basis[compared]
        # The run folder is made once everything above has been read and checked, so that a
        # run refused at its start (bad weights, bad data) leaves no folder behind.
        if ctx.is_main:
            make_output_folder(self.run_dir)
            (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            write_config(cfg, self.run_dir / "config.toml")

    def restore(self) -> None:
        """A resumed run takes the checkpoint's weights, optimiser, schedule, position and
        RNG states; a new run seeds each process's RNG."""
        ctx, st = self.ctx, self.state
        if self.ckpt is None:
            torch.manual_seed(self.config.seed + 1 + ctx.rank)
            return
        ckpt = self.ckpt
        self.net.load_state_dict(ckpt["localiser"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        st.step, st.epoch = int(ckpt["step"]), int(ckpt["epoch"])
        st.batch_in_epoch = int(ckpt["batch_in_epoch"])
        st.best, st.best_step = float(ckpt["best_metric"]), int(ckpt["best_step"])
        st.counters.update(ckpt.get("counters", {}))
        if self.teacher is not None and ckpt.get("teacher"):
            self.teacher.load_state_dict(*ckpt["teacher"])
        states = ckpt["rng"]
        if len(states) != ctx.world_size:
            raise TrainError(
                f"the run was checkpointed by {len(states)} processes but resumed with "
                f"{ctx.world_size}; resume with the same number (the model and data "
                "order do not depend on it, the dropout streams do)."
            )
        set_rng_state(states[ctx.rank])

    def distribute(self) -> None:
        """The network as the processes train it (SyncBatchNorm and DDP under torchrun) and
        the data loader's settings."""
        ctx, cfg = self.ctx, self.config
        on_cuda = ctx.device.type == "cuda"
        if ctx.enabled and on_cuda:
            # BatchNorm (ResNets) over the global batch, as in one process. SyncBatchNorm is
            # CUDA-only; on the CPU each process normalises its own share (the small CNN and
            # VGG-16 have no BatchNorm).
            self.net = nn.SyncBatchNorm.convert_sync_batchnorm(self.net)
        if on_cuda:
            torch.backends.cudnn.benchmark = True
        self.ddp = (
            DistributedDataParallel(self.net, device_ids=[ctx.device.index] if on_cuda else None)
            if ctx.enabled
            else self.net
        )
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        self.loader_kwargs = dict(
            batch_size=self.sampler.per_rank,
            sampler=self.sampler,
            drop_last=True,
            num_workers=cfg.workers,
            collate_fn=collate_batch,
            pin_memory=on_cuda,
            persistent_workers=False,
        )
        use_bf16 = cfg.bf16 and on_cuda
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else nullcontext()

    def epoch_loader(self) -> DataLoader:
        """The batches of the current epoch, from the state's position in it."""
        st = self.state
        self.data.set_epoch(st.epoch)
        self.sampler.set_epoch(st.epoch)
        self.sampler.set_start(st.batch_in_epoch)
        # Its own generator: creating the loader must not draw from the global RNG, or a
        # resumed run's dropout stream would differ from an uninterrupted one's.
        return DataLoader(
            self.data.train,
            generator=torch.Generator().manual_seed(epoch_seed(self.config.seed, st.epoch)),
            **self.loader_kwargs,
        )

    def step(self, batch: dict):
        """One optimiser step on ``batch``; a non-finite loss or gradient (on any process)
        skips the update. Returns (loss terms, gradient norm, skipped)."""
        ctx, cfg, st = self.ctx, self.config, self.state
        st.counters["bad_samples"] += int(batch.pop("bad_samples", 0))
        batch = _to_device(batch, ctx.device)
        flat, n_pairs, mirrored = _join_pairs(batch)
        images = flat["image"]
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with self.autocast:
            theta = self.ddp(images)
        theta = theta.float()
        if "trust" in flat:
            both = torch.cat([images.float(), flat["trust"].float()], 1)
            out = _trusted_only(self.stn(both, theta))
        else:
            out = self.stn(images.float(), theta)
        taught = None
        if self.teacher is not None:
            target, have = self.teacher.targets(flat["index"], flat["landmarks"], flat["visible"])
            taught = teacher_loss(
                theta,
                target,
                have,
                self.teacher_mean,
                self.teacher_basis,
                shape_weight=cfg.teacher_shape,
            )
        terms = training_objective(
            out,
            theta,
            flat["landmarks"],
            flat["visible"],
            self.indices,
            self.multipliers,
            n_pairs,
            ctx.all_reduce_sum if ctx.enabled else None,
            mirrored,
            taught,
        )
        bad = ctx.any_true(not bool(torch.isfinite(terms.total)))
        grad_norm = math.nan
        if not bad:
            self.optimizer.zero_grad(set_to_none=True)
            terms.total.backward()
            max_norm = cfg.clip_grad if cfg.clip_grad > 0 else math.inf
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, max_norm))
            bad = ctx.any_true(not math.isfinite(grad_norm))
        if bad:
            self.optimizer.zero_grad(set_to_none=True)
        else:
            self.optimizer.step()
        self.scheduler.step()
        st.step += 1
        self.window_images += cfg.batch_size
        return terms, grad_norm, bad

    def log_step(self, terms, grad_norm: float, bad: bool, progress: Progress | None) -> None:
        """Count a skipped step (stopping after too many in a row), keep the last loss, and
        log every ``log_every`` steps."""
        ctx, cfg, st = self.ctx, self.config, self.state
        if bad:
            self.bad_in_row += 1
            st.counters["skipped_steps"] += 1
            self.log.log("event", st.step, message="non-finite loss or gradient: step skipped")
            if self.bad_in_row >= cfg.max_bad_steps:
                raise TrainError(
                    f"the loss or its gradient was not finite for {self.bad_in_row} steps in a "
                    f"row (up to step {st.step}); lower {{0}}, set {{1}}, or check the data for "
                    "broken annotations.",
                    ("lr", "clip_grad"),
                )
        else:
            self.bad_in_row = 0
            total = terms.total.detach()
            if ctx.enabled:  # each process holds its share: they sum to world x J
                total = ctx.all_reduce_sum(total) / ctx.world_size
            self.last_loss = float(total)
        if ctx.is_main and (st.step % cfg.log_every == 0 or st.step == self.total_steps):
            now = time.perf_counter()
            rate = self.window_images / max(now - self.window_t0, 1e-9)
            self.window_images, self.window_t0 = 0, now
            self.log.log(
                "train",
                st.step,
                epoch=st.epoch,
                time=now - self.t_start,
                loss=self.last_loss,
                landmark=float(terms.landmark),
                prior=float(terms.prior),
                siamese=float(terms.siamese),
                symmetry=float(terms.symmetry),
                **({"teacher": float(terms.teacher)} if self.teacher is not None else {}),
                lr=self.optimizer.param_groups[0]["lr"],
                grad_norm=grad_norm,
                images_per_s=rate,
                skipped_steps=st.counters["skipped_steps"],
                bad_samples=st.counters["bad_samples"],
            )
            if progress is not None:
                progress(st.step, self.total_steps, f"loss {self.last_loss:.4g}  {rate:.1f} img/s")

    def validate(
        self, tag: str, step_epoch: int, next_epoch: int, next_batch: int, track: bool = True
    ) -> None:
        """Validation metrics and pictures (rank 0); ``best.pt`` when the NME improved."""
        ctx, cfg, st = self.ctx, self.config, self.state
        self.validated_at = st.step
        improved = False
        if ctx.is_main:
            if self.data.val is not None:
                record = evaluate_localiser(
                    self.net,
                    self.stn,
                    self.data.val,
                    self.indices,
                    cfg.landmarks,
                    self.model,
                    batch_size=max(1, self.sampler.per_rank),
                    device=ctx.device,
                    multipliers=self.multipliers,
                )
                self.log.log("val", st.step, epoch=step_epoch, **record)
                metric = record.get("nme_box", math.nan)
                if track and math.isfinite(metric) and metric < st.best:
                    st.best, st.best_step, improved = metric, st.step, True
            self.draw(tag)
            self.log.flush()
        improved = ctx.broadcast_object(improved)
        st.best, st.best_step = ctx.broadcast_object((st.best, st.best_step))
        if improved:
            self.checkpoint("best.pt", next_epoch, next_batch)

    def checkpoint(self, name: str, next_epoch: int, next_batch: int) -> None:
        """``checkpoints/NAME`` (rank 0), resuming at batch ``next_batch`` of ``next_epoch``."""
        ctx, cfg, st = self.ctx, self.config, self.state
        states = ctx.all_gather_object(rng_state())
        # The teacher's fits (last.pt only: what a resumed run reads), every process's.
        cached = None
        if self.teacher is not None and name == "last.pt":
            cached = ctx.all_gather_object(self.teacher.state_dict())
        if ctx.is_main:
            save_checkpoint(
                self.run_dir / "checkpoints" / name,
                {
                    "grid_model": self.fingerprint,
                    "localiser": self.net.state_dict(),
                    "backbone": cfg.backbone,
                    "image_size": cfg.image_size,
                    "landmarks": cfg.landmarks,
                    "visibility_mode": cfg.visibility_mode,
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "step": st.step,
                    "epoch": next_epoch,
                    "batch_in_epoch": next_batch,
                    "best_metric": st.best,
                    "best_step": st.best_step,
                    "rng": states,
                    "config": cfg.to_dict(),
                    "counters": dict(st.counters),
                    **({"teacher": cached} if cached is not None else {}),
                },
            )
        ctx.barrier()

    def draw(self, tag: str) -> None:
        """``pictures/TAG.png`` (the fixed images flattened) and ``pictures/curves.png``."""
        pictures = self.run_dir / "pictures"
        samples = self.data.picture_batch
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

    def finish(self) -> RunResult:
        """The result, and ``summary.json`` (rank 0)."""
        st = self.state
        result = RunResult(
            run_dir=self.run_dir,
            steps=st.step,
            epochs_started=st.epoch,
            last_loss=self.last_loss,
            best_metric=st.best,
            skipped_steps=st.counters["skipped_steps"],
            bad_samples=st.counters["bad_samples"],
            seconds=time.perf_counter() - self.t_start,
        )
        if self.ctx.is_main:
            summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()}
            write_json(self.run_dir / "summary.json", summary)
        return result


def train(
    config: RunConfig,
    explicit: set[str] | frozenset[str] = frozenset(),
    progress: Progress | None = None,
    on_step: StepCallback | None = None,
) -> RunResult:
    """Train the localiser as ``config`` says (module docstring); one process or torchrun.

    Args:
        config: the settings (:func:`stn_train.config.resolve_run_config`).
        explicit: the settings given on the command line (checked against a resumed run's).
        progress: called on rank 0 after each logged step (:data:`Progress`), e.g. to drive a
            progress bar.
        on_step: called after each optimiser step and its logging (:data:`StepCallback`); an
            exception raised there ends the run at once, writing nothing more (tests use it
            to kill a run).

    Raises:
        TrainError: bad settings or files, a run folder already in use, a checkpoint of another
            model, or a run of non-finite losses.
    """
    ctx = init_distributed(config.device)
    try:
        trainer = _Trainer(config, ctx, set(explicit))
        try:
            result = trainer.run(progress, on_step)
        finally:
            _release(trainer)
        # Every process leaves the group together: none tears its connections down while
        # another still has a message of the last collective in flight.
        ctx.barrier()
        return result
    finally:
        ctx.close()


def _release(trainer: _Trainer) -> None:
    """Drop the trainer's network (DDP and its reducer), optimiser, data and teacher, and
    collect the garbage, while the process group and the interpreter are both alive.

    Without this the trainer outlives :func:`train` (frames kept by matplotlib's drawing hold
    it in reference cycles, and a traceback holds it after an error), DDP's gloo work is freed
    at interpreter shutdown after the group has gone, and a process can abort there
    ("terminate called without an active exception") after a run that succeeded.
    """
    for name in ("ddp", "net", "params", "optimizer", "scheduler", "data", "teacher", "stn"):
        trainer.__dict__.pop(name, None)
    gc.collect()
