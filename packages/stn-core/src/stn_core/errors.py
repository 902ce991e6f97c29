"""The errors a user can cause in stn-core: one sentence each, what, which argument or file,
what to do. Command-line fronts turn them into exit status 2 without a traceback."""

from __future__ import annotations

__all__ = ["StnError", "ArtifactError"]


class StnError(ValueError):
    """A user-caused error in stn-core: what, which argument or file, what to do."""


class ArtifactError(StnError):
    """A model artifact that cannot be read: wrong format, unsupported version, missing data."""
