"""The fused STN sampler in Triton: theta and the model -> the masked flattened image, one pass.

Three layers (Liger-Kernel naming):

- ``_stn_fwd_kernel`` / ``_stn_bwd_kernel``: the jit kernels (all arithmetic in float32).
- ``stn_fwd`` / ``stn_bwd``: launchers (shape checks, allocation, grid).
- ``_STNFlattenFunction``: the ``torch.autograd.Function`` joining them.

The math is the contract in :func:`stn_core.sampler.reference.stn_flatten_reference`. The
rotation matrix and the scale are formed from theta in PyTorch beforehand (a few flops per
image), packed as a "pose" (B, 12) = ``[R (row-major, 9), s, t_x, t_y]``; PyTorch's autograd
takes the pose gradient back to ``r`` and ``log_s`` through
:func:`stn_core.geometry.axis_angle_to_matrix` and ``exp``.

Forward, per program = (one image b, BLOCK_N vertices): ``X = mean + basis @ alpha`` (K in
chunks of BLOCK_K), ``Y_xy = (R X)_xy``, ``p = (s Y_x + t_x, -s Y_y + t_y)``, the four
bilinear taps of every channel (zero outside the image), times the mask, stored (B, C, N).

Backward recomputes p (cheaper than storing it), then per vertex
``dp = sum_c g_c * d bilinear_c / dp`` with ``g = grad_out * mask``, ``dY_xy = s (dp_x, -dp_y)``,
``dX = R^T dY``, and reduces in registers over the program's vertices: ``dR_ij = sum dY_i X_j``
(row 2 is zero: the projection drops z), ``ds = sum dp_x Y_x - dp_y Y_y``, ``dt = sum dp`` and
``d alpha_k = sum_n basis[n, :, k] . dX_n``. Each program writes its partial sums to its own
row of a (B, n_blocks, 9 + K) buffer, which a small ``torch.sum`` reduces: no per-vertex
gradient reaches global memory and d theta is deterministic. The image gradient (only when the
images require grad) is scattered with float32 atomic adds, so it is not bitwise reproducible;
the public dispatch uses the reference in deterministic mode.

On CPU tensors the kernels run under the Triton interpreter (``TRITON_INTERPRET=1``), which
is how the tests check them against the reference without a GPU.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from stn_core.geometry import axis_angle_to_matrix, split_theta
from stn_core.sampler._interpreter import interpreter_on

__all__ = ["stn_fwd", "stn_bwd", "stn_flatten_triton", "pack_pose", "SUPPORTED_IMAGE_DTYPES"]

SUPPORTED_IMAGE_DTYPES = (torch.float32, torch.bfloat16)

# Launch settings, chosen from the compiler's resource report for sm_90 (no GPU timing yet:
# tune on one with tools/bench_stn.py). One vertex per thread; every vertex does 4 * C
# scattered image loads, so occupancy (latency hiding) matters more than tile size. The
# (BLOCK_N, BLOCK_K) basis tiles set the register count: BLOCK_K = 4 keeps the forward at 56
# and the backward at 64 registers per thread (BLOCK_K = 16 took 192 and 216: 2 and 1 blocks
# per SM). The backward's 256 vertices halve the per-program partial sums it writes.
FWD_BLOCK_N = 128
FWD_NUM_WARPS = 4
BWD_BLOCK_N = 256
BWD_NUM_WARPS = 8
MAX_BLOCK_K = 4
# Number of pose entries: R (9, row-major), s, t_x, t_y.
POSE_SIZE = 12
# Columns of the backward's partial sums before d alpha: dR rows 0 and 1 (6), ds, dt_x, dt_y.
N_POSE_PARTIALS = 9


# The kernels reduce through this name rather than ``tl.sum`` itself, so that an interpreted
# launch can substitute an interpreted ``tl.sum`` when triton was imported before
# TRITON_INTERPRET was set (``triton.jit`` decides interpreted or compiled at decoration, also
# for triton's own library functions). No other triton library jit function is used in the
# kernels; the module's own jit helpers are listed in ``_JIT_HELPERS`` for the same swap.
_sum = tl.sum


@triton.jit
def _synthesize(
    mean_ptr,
    basis_ptr,
    alpha_ptr,
    b,
    offs_n,
    n_ok,
    K,
    s_ab,
    s_ak,
    s_mn,
    s_md,
    s_bn,
    s_bd,
    s_bk,
    BLOCK_K: tl.constexpr,
):
    """X = mean + basis @ alpha for the vertices ``offs_n`` of image ``b``: (x, y, z) float32,
    K in chunks of BLOCK_K (the (BLOCK_N, BLOCK_K) basis tiles set the register count)."""
    x = tl.load(mean_ptr + offs_n * s_mn, mask=n_ok, other=0.0).to(tl.float32)
    y = tl.load(mean_ptr + offs_n * s_mn + s_md, mask=n_ok, other=0.0).to(tl.float32)
    z = tl.load(mean_ptr + offs_n * s_mn + 2 * s_md, mask=n_ok, other=0.0).to(tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < K
        a = tl.load(alpha_ptr + b * s_ab + offs_k * s_ak, mask=k_ok, other=0.0).to(tl.float32)
        tile = basis_ptr + offs_n[:, None] * s_bn + offs_k[None, :] * s_bk
        t_ok = n_ok[:, None] & k_ok[None, :]
        x += _sum(tl.load(tile, mask=t_ok, other=0.0).to(tl.float32) * a[None, :], axis=1)
        y += _sum(tl.load(tile + s_bd, mask=t_ok, other=0.0).to(tl.float32) * a[None, :], axis=1)
        z += _sum(
            tl.load(tile + 2 * s_bd, mask=t_ok, other=0.0).to(tl.float32) * a[None, :], axis=1
        )
    return x, y, z


@triton.jit
def _load_pose(pose_ptr, b):
    """Rotation rows 0 and 1 (the projection drops row 2), scale and translation of image b."""
    pose = pose_ptr + b * 12
    r00 = tl.load(pose + 0)
    r01 = tl.load(pose + 1)
    r02 = tl.load(pose + 2)
    r10 = tl.load(pose + 3)
    r11 = tl.load(pose + 4)
    r12 = tl.load(pose + 5)
    s = tl.load(pose + 9)
    tx = tl.load(pose + 10)
    ty = tl.load(pose + 11)
    return r00, r01, r02, r10, r11, r12, s, tx, ty


@triton.jit
def _taps(px, py, n_ok, H, W):
    """The bilinear taps at floor(p) + {0, 1}: corner x0, y0 (int32; x1 = x0 + 1, y1 = y0 + 1),
    the weights of the far corner wx1, wy1 (the near ones are 1 - w) and whether each corner is
    inside the image (reads outside are zero). p is clamped first so that far-away points stay
    in the integer range (their taps are all outside the image and read 0 either way)."""
    x0f = tl.floor(tl.minimum(tl.maximum(px, -2.0), W + 1.0))
    y0f = tl.floor(tl.minimum(tl.maximum(py, -2.0), H + 1.0))
    x0 = x0f.to(tl.int32)
    y0 = y0f.to(tl.int32)
    okx0 = (x0 >= 0) & (x0 < W)
    okx1 = (x0 + 1 >= 0) & (x0 + 1 < W)
    oky0 = (y0 >= 0) & (y0 < H)
    oky1 = (y0 + 1 >= 0) & (y0 + 1 < H)
    ok00 = n_ok & oky0 & okx0
    ok01 = n_ok & oky0 & okx1
    ok10 = n_ok & oky1 & okx0
    ok11 = n_ok & oky1 & okx1
    return x0, y0, px - x0f, py - y0f, ok00, ok01, ok10, ok11


@triton.jit
def _stn_fwd_kernel(
    img_ptr,
    pose_ptr,
    alpha_ptr,
    mean_ptr,
    basis_ptr,
    mask_ptr,
    out_ptr,
    N,
    K,
    C,
    H,
    W,
    s_ib,
    s_ic,
    s_ih,
    s_iw,
    s_ab,
    s_ak,
    s_mn,
    s_md,
    s_bn,
    s_bd,
    s_bk,
    s_kb,
    s_kn,
    s_ob,
    s_oc,
    s_on,
    HAS_MASK: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    # Batch on grid axis 0 (the fastest-varying): the programs in flight at one time share a
    # block of vertices across images, so its basis rows are read from DRAM about once and
    # then from L2, whatever K is.
    b = tl.program_id(0).to(tl.int64)
    pid_n = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N

    x, y, z = _synthesize(
        mean_ptr,
        basis_ptr,
        alpha_ptr,
        b,
        offs_n,
        n_ok,
        K,
        s_ab,
        s_ak,
        s_mn,
        s_md,
        s_bn,
        s_bd,
        s_bk,
        BLOCK_K,
    )
    r00, r01, r02, r10, r11, r12, s, tx, ty = _load_pose(pose_ptr, b)
    px = s * (r00 * x + r01 * y + r02 * z) + tx
    py = -s * (r10 * x + r11 * y + r12 * z) + ty

    x0, y0, wx1, wy1, ok00, ok01, ok10, ok11 = _taps(px, py, n_ok, H, W)
    wx0 = 1.0 - wx1
    wy0 = 1.0 - wy1
    o00 = y0 * s_ih + x0 * s_iw
    o01 = o00 + s_iw
    o10 = o00 + s_ih
    o11 = o10 + s_iw
    w00 = wy0 * wx0
    w01 = wy0 * wx1
    w10 = wy1 * wx0
    w11 = wy1 * wx1
    if HAS_MASK:
        m = tl.load(mask_ptr + b * s_kb + offs_n * s_kn, mask=n_ok, other=0.0).to(tl.float32)

    img_b = img_ptr + b * s_ib
    out_b = out_ptr + b * s_ob + offs_n * s_on
    for c in range(0, C):
        img_c = img_b + c * s_ic
        v = w00 * tl.load(img_c + o00, mask=ok00, other=0.0).to(tl.float32)
        v += w01 * tl.load(img_c + o01, mask=ok01, other=0.0).to(tl.float32)
        v += w10 * tl.load(img_c + o10, mask=ok10, other=0.0).to(tl.float32)
        v += w11 * tl.load(img_c + o11, mask=ok11, other=0.0).to(tl.float32)
        if HAS_MASK:
            v = v * m
        tl.store(out_b + c * s_oc, v.to(out_ptr.dtype.element_ty), mask=n_ok)


@triton.jit
def _stn_bwd_kernel(
    grad_ptr,
    img_ptr,
    pose_ptr,
    alpha_ptr,
    mean_ptr,
    basis_ptr,
    mask_ptr,
    part_ptr,
    dimg_ptr,
    N,
    K,
    C,
    H,
    W,
    s_gb,
    s_gc,
    s_gn,
    s_ib,
    s_ic,
    s_ih,
    s_iw,
    s_ab,
    s_ak,
    s_mn,
    s_md,
    s_bn,
    s_bd,
    s_bk,
    s_kb,
    s_kn,
    s_pb,
    s_pblk,
    s_db,
    s_dc,
    s_dh,
    s_dw,
    HAS_MASK: tl.constexpr,
    NEED_DIMG: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    pid_n = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N

    # Recompute X, Y and p exactly as the forward does.
    x, y, z = _synthesize(
        mean_ptr,
        basis_ptr,
        alpha_ptr,
        b,
        offs_n,
        n_ok,
        K,
        s_ab,
        s_ak,
        s_mn,
        s_md,
        s_bn,
        s_bd,
        s_bk,
        BLOCK_K,
    )
    r00, r01, r02, r10, r11, r12, s, tx, ty = _load_pose(pose_ptr, b)
    yx = r00 * x + r01 * y + r02 * z
    yy = r10 * x + r11 * y + r12 * z
    px = s * yx + tx
    py = -s * yy + ty

    x0, y0, wx1, wy1, ok00, ok01, ok10, ok11 = _taps(px, py, n_ok, H, W)
    wx0 = 1.0 - wx1
    wy0 = 1.0 - wy1
    o00 = y0 * s_ih + x0 * s_iw
    o01 = o00 + s_iw
    o10 = o00 + s_ih
    o11 = o10 + s_iw
    if HAS_MASK:
        m = tl.load(mask_ptr + b * s_kb + offs_n * s_kn, mask=n_ok, other=0.0).to(tl.float32)

    # d out / d p per channel, weighted by the upstream gradient and summed over channels.
    dpx = px * 0.0  # not tl.zeros: a jit library function, see _sum
    dpy = px * 0.0
    img_b = img_ptr + b * s_ib
    grad_b = grad_ptr + b * s_gb + offs_n * s_gn
    if NEED_DIMG:
        d00 = y0 * s_dh + x0 * s_dw
        d01 = d00 + s_dw
        d10 = d00 + s_dh
        d11 = d10 + s_dw
    for c in range(0, C):
        g = tl.load(grad_b + c * s_gc, mask=n_ok, other=0.0).to(tl.float32)
        if HAS_MASK:
            g = g * m
        img_c = img_b + c * s_ic
        v00 = tl.load(img_c + o00, mask=ok00, other=0.0).to(tl.float32)
        v01 = tl.load(img_c + o01, mask=ok01, other=0.0).to(tl.float32)
        v10 = tl.load(img_c + o10, mask=ok10, other=0.0).to(tl.float32)
        v11 = tl.load(img_c + o11, mask=ok11, other=0.0).to(tl.float32)
        dpx += g * ((v01 - v00) * wy0 + (v11 - v10) * wy1)
        dpy += g * ((v10 - v00) * wx0 + (v11 - v01) * wx1)
        if NEED_DIMG:
            dimg_c = dimg_ptr + b * s_db + c * s_dc
            tl.atomic_add(dimg_c + d00, g * (wy0 * wx0), mask=ok00)
            tl.atomic_add(dimg_c + d01, g * (wy0 * wx1), mask=ok01)
            tl.atomic_add(dimg_c + d10, g * (wy1 * wx0), mask=ok10)
            tl.atomic_add(dimg_c + d11, g * (wy1 * wx1), mask=ok11)

    # Chain to the pose and reduce over this program's vertices (padding lanes have dp = 0).
    dyx = s * dpx
    dyy = -s * dpy
    part = part_ptr + b * s_pb + pid_n * s_pblk
    tl.store(part + 0, _sum(dyx * x, axis=0))
    tl.store(part + 1, _sum(dyx * y, axis=0))
    tl.store(part + 2, _sum(dyx * z, axis=0))
    tl.store(part + 3, _sum(dyy * x, axis=0))
    tl.store(part + 4, _sum(dyy * y, axis=0))
    tl.store(part + 5, _sum(dyy * z, axis=0))
    tl.store(part + 6, _sum(dpx * yx - dpy * yy, axis=0))
    tl.store(part + 7, _sum(dpx, axis=0))
    tl.store(part + 8, _sum(dpy, axis=0))

    # d alpha_k = sum_n basis[n, :, k] . (R^T dY_n).
    dxx = r00 * dyx + r10 * dyy
    dxy = r01 * dyx + r11 * dyy
    dxz = r02 * dyx + r12 * dyy
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < K
        tile = basis_ptr + offs_n[:, None] * s_bn + offs_k[None, :] * s_bk
        t_ok = n_ok[:, None] & k_ok[None, :]
        acc = tl.load(tile, mask=t_ok, other=0.0).to(tl.float32) * dxx[:, None]
        acc += tl.load(tile + s_bd, mask=t_ok, other=0.0).to(tl.float32) * dxy[:, None]
        acc += tl.load(tile + 2 * s_bd, mask=t_ok, other=0.0).to(tl.float32) * dxz[:, None]
        tl.store(part + 9 + offs_k, _sum(acc, axis=0), mask=k_ok)


# The module's jit helpers, called by name from the kernels: swapped with ``_sum`` for an
# interpreted launch (see ``_launch``).
_JIT_HELPERS = ("_sum", "_synthesize", "_load_pose", "_taps")


# ---------------------------------------------------------------------------------------------
# Launchers


def _empty(*shape: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Allocation of every buffer the kernels must write in full (the tests poison it)."""
    return torch.empty(*shape, dtype=dtype, device=device)


