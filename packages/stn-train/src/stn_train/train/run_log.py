"""The run log: what a training run records as it goes, as JSON lines
(``RUN_DIR/metrics.jsonl``) and TensorBoard scalars (``RUN_DIR/tensorboard``). The
metrics themselves are computed in :mod:`stn_train.metrics`.

One JSON object per line, flushed as it is written:

- ``{"kind": "train", "step", "epoch", "time", "loss", "landmark", "prior", "siamese",
  "symmetry", "lr", "grad_norm", "images_per_s", "skipped_steps", "bad_samples"}``
  (``landmark`` in px^2, the others unweighted; ``loss`` the weighted objective),
- ``{"kind": "val", "step", "epoch", "time", "loss", "landmark_rmse_px", "nme_box",
  "nme_interocular", ...}``,
- ``{"kind": "event", "step", "message"}`` (a skipped step, a resume).

Only rank 0 writes. On resume the lines after the checkpoint's step are dropped (a crashed run
may have logged beyond its last checkpoint) and TensorBoard purges them too, so the curves
continue where the checkpoint was.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from stn_train.outputs import write_text

__all__ = ["RunLog", "read_run_log"]


def read_run_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every record of a metrics file (a torn last line is ignored)."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


class RunLog:
    """Appends records to ``metrics.jsonl`` and TensorBoard scalars (no-op when disabled).

    Args:
        run_dir: the run folder.
        enabled: False on ranks other than 0.
        resume_step: None for a new run; else the checkpoint's step: records with a larger
            step are removed and TensorBoard purges from ``resume_step + 1``.
        tensorboard: also write TensorBoard event files.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        enabled: bool = True,
        resume_step: int | None = None,
        tensorboard: bool = True,
    ):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = enabled
        self.records: list[dict[str, Any]] = []
        self._writer = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            kept = [r for r in read_run_log(self.path) if int(r.get("step", 0)) <= resume_step]
            write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
            self.records = kept
        else:
            write_text(self.path, "")
        self._file = open(self.path, "a", buffering=1)
        if tensorboard:
            self._writer = SummaryWriter(
                log_dir=str(Path(run_dir) / "tensorboard"),
                purge_step=None if resume_step is None else resume_step + 1,
            )

    def log(self, kind: str, step: int, **values: Any) -> None:
        """Write one record; numeric values also go to TensorBoard as ``kind/name``."""
        if not self.enabled:
            return
        record = {"kind": kind, "step": int(step), **{k: _clean(v) for k, v in values.items()}}
        self.records.append(record)
        self._file.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for name, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    if math.isfinite(value):
                        self._writer.add_scalar(f"{kind}/{name}", value, int(step))
            if kind == "event" and "message" in values:
                self._writer.add_text("events", str(values["message"]), int(step))

    def flush(self) -> None:
        if self.enabled:
            self._file.flush()
            if self._writer is not None:
                self._writer.flush()

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            if self._writer is not None:
                self._writer.close()
            self.enabled = False
