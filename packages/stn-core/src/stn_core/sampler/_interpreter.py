"""Whether Triton's interpreter is on: the one flag that both the dispatch and the kernels read
(the kernels run on CPU tensors only under it)."""

from __future__ import annotations

import os

__all__ = ["interpreter_on"]


def interpreter_on() -> bool:
    """Whether ``TRITON_INTERPRET`` is set (read as Triton reads it: 1, true or on)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on")
