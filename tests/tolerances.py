"""One table of tolerances per dtype, used by every test (no bare numbers elsewhere)."""

import numpy as np

# (rtol, atol) for comparing values computed two ways in the given precision.
TOL = {
    np.float64: (1e-10, 1e-12),
    np.float32: (1e-5, 1e-6),
    "bfloat16": (1.6e-2, 1e-2),
}
# The artifact stores float32: a float64 value survives a round trip to this relative error.
ARTIFACT_RTOL = 1e-6
# Gradcheck settings for float64 layers.
GRADCHECK = dict(eps=1e-6, atol=1e-5, rtol=1e-3)
