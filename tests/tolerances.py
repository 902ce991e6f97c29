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

# Fused kernel vs reference, both in float32: the kernel sums basis @ alpha in another order
# and contracts multiply-adds, so image points differ by float32 rounding of coordinates of up
# to ~2e2 px (ulp 1.5e-5 px), which the sampled image's gradient (up to ~1 per px for values
# in [0, 1]) passes on to the output; gradients are compared after dividing by each column's
# (d theta) or the whole tensor's (d images) largest magnitude, since both are sums of terms
# with cancelling signs.
KERNEL_TOL = (100 * TOL[np.float32][0], 100 * TOL[np.float32][1])