_INTERPRETED: dict = {}


def _interpreted(fn):
    """The interpreted form of a jit function (cached)."""
    if not isinstance(fn, triton.runtime.jit.JITFunction):
        return fn  # already interpreted: triton was imported under TRITON_INTERPRET=1
    if fn not in _INTERPRETED:
        # lazy: triton's interpreter is needed only for CPU launches under TRITON_INTERPRET=1;
        # a CUDA install never loads it.
        from triton.runtime.interpreter import InterpretedFunction

        _INTERPRETED[fn] = InterpretedFunction(fn.fn)
    return _INTERPRETED[fn]


def _launch(kernel, grid, device: torch.device, *args, **kwargs) -> None:
    """Launch ``kernel`` on ``grid``; CPU tensors go through the Triton interpreter.

    Whether ``triton.jit`` builds compiled or interpreted functions is decided when triton and
    this module are imported; if ``TRITON_INTERPRET=1`` was set only later, the interpreted
    forms of the kernel, of its jit helpers and of ``tl.sum`` are built here from the same
    Python source (see ``_JIT_HELPERS``).
    """
    if device.type != "cpu":
        # Triton launches on the current CUDA device and its current stream: make them the
        # tensors' (cuda:1 tensors while cuda:0 is current would otherwise fault).
        with torch.cuda.device(device):
            kernel[grid](*args, **kwargs)
        return
    if not interpreter_on():
        raise RuntimeError(
            "The Triton STN kernels got CPU tensors; they run on CPU only under the Triton "
            "interpreter: set TRITON_INTERPRET=1, or use backend='reference'."
        )
    module = globals()
    compiled = {name: module[name] for name in _JIT_HELPERS}
    module.update({name: _interpreted(fn) for name, fn in compiled.items()})
    try:
        _interpreted(kernel)[grid](*args, **kwargs)
    finally:
        module.update(compiled)


