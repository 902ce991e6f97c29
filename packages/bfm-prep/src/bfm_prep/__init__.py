"""bfm-prep: prepare a morphable face model for 3DMM-STN.

Data flow: external files (or :mod:`bfm_prep.synth`) -> :class:`MorphableModel` ->
model artifact -> UV embedding -> UV-grid artifact (read by ``stn_core.UVGridModel``).
"""

from bfm_prep.errors import PrepError
from bfm_prep.model import MorphableModel

__version__ = "0.1.0"

__all__ = ["MorphableModel", "PrepError", "__version__"]
