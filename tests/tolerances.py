"""Numerical tolerances for the tests, in one place.

``TOL`` is the table per dtype for comparing one quantity computed two ways in that precision
(two formulas, batched against single, autograd against a closed form, float64 identities);
tests use it unless the comparison needs another bound. Such bounds (finite differences, an
iterative solver's convergence, float32 storage, quadrature, ...) are the named constants
below, each with the reason for its value. Tests do not write tolerances as bare numbers.

Specification thresholds, which are not numerical tolerances (a landmark error under 3 px, at
least 85 % of the grid visible, a rotation error below 2 degrees, ...), live with their tests,
as named constants or stated where they are checked, with their source.
"""

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

# Central differences in float64 take this step: their error is the truncation h^2 |f'''| / 6
# plus the rounding eps |f| / h (2.2e-10 |f|).
FD_STEP = 1e-6
# (rtol, atol) for fit_image's Jacobians against central differences: the sampled image's
# curvature makes truncation dominate, relative to the entry (measured up to 8.3e-7 of it).
FD_TOL = (1e-5, 1e-6)
# (rtol, atol) for fit_landmarks' Jacobian against central differences: smooth in theta, but
# residuals of up to ~2e2 weighted px make rounding dominate, ~4e-8 absolute (measured 6.6e-8).
FD_LANDMARK_TOL = (1e-6, 1e-5)

# rtol and atol for a Levenberg-Marquardt solution against a minimum known exactly (noise-free
# data or a linear problem), per dtype, in px, theta entries or R entries. Near such a minimum
# LM converges quadratically (zero residual) or at the rate of its shrinking damping (linear),
# so when its default xtol (1e-10 relative step) or ftol (1e-8 relative cost decrease) stops
# it, x is near the rounding floor cond(J) eps |x| (the solver tests' exponential fits: cond(J)
# up to 1.6e3, |x| ~ 2, so 7e-13 in float64, 4e-4 in float32). Measured up to 2.2e-11 in
# float64 and 3.5e-6 in float32.
LM_CONVERGED = {np.float64: 1e-9, np.float32: 1e-3}

# atol (theta entries, px) for a noisy fit's solution computed two ways that round differently
# (a batch of faces against each face alone: batched products take other kernels at other
# batch sizes), per dtype. Both reach the same cost to rounding (measured 1.2e-14 of it in
# float64), but a cost known to eps C fixes theta only to about sqrt(eps C / h) along a
# direction of curvature h, and the stopping iteration may differ by one or two; on
# test_fit_landmarks' 293 synthetic faces (C ~ 30) theta differed by up to 6.7e-6 (the
# code before the active-set compaction: 3.5e-6), the landmarks by 1.2e-7 px.
LM_SAME_MINIMUM_ATOL = {np.float64: 5e-5}

# (rtol, atol) for J^T J accumulated over vertex chunks against the product of the assembled
# Jacobian, float64: its entries cancel (sum |terms| up to 3e4 times the entry), so rounding is
# ~1e-11 of small entries (measured 1.3e-11 relative, 8e-13 absolute). Also fit_landmarks'
# normal equations built without the Jacobian against the product of landmark_residuals'
# Jacobian (measured 1e-10 relative on entries near 1e-4, 1.4e-14 absolute).
NORMAL_EQUATIONS_TOL = (1e-9, 1e-9)
# (rtol, atol) for a cost against the sum of its few non-negative terms, float64: only the
# order of summation differs, at most n eps relative for n < 10 terms.
SUM_OF_TERMS_TOL = (1e-12, 0.0)

# so3_left_jacobian's series and closed form at angles 0.5 -/+ 1e-9 (either side of its switch):
# the 2e-9 gap times dJ/d(angle) (below 1) is under 2e-9 (measured 8.2e-10), the series'
# truncation far below; rtol and atol.
LEFT_JACOBIAN_SWITCH_TOL = 1e-8

# atol of the order-2 SH projection of the clamped cosine by quadrature on the sphere (240 x 480
# points): the kink along the great circle n . d = 0 limits the rule to O(1 / 240^2); measured
# up to 8e-6 (test_shading).
SH_QUADRATURE_ATOL = 1e-5

# Pixels (of 4 images of 64 x 64) whose coverage may differ between the CPU and CUDA
# rasterisers: both work in float32 with another order of operations (fused multiply-adds), so
# pixel centres within rounding of an edge may fall on either side.
DEVICE_MASK_PIXELS = 4

# atol (pixels) of image points that SyntheticFaces computes in float32 (coordinates up to about
# 1e2 px, ulp about 1e-5, after a rotation, a scale and a shift) against the same points derived
# in float64 from its draws.
FLOAT32_PIXELS_ATOL = 1e-3