def _block_k(k: int) -> int:
    return max(1, min(MAX_BLOCK_K, triton.next_power_of_2(max(k, 1))))


def _mask_args(mask: torch.Tensor | None, images: torch.Tensor):
    """(tensor, stride_b, stride_n, has_mask); a (N,) mask broadcasts with stride_b = 0."""
    if mask is None:
        return images, 0, 0, False  # any pointer: never read
    if mask.dtype == torch.bool:
        mask = mask.to(torch.float32)
    if mask.dim() == 1:
        return mask, 0, mask.stride(0), True
    return mask, mask.stride(0), mask.stride(1), True


def _check_launch(images, pose, alpha, mean, basis, mask):
    b, _, _, _ = images.shape
    n, three, k = basis.shape
    if images.dtype not in SUPPORTED_IMAGE_DTYPES:
        raise TypeError(
            f"the Triton STN kernels take float32 or bfloat16 images, got {images.dtype}."
        )
    if pose.shape != (b, POSE_SIZE) or pose.dtype != torch.float32 or not pose.is_contiguous():
        raise ValueError(f"pose must be a contiguous float32 ({b}, {POSE_SIZE}) tensor.")
    if three != 3 or mean.shape != (n, 3) or alpha.shape != (b, k):
        raise ValueError(
            f"inconsistent shapes: mean {tuple(mean.shape)}, basis {tuple(basis.shape)}, "
            f"alpha {tuple(alpha.shape)}, batch {b}."
        )
    if mask is not None and tuple(mask.shape) not in ((n,), (b, n)):
        raise ValueError(f"mask must be ({n},) or ({b}, {n}), got {tuple(mask.shape)}.")
    devices = {t.device for t in (images, pose, alpha, mean, basis) if t is not None}
    if mask is not None:
        devices.add(mask.device)
    if len(devices) != 1:
        raise ValueError(f"all tensors must be on one device, got {sorted(map(str, devices))}.")


