"""Settings of ``stn-train run``: defaults, a TOML config file, the command line.

The config file's keys are the long option names of ``stn-train run`` without the dashes
(``batch-size = 64``; ``batch_size`` is accepted too), e.g.::

    model = "out/demo/grid.h5"
    synthetic = 2000
    out = "runs/small"
    backbone = "small"
    image-size = 96
    batch-size = 32
    steps = 3000
    lr = 1e-3
    weight-prior = 0.1

Precedence: the defaults of :class:`RunConfig` < the config file < options given on the
command line. Relative paths in a config file are relative to the file's folder. Unknown keys,
wrong types and impossible values are refused with one sentence (:class:`TrainError`).

When a run is resumed (``--resume``), the settings saved in ``RUN_DIR/config.toml`` are used;
options given again must agree with them, except those in :data:`RESUME_OVERRIDABLE`
(extending a run with more ``--steps``, fewer ``--workers``, ...). The run is the folder given
(``--out``, or the folder of ``--config RUN_DIR/config.toml``) wherever it was recorded, so a
moved or copied run folder resumes; the grid model may be given at a new path (the checkpoint
checks its arrays).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from stn_train.errors import TrainError, refuse_folder
from stn_train.outputs import write_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = [
    "RunConfig",
    "CHOICES",
    "PATH_KEYS",
    "RESUME_OVERRIDABLE",
    "toml_key",
    "read_config_file",
    "resolve_run_config",
    "merge_for_resume",
    "is_run_folder",
    "config_to_toml",
    "write_config",
]

CHOICES = {
    "backbone": ("vgg16", "resnet18", "resnet50", "small"),
    "optimizer": ("adam", "adamw", "sgd"),
    "schedule": ("cosine", "step", "none"),
    "visibility_mode": ("normals", "depth"),
    "teacher": ("none", "lm"),
    "synthetic_anchor": ("centre", "top"),
}
PATH_KEYS = ("model", "data", "val", "out", "weights")
RESUME_OVERRIDABLE = frozenset(
    {
        "epochs",
        "steps",
        "workers",
        "checkpoint_every",
        "val_every",
        "log_every",
        "pictures",
        "max_bad_steps",
        "device",
        "resume",
    }
)


@dataclass
class RunConfig:
    """Every setting of a training run (the option ``--batch-size`` is ``batch_size``).

    Data: ``model`` (grid model .h5), exactly one of ``data`` (manifest .jsonl) and
    ``synthetic`` (number of rendered training faces); validation from ``val`` (manifest) or
    ``val_synthetic`` held-out rendered faces (default with ``synthetic``: 64); ``landmarks``
    the model's landmark set the annotations follow; ``synthetic_margin``: rendered faces
    framed like crops around their landmarks with this margin instead of by the model's
    extent, the landmark box centred (``synthetic_anchor`` ``"centre"``) or its larger side's
    square aligned with its top (``"top"``, the original's demo photographs)
    (:class:`stn_train.data.synthetic.SyntheticFaces`).

    Schedule: ``steps`` (optimiser steps) wins over ``epochs``; ``batch_size`` is the global
    number of images per step (all processes together; with ``pairs`` half are the partners).
    """

    model: str | None = None
    data: str | None = None
    synthetic: int | None = None
    val: str | None = None
    val_synthetic: int | None = None
    synthetic_margin: float | None = None
    synthetic_anchor: str = "centre"
    out: str | None = None
    landmarks: str = "aflw21"
    backbone: str = "vgg16"
    weights: str | None = None
    image_size: int = 224
    batch_size: int = 64
    epochs: int = 20
    steps: int | None = None
    lr: float = 1e-4
    optimizer: str = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_steps: int = 0
    weight_landmark: float = 0.8998
    weight_prior: float = 0.1
    weight_siamese: float = 1e-4
    weight_symmetry: float = 1e-4
    teacher: str = "none"
    weight_teacher: float = 0.9
    teacher_prior: float = 1.0
    teacher_shape: float = 3.0
    pairs: bool = True
    augment: bool = True
    visibility_mode: str = "normals"
    bf16: bool = True
    channels_last: bool = True
    clip_grad: float = 0.0
    max_bad_steps: int = 5
    checkpoint_every: int = 500
    val_every: int = 0
    log_every: int = 10
    pictures: int = 4
    resume: bool = False
    seed: int = 0
    workers: int = 2
    device: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> RunConfig:
        """Check the values; returns self. Raises :class:`TrainError` (one sentence)."""
        if not self.model:
            raise TrainError(
                "no grid model: pass {0} grid.h5 (written by bfm-prep uv-resample).", ("model",)
            )
        if not self.out:
            raise TrainError("no run folder: pass {0} RUN_DIR.", ("out",))
        if (self.data is None) == (self.synthetic is None):
            raise TrainError(
                "pass exactly one of {0} manifest.jsonl and {1} N (rendered faces).",
                ("data", "synthetic"),
            )
        if self.val is not None and self.val_synthetic is not None:
            raise TrainError("pass at most one of {0} and {1}.", ("val", "val_synthetic"))
        for key, choices in CHOICES.items():
            if getattr(self, key) not in choices:
                raise TrainError(
                    f"{{0}} {getattr(self, key)!r} is not one of {', '.join(choices)}.", (key,)
                )
        if self.device is not None and self.device.split(":")[0] not in ("cpu", "cuda"):
            raise TrainError(f"{{0}} {self.device!r} is not cpu, cuda or cuda:N.", ("device",))
        # image_size has its own lower bound, below (one message for 0 and for 1).
        positive = ["batch_size", "epochs", "max_bad_steps", "log_every"]
        for key in positive:
            if getattr(self, key) < 1:
                value = getattr(self, key)
                raise TrainError(f"{{0}} must be at least 1, got {value}.", (key,))
        for key in ("synthetic", "val_synthetic", "steps"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise TrainError(f"{{0}} must be at least 1, got {value}.", (key,))
        margin = self.synthetic_margin
        if margin is not None and not (math.isfinite(margin) and margin >= 0):
            raise TrainError(f"{{0}} must be finite and >= 0, got {margin}.", ("synthetic_margin",))
        if self.image_size < 32:
            raise TrainError(
                f"{{0}} must be at least 32 pixels, got {self.image_size}.", ("image_size",)
            )
        for key in ("checkpoint_every", "val_every", "pictures", "workers", "warmup_steps"):
            if getattr(self, key) < 0:
                raise TrainError("{0} must not be negative.", (key,))
        for key in (
            "lr",
            "weight_decay",
            "momentum",
            "clip_grad",
            "weight_landmark",
            "weight_prior",
            "weight_siamese",
            "weight_symmetry",
            "weight_teacher",
            "teacher_prior",
            "teacher_shape",
        ):
            value = getattr(self, key)
            if not math.isfinite(value) or value < 0:
                raise TrainError(f"{{0}} must be finite and >= 0, got {value}.", (key,))
        if self.lr == 0:
            raise TrainError("{0} must be positive.", ("lr",))
        if self.pairs and self.batch_size % 2:
            raise TrainError(
                f"{{0}} {self.batch_size} is odd, but with pairs each step holds whole "
                "pairs; pass an even batch size or {1}.",
                ("batch_size", ("pairs=False", "--no-pairs")),
            )
        return self


_FIELDS = {f.name: f for f in fields(RunConfig)}


def toml_key(key: str) -> str:
    """``"batch_size"`` -> ``"batch-size"``: a setting's key in a TOML config file (the
    option's name without the dashes)."""
    return key.replace("_", "-")


def _field_kind(key: str) -> type:
    annotation = str(_FIELDS[key].type)
    for kind, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str")):
        if annotation.startswith(name):
            return kind
    raise AssertionError(annotation)  # pragma: no cover


def _coerce(key: str, value: Any, where: str) -> Any:
    kind = _field_kind(key)
    optional = "None" in str(_FIELDS[key].type)
    if value is None and optional:
        return None
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        if isinstance(value, (str, os.PathLike)):
            return str(value)
    raise TrainError(
        f"{where}: {toml_key(key)} = {value!r} is not a{'n' if kind is int else ''} "
        f"{kind.__name__}."
    )


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The settings of a TOML config file, keyed like :class:`RunConfig` (underscores).

    Raises:
        TrainError: missing file, invalid TOML, an unknown key, a table, or a wrong type.
    """
    path = Path(path)
    refuse_folder(path, "config file", "pass a TOML file (see --help)")
    if not path.is_file():
        raise TrainError(f"config file {path} does not exist; pass a TOML file (see --help).")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TrainError(f"config file {path} is not valid TOML ({exc}).") from None
    out: dict[str, Any] = {}
    for name, value in raw.items():
        key = name.replace("-", "_")
        if isinstance(value, dict):
            raise TrainError(
                f"config file {path}: [{name}] is a table; write plain `key = value` lines "
                "(no sections)."
            )
        if key not in _FIELDS or key == "resume":
            known = ", ".join(toml_key(k) for k in _FIELDS if k != "resume")
            raise TrainError(
                f"config file {path}: unknown key {name!r}; the keys are the options of "
                f"stn-train run: {known}."
            )
        value = _coerce(key, value, f"config file {path}")
        if key in PATH_KEYS and value is not None:
            p = Path(value).expanduser()
            value = str(p if p.is_absolute() else path.parent / p)
        out[key] = value
    return out


def is_run_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a training run that can be resumed (``checkpoints/last.pt``)."""
    return (Path(path) / "checkpoints" / "last.pt").is_file()


def resolve_run_config(
    given: dict[str, Any], config_file: str | os.PathLike | None = None
) -> RunConfig:
    """Defaults < config file < ``given`` (the options present on the command line).

    Does not validate (see :meth:`RunConfig.validate`; a resumed run validates after merging).
    """
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update(read_config_file(config_file))
        folder = Path(config_file).parent
        if given.get("resume") and "out" not in given and is_run_folder(folder):
            # Resuming from a run's own config.toml: the run is the folder it lies in, even
            # when the folder was moved since (its recorded ``out`` is where it was).
            values["out"] = str(folder.absolute())
    for key, value in given.items():
        if key not in _FIELDS:
            raise TrainError(f"unknown setting {key!r}.")
        values[key] = _coerce(key, value, "command line")
    return RunConfig(**values)


def merge_for_resume(saved: dict[str, Any], current: RunConfig, explicit: set[str]) -> RunConfig:
    """The saved run's settings, with the explicitly given overridable ones.

    The run folder is the one being resumed (``current.out``), wherever the run was recorded:
    a moved or copied run folder resumes. The grid model may be given at another path (the
    checkpoint checks its arrays, not its path), and the backbone weights are not read again
    (the checkpoint holds the network). Every other setting given again must agree.

    Raises:
        TrainError: an explicitly given setting outside :data:`RESUME_OVERRIDABLE` differs
            from the saved run's.
    """
    merged = {k: saved[k] for k in _FIELDS if k in saved}
    for key in sorted(explicit):
        value = getattr(current, key)
        if key in RESUME_OVERRIDABLE or key in ("model", "weights"):
            merged[key] = value
        elif key == "out":
            continue
        elif key in PATH_KEYS and value is not None and merged.get(key) is not None:
            if Path(value).resolve() != Path(merged[key]).resolve():
                raise TrainError(
                    f"{{0}} {value} differs from the resumed run's {merged[key]}; drop it, or "
                    "start a new run in another {1}.",
                    (key, "out"),
                )
        elif merged.get(key) != value:
            raise TrainError(
                f"{{0}} {value} differs from the resumed run's {merged.get(key)}; drop it to "
                "resume, or start a new run in another {1}.",
                (key, "out"),
            )
    merged["out"] = current.out
    merged["resume"] = True
    return RunConfig(**merged)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    s = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'


def config_to_toml(config: RunConfig) -> str:
    """The settings as a TOML config file (None values are left out).

    Paths are written absolute, so that the file works with ``--config`` from any folder
    (``--config`` reads relative paths as relative to the file's folder).
    """
    lines = ["# stn-train run settings (readable by --config)"]
    for key, value in config.to_dict().items():
        if key in PATH_KEYS and value is not None:
            value = os.path.abspath(os.path.expanduser(str(value)))
        if value is not None and key != "resume":
            lines.append(f"{toml_key(key)} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def write_config(config: RunConfig, path: str | os.PathLike) -> None:
    """Write :func:`config_to_toml` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, config_to_toml(config))