def _model_args(alpha: torch.Tensor, basis: torch.Tensor):
    """Alpha and basis as launched: K = 0 gets one-element stand-ins (never read)."""
    if basis.shape[2] == 0:
        dummy = torch.zeros(1, dtype=torch.float32, device=basis.device)
        return dummy, (0, 0), dummy, (0, 0, 0)
    return alpha, alpha.stride(), basis, basis.stride()


def stn_fwd(
    images: torch.Tensor,
    pose: torch.Tensor,
    alpha: torch.Tensor,
    mean: torch.Tensor,
    basis: torch.Tensor,
    mask: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Launch the forward kernel.

    Args:
        images: (B, C, H, W) float32 or bfloat16, any strides.
        pose: (B, 12) float32 contiguous, ``[R row-major (9), s, t_x, t_y]`` (:func:`pack_pose`).
        alpha: (B, K) shape coefficients (any float dtype, any strides; read as float32).
        mean: (N, 3) mm. basis: (N, 3, K) mm per unit coefficient (read as float32).
        mask: (B, N) or (N,) float or bool weights, or None for ones.
        out: optional (B, C, N) buffer in the images' dtype to write into.

    Returns:
        (B, C, N) in the images' dtype: every element is written.
    """
    _check_launch(images, pose, alpha, mean, basis, mask)
    b, c, h, w = images.shape
    n, _, k = basis.shape
    if out is None:
        out = _empty(b, c, n, dtype=images.dtype, device=images.device)
    elif out.shape != (b, c, n) or out.dtype != images.dtype or out.device != images.device:
        raise ValueError(f"out must be a ({b}, {c}, {n}) {images.dtype} tensor on {images.device}.")
    if b == 0 or n == 0 or c == 0:
        return out
    mask_t, s_kb, s_kn, has_mask = _mask_args(mask, images)
    alpha_t, s_a, basis_t, s_b = _model_args(alpha, basis)
    grid = (b, triton.cdiv(n, FWD_BLOCK_N))
    _launch(
        _stn_fwd_kernel,
        grid,
        images.device,
        images,
        pose,
        alpha_t,
        mean,
        basis_t,
        mask_t,
        out,
        n,
        k,
        c,
        h,
        w,
        *images.stride(),
        *s_a,
        *mean.stride(),
        *s_b,
        s_kb,
        s_kn,
        *out.stride(),
        HAS_MASK=has_mask,
        BLOCK_N=FWD_BLOCK_N,
        BLOCK_K=_block_k(k),
        num_warps=FWD_NUM_WARPS,
    )
    return out


def stn_bwd(
    grad_out: torch.Tensor,
    images: torch.Tensor,
    pose: torch.Tensor,
    alpha: torch.Tensor,
    mean: torch.Tensor,
    basis: torch.Tensor,
    mask: torch.Tensor | None = None,
    need_images_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Launch the backward kernel and reduce its partial sums.

    Args:
        grad_out: (B, C, N), the upstream gradient (any float dtype, any strides).
        images, pose, alpha, mean, basis, mask: as for :func:`stn_fwd`.
        need_images_grad: also return d images.

    Returns:
        d pose (B, 12) float32 (rows 0 and 1 of dR, zeros for row 2, then ds, dt_x, dt_y),
        d alpha (B, K) float32, and d images (B, C, H, W) in the images' dtype or None.
    """
    _check_launch(images, pose, alpha, mean, basis, mask)
    b, c, h, w = images.shape
    n, _, k = basis.shape
    if grad_out.shape != (b, c, n):
        raise ValueError(f"grad_out must be ({b}, {c}, {n}), got {tuple(grad_out.shape)}.")
    dev = images.device
    n_blocks = triton.cdiv(n, BWD_BLOCK_N)
    partials = _empty(b, max(n_blocks, 1), N_POSE_PARTIALS + k, dtype=torch.float32, device=dev)
    dimg = torch.zeros(b, c, h, w, dtype=torch.float32, device=dev) if need_images_grad else None
    if n_blocks == 0 or b == 0:
        partials.zero_()
    else:
        mask_t, s_kb, s_kn, has_mask = _mask_args(mask, images)
        alpha_t, s_a, basis_t, s_b = _model_args(alpha, basis)
        dimg_t = dimg if dimg is not None else partials  # never written without NEED_DIMG
        grid = (b, n_blocks)
        _launch(
            _stn_bwd_kernel,
            grid,
            dev,
            grad_out,
            images,
            pose,
            alpha_t,
            mean,
            basis_t,
            mask_t,
            partials,
            dimg_t,
            n,
            k,
            c,
            h,
            w,
            *grad_out.stride(),
            *images.stride(),
            *s_a,
            *mean.stride(),
            *s_b,
            s_kb,
            s_kn,
            partials.stride(0),
            partials.stride(1),
            *(dimg.stride() if dimg is not None else (0, 0, 0, 0)),
            HAS_MASK=has_mask,
            NEED_DIMG=dimg is not None,
            BLOCK_N=BWD_BLOCK_N,
            BLOCK_K=_block_k(k),
            num_warps=BWD_NUM_WARPS,
        )
    sums = partials.sum(1)  # (B, 9 + K): the deterministic second stage of the reduction
    zeros = torch.zeros(b, 3, dtype=torch.float32, device=dev)
    d_pose = torch.cat([sums[:, 0:6], zeros, sums[:, 6:9]], 1)
    d_alpha = sums[:, N_POSE_PARTIALS:]
    d_images = dimg.to(images.dtype) if dimg is not None else None
    return d_pose, d_alpha, d_images


# ---------------------------------------------------------------------------------------------
# Autograd


NO_DOUBLE_BACKWARD = (
    "stn_flatten's fused Triton kernel has no double backward (its backward is "
    "once-differentiable); for higher-order gradients use stn_flatten(..., backend='reference') "
    "or STN(model, backend='reference')."
)


def _first_order_only(backward):
    """Like ``torch.autograd.function.once_differentiable``, but the error also fires when the
    upstream gradient does not require grad: the kernel's gradients depend on the pose, which
    does, so a second derivative through them would silently be wrong, not zero."""

    @functools.wraps(backward)
    def wrapper(ctx, *grad_outputs):
        with torch.no_grad():
            grads = backward(ctx, *grad_outputs)
        if not torch.is_grad_enabled():  # the usual case: create_graph=False
            return grads
        err_fn = torch._C._functions.DelayedError(NO_DOUBLE_BACKWARD.encode(), len(grads))
        fakes = []
        for g in grads:
            if g is not None:
                g = g.detach()
                g.requires_grad_(True)
            fakes.append(g)
        return tuple(err_fn(*fakes))

    return wrapper


class _STNFlattenFunction(torch.autograd.Function):
    """(images, pose, alpha, mean, basis, mask) -> (B, C, N) masked flattened image.

    Gradients: images (only when they require grad), pose, alpha. ``mean``, ``basis`` and
    ``mask`` get None: the model arrays are constants of the fused path (the public dispatch
    sends model arrays that require grad to the reference) and the mask is a constant by
    definition (visibility * inside). Double backward is not supported: with
    ``create_graph=True`` the gradients carry a node that raises ``NO_DOUBLE_BACKWARD`` when
    differentiated.
    """

    @staticmethod
    def forward(images, pose, alpha, mean, basis, mask):
        return stn_fwd(images, pose, alpha, mean, basis, mask)

    @staticmethod
    def setup_context(ctx, inputs, output):
        # Apart from forward, so that torch.func.grad / vjp can transform the function.
        images, pose, alpha, mean, basis, mask = inputs
        ctx.save_for_backward(images, pose, alpha, mean, basis, mask)
        ctx.alpha_dtype = alpha.dtype

    @staticmethod
    @_first_order_only
    def backward(ctx, grad_out):
        images, pose, alpha, mean, basis, mask = ctx.saved_tensors
        d_pose, d_alpha, d_images = stn_bwd(
            grad_out,
            images,
            pose,
            alpha,
            mean,
            basis,
            mask,
            need_images_grad=ctx.needs_input_grad[0],
        )
        return d_images, d_pose, d_alpha.to(ctx.alpha_dtype), None, None, None


def pack_pose(theta: torch.Tensor) -> torch.Tensor:
    """theta (B, 6 + K) -> pose (B, 12) float32 ``[R row-major (9), s, t_x, t_y]``.

    Differentiable (PyTorch ops): ``R = axis_angle_to_matrix(r)``, ``s = exp(log_s)``.
    """
    r, t, log_s, _ = split_theta(theta.float())  # bfloat16 / float16 theta: as the reference
    rot = axis_angle_to_matrix(r)
    pose = torch.cat([rot.reshape(-1, 9), torch.exp(log_s)[:, None], t], 1)
    return pose.to(torch.float32).contiguous()


def stn_flatten_triton(
    images: torch.Tensor,
    theta: torch.Tensor,
    mean: torch.Tensor,
    basis: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The fused path of :func:`stn_core.sampler.stn_flatten` (no validation, no dispatch):
    (B, C, N) in the images' dtype, differentiable in theta and in images."""
    pose = pack_pose(theta)
    alpha = theta[:, 6:]
    if mask is not None:
        mask = mask.detach()
    return _STNFlattenFunction.apply(images, pose, alpha, mean.detach(), basis.detach(), mask)
