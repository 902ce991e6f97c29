"""The fused Triton STN sampler against the PyTorch reference, and the dispatch between them.

The kernels run on the CPU under the Triton interpreter (``TRITON_INTERPRET=1``, set per test
through ``monkeypatch``; the launchers build the interpreted kernels on demand). Inputs are
fresh random draws on every run: the seed is in every failure message. Sizes are small and
awkward (prime image sides, prime or R*R vertex counts, K = 0) because the interpreter is slow.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from stn_core.errors import StnError
from stn_core.geometry import project_theta
from stn_core.sampler import _dispatch, select_backend, stn_flatten, stn_flatten_reference

from tests.tolerances import KERNEL_TOL, TOL

HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(
    not HAS_TRITON,
    reason="triton is not installed (pip install stn-core[triton]); the fused "
    "kernel cannot be tested against the reference without it",
)

BF16_TOL = TOL["bfloat16"]
# Sampling points closer than this (px) to an integer coordinate are redrawn: there the
# bilinear derivative jumps, and float32 rounding could put kernel and reference on
# different sides of the jump.
TAP_EDGE_MARGIN = 2e-4


# ---------------------------------------------------------------------------------------------
# Helpers


def _near_tap_edge(theta, mean, basis):
    """(B, N) bool: points within TAP_EDGE_MARGIN px of an integer coordinate."""
    pts, _ = project_theta(theta.double(), mean.double(), basis.double())
    frac = pts - torch.floor(pts)
    return (torch.minimum(frac, 1 - frac) <= TAP_EDGE_MARGIN).any(-1)


def _draw(B, C, H, W, N, K, mask_kind="batch", seed=None):
    """Random inputs with points partly outside the image and none on a tap edge (where the
    bilinear derivative jumps): t moves by a fraction of a pixel until no point is near one,
    or, for large N (mask_kind "edges"), a random (B, N) mask is zeroed at those points."""
    if seed is None:
        seed = torch.seed()
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(B, C, H, W, generator=g)
    s = 1.0 + 0.1 * torch.rand(B, generator=g)
    # The mean spreads over 1.5x the image, so roughly a third of the points fall outside.
    mean = (torch.rand(N, 3, generator=g) - 0.5) * torch.tensor([1.5 * W, 1.5 * H, 20.0])
    basis = torch.randn(N, 3, K, generator=g) * 0.8
    theta = torch.empty(B, 6 + K)
    theta[:, 0:3] = torch.randn(B, 3, generator=g) * 0.25
    theta[:, 3] = (W - 1) / 2 + torch.randn(B, generator=g) * 2
    theta[:, 4] = (H - 1) / 2 + torch.randn(B, generator=g) * 2
    theta[:, 5] = torch.log(s)
    theta[:, 6:] = torch.randn(B, K, generator=g)
    if mask_kind != "edges":
        for b in range(B):
            for _ in range(1000):
                if not _near_tap_edge(theta[b : b + 1], mean, basis).any():
                    break
                theta[b, 3:5] += torch.rand(2, generator=g) * 0.01
            else:
                raise RuntimeError(f"no tap-edge-free draw for N = {N}; use mask_kind='edges'")
    if mask_kind in ("batch", "edges"):
        mask = torch.rand(B, N, generator=g) * (torch.rand(B, N, generator=g) > 0.25)
        if mask_kind == "edges":
            mask[_near_tap_edge(theta, mean, basis)] = 0
    elif mask_kind == "shared":
        mask = (torch.rand(N, generator=g) > 0.25).float()
    elif mask_kind == "bool":
        mask = torch.rand(B, N, generator=g) > 0.25
    else:
        mask = None
    pts, _ = project_theta(theta.double(), mean.double(), basis.double())
    outside = (pts[..., 0] < -1) | (pts[..., 0] > W) | (pts[..., 1] < -1) | (pts[..., 1] > H)
    assert 0 < outside.sum() < outside.numel(), f"inputs should be partly outside; seed {seed}"
    return dict(images=images, theta=theta, mean=mean, basis=basis, mask=mask), seed


def _assert_close(actual, expected, tol, what, seed, scale=None):
    """|actual - expected| <= atol + rtol |expected| elementwise (after dividing both by
    ``scale``), reporting where the worst element is; NaN never passes."""
    a = actual.detach().double()
    e = expected.detach().double()
    assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)} != {tuple(e.shape)}"
    nan = torch.isnan(a)
    if nan.any():
        idx = tuple(int(i) for i in torch.nonzero(nan)[0])
        raise AssertionError(
            f"{what}: {int(nan.sum())} NaN (unwritten or invalid) elements, first at index "
            f"{idx}; seed {seed}"
        )
    if scale is not None:
        a, e = a / scale, e / scale
    rtol, atol = tol
    excess = (a - e).abs() - (atol + rtol * e.abs())
    if excess.max() > 0:
        flat = int(torch.argmax(excess))
        idx = tuple(int(i) for i in np.unravel_index(flat, tuple(a.shape)))
        raise AssertionError(
            f"{what}: {int((excess > 0).sum())} of {a.numel()} elements off; worst at index "
            f"{idx}: got {a[idx].item():.8g}, expected {e[idx].item():.8g} "
            f"(|diff| {abs(a[idx] - e[idx]).item():.3g}, rtol {rtol}, atol {atol}"
            f"{', scaled' if scale is not None else ''}); seed {seed}"
        )


def _assert_norm_close(actual, expected, rtol, what, seed):
    """||actual - expected|| <= rtol ||expected|| (Frobenius), reporting the worst element."""
    a, e = actual.detach().double(), expected.detach().double()
    assert not torch.isnan(a).any(), f"{what}: NaN in the result; seed {seed}"
    rel = ((a - e).norm() / e.norm()).item()
    if rel > rtol:
        flat = int(torch.argmax((a - e).abs()))
        idx = tuple(int(i) for i in np.unravel_index(flat, tuple(a.shape)))
        raise AssertionError(
            f"{what}: relative error {rel:.3g} > {rtol}; worst element at index {idx}: got "
            f"{a[idx].item():.8g}, expected {e[idx].item():.8g}; seed {seed}"
        )


def _assert_bf16_rounding(actual, reference32, what, seed, scale=None):
    """``actual`` (bfloat16) is ``reference32`` (float32 arithmetic on the same bfloat16
    inputs) rounded once to bfloat16: within one bfloat16 ulp of it (round-to-nearest gives
    half an ulp on a GPU; the Triton interpreter truncates, up to a whole ulp) plus the float32
    kernel-vs-reference difference before rounding (KERNEL_TOL, after dividing by ``scale``).
    A bfloat16 accumulation would be off by several ulps."""
    assert actual.dtype == torch.bfloat16, f"{what}: dtype {actual.dtype}"
    a, e = actual.detach().double(), reference32.detach().double()
    assert not torch.isnan(a).any(), f"{what}: NaN (unwritten) elements; seed {seed}"
    if scale is None:
        scale = torch.ones((), dtype=torch.float64)
    tiny = torch.finfo(torch.bfloat16).tiny
    ulp = 2.0 ** (torch.floor(torch.log2(e.abs().clamp_min(tiny))) - 7)  # 8 significant bits
    rtol, atol = KERNEL_TOL
    excess = (a - e).abs() - (ulp + (atol + rtol * (e / scale).abs()) * scale)
    if excess.max() > 0:
        idx = tuple(int(i) for i in np.unravel_index(int(torch.argmax(excess)), tuple(a.shape)))
        raise AssertionError(
            f"{what}: {int((excess > 0).sum())} of {a.numel()} elements more than one bfloat16 "
            f"ulp off; worst at {idx}: got {a[idx].item():.8g}, float32 reference "
            f"{e[idx].item():.8g} (ulp {ulp[idx].item():.3g}); seed {seed}"
        )


def _max_scale(grad):
    """The largest magnitude of an image gradient: a pixel sums many vertices' random-sign
    contributions, so its rounding error scales with them, not with the (cancelled) sum."""
    return grad.detach().double().abs().max().clamp_min(1e-30)


def _column_scale(grad):
    """Per-column largest magnitude of a (B, P) gradient (1 where the column is all zero)."""
    m = grad.detach().double().abs().amax(0, keepdim=True)
    return torch.where(m > 0, m, torch.ones_like(m))


def _run(backend, inp, images_dtype, grad_out, images_grad):
    """Forward and backward through stn_flatten; returns (out, d theta, d images)."""
    images = inp["images"].to(images_dtype).detach().requires_grad_(images_grad)
    theta = inp["theta"].clone().requires_grad_(True)
    out = stn_flatten(images, theta, inp["mean"], inp["basis"], inp["mask"], backend=backend)
    out.backward(grad_out.to(out.dtype))
    return out, theta.grad, images.grad


@pytest.fixture
def interpreter(monkeypatch):
    """Run the Triton kernels on CPU tensors through the interpreter."""
    if not HAS_TRITON:
        pytest.skip("triton is not installed (pip install stn-core[triton]): no kernel to test")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    from stn_core.sampler import triton_kernels

    return triton_kernels


@pytest.fixture
def poison(interpreter, monkeypatch):
    """Every buffer the kernels must fill is handed over full of NaN."""

    def nan_empty(*shape, dtype, device):
        return torch.full(shape, float("nan"), dtype=dtype, device=device)

    monkeypatch.setattr(interpreter, "_empty", nan_empty)
    return interpreter


# ---------------------------------------------------------------------------------------------
# Kernel vs reference

# (B, C, H, W, N, K, mask kind): B in {1, 3}, C in {1, 3}, prime image sides, N prime or R*R
# (R = 11, 23; 529 spans several vertex blocks of both kernels), K = 0, 1, 7 and 19 (two K
# chunks, the second partial).
CASES = [
    (1, 1, 37, 41, 97, 0, "none"),
    (3, 3, 37, 41, 121, 7, "batch"),
    (1, 3, 41, 37, 97, 1, "shared"),
    (3, 1, 29, 31, 529, 19, "bool"),
]


@needs_triton
class TestFusedVsReference:
    @pytest.mark.parametrize("case", CASES, ids=lambda c: "B{}C{}H{}W{}N{}K{}-{}".format(*c))
    def test_float32_forward_backward(self, poison, case):
        B, C, H, W, N, K, mask_kind = case
        inp, seed = _draw(B, C, H, W, N, K, mask_kind)
        grad_out = torch.randn(B, C, N)
        out_k, dth_k, dim_k = _run("triton", inp, torch.float32, grad_out, images_grad=True)
        out_r, dth_r, dim_r = _run("reference", inp, torch.float32, grad_out, images_grad=True)
        _assert_close(out_k, out_r, KERNEL_TOL, "forward", seed)
        _assert_close(dth_k, dth_r, KERNEL_TOL, "d theta", seed, scale=_column_scale(dth_r))
        _assert_close(dim_k, dim_r, KERNEL_TOL, "d images", seed, scale=_max_scale(dim_r))

    def test_images_without_grad(self, poison):
        inp, seed = _draw(3, 3, 37, 41, 121, 7)
        grad_out = torch.randn(3, 3, 121)
        out_k, dth_k, dim_k = _run("triton", inp, torch.float32, grad_out, images_grad=False)
        _, dth_r, _ = _run("reference", inp, torch.float32, grad_out, images_grad=False)
        assert dim_k is None
        _assert_close(dth_k, dth_r, KERNEL_TOL, "d theta", seed, scale=_column_scale(dth_r))

    def test_bfloat16_same_images(self, poison):
        """bf16 images in both: the output rounds once to bf16; gradients agree in float32."""
        inp, seed = _draw(3, 3, 37, 41, 121, 7)
        grad_out = torch.randn(3, 3, 121).to(torch.bfloat16)
        out_k, dth_k, dim_k = _run("triton", inp, torch.bfloat16, grad_out, images_grad=True)
        out_r, dth_r, dim_r = _run("reference", inp, torch.bfloat16, grad_out, images_grad=True)
        assert out_k.dtype == torch.bfloat16 and dim_k.dtype == torch.bfloat16
        # Forward and d images against float32 arithmetic on the same (bf16-valued) inputs.
        same = dict(inp, images=inp["images"].bfloat16().float())
        out_32, _, dim_32 = _run(
            "reference", same, torch.float32, grad_out.float(), images_grad=True
        )
        _assert_bf16_rounding(out_k, out_32, "forward (bf16)", seed)
        _assert_bf16_rounding(dim_k, dim_32, "d images (bf16)", seed, scale=_max_scale(dim_32))
        _assert_close(out_k, out_r, BF16_TOL, "forward (bf16)", seed)
        _assert_close(
            dth_k, dth_r, KERNEL_TOL, "d theta (bf16 images)", seed, scale=_column_scale(dth_r)
        )
        _assert_close(dim_k, dim_r, BF16_TOL, "d images (bf16)", seed, scale=_max_scale(dim_r))

    def test_bfloat16_vs_float32_reference(self, poison):
        """bf16 images in the kernel against the float32 reference on the unrounded images:
        the output elementwise within the bf16 tolerance; d theta, a sum of image differences
        in which rounding the images to bf16 moves single entries by a few percent (seen over
        200 draws: at most 0.7% in norm), within the bf16 rtol in norm."""
        inp, seed = _draw(3, 3, 37, 41, 121, 7)
        grad_out = torch.randn(3, 3, 121).to(torch.bfloat16).float()  # the same upstream grad
        out_k, dth_k, _ = _run("triton", inp, torch.bfloat16, grad_out, images_grad=False)
        out_r, dth_r, _ = _run("reference", inp, torch.float32, grad_out, images_grad=False)
        _assert_close(out_k, out_r, BF16_TOL, "forward (bf16 vs float32)", seed)
        _assert_norm_close(dth_k, dth_r, BF16_TOL[0], "d theta (bf16 vs float32)", seed)

    def test_non_contiguous_inputs(self, poison):
        """Strided images (channels-last), a strided basis and alpha inside a wider theta."""
        inp, seed = _draw(3, 3, 29, 31, 97, 7)
        inp["images"] = inp["images"].contiguous(memory_format=torch.channels_last)
        wide = torch.randn(97, 3, 14)
        wide[:, :, ::2] = inp["basis"]
        inp["basis"] = wide[:, :, ::2]
        assert not inp["basis"].is_contiguous()
        grad_out = torch.randn(3, 97, 3).transpose(1, 2)  # a strided upstream gradient
        out_k, dth_k, dim_k = _run("triton", inp, torch.float32, grad_out, images_grad=True)
        out_r, dth_r, dim_r = _run("reference", inp, torch.float32, grad_out, images_grad=True)
        _assert_close(out_k, out_r, KERNEL_TOL, "forward (strided)", seed)
        _assert_close(
            dth_k, dth_r, KERNEL_TOL, "d theta (strided)", seed, scale=_column_scale(dth_r)
        )
        _assert_close(dim_k, dim_r, KERNEL_TOL, "d images (strided)", seed, scale=_max_scale(dim_r))

    def test_poisoned_out_buffer(self, interpreter):
        """stn_fwd(out=...) writes every element, zeros outside the image and under the mask."""
        inp, seed = _draw(3, 3, 37, 41, 121, 7)
        pose = interpreter.pack_pose(inp["theta"])
        out = torch.full((3, 3, 121), float("nan"))
        interpreter.stn_fwd(
            inp["images"],
            pose,
            inp["theta"][:, 6:],
            inp["mean"],
            inp["basis"],
            inp["mask"],
            out=out,
        )
        ref = stn_flatten_reference(
            inp["images"], inp["theta"], inp["mean"], inp["basis"], inp["mask"]
        )
        _assert_close(out, ref, KERNEL_TOL, "forward into a NaN-filled buffer", seed)
        assert (out == 0).any(), f"expected some exact zeros (masked or outside); seed {seed}"

    def test_no_gradient_for_model_arrays_and_mask(self, interpreter):
        inp, _ = _draw(1, 1, 29, 31, 97, 1)
        mask = inp["mask"].clone().requires_grad_(True)
        theta = inp["theta"].clone().requires_grad_(True)
        out = stn_flatten(inp["images"], theta, inp["mean"], inp["basis"], mask, backend="triton")
        out.sum().backward()
        assert theta.grad is not None and mask.grad is None

    def test_double_backward_raises(self, interpreter):
        inp, _ = _draw(1, 1, 29, 31, 97, 1)
        theta = inp["theta"].clone().requires_grad_(True)
        out = stn_flatten(inp["images"], theta, inp["mean"], inp["basis"], backend="triton")
        (g,) = torch.autograd.grad(out.sum(), theta, create_graph=True)
        with pytest.raises(RuntimeError, match="no double backward"):
            g.sum().backward()


@needs_triton
@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA device: the compiled kernels are checked on the CPU under the interpreter only",
)
class TestFusedOnCuda:
    """The compiled kernels on a GPU, at a realistic size (224 x 224 images, R = 112)."""

    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
    def test_matches_reference(self, dtype, monkeypatch):
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
        inp, seed = _draw(5, 3, 223, 227, 112 * 112, 10, mask_kind="edges")
        inp = {k: (v.cuda() if v is not None else None) for k, v in inp.items()}
        grad_out = torch.randn(5, 3, 112 * 112, device="cuda")
        assert select_backend(inp["images"], inp["theta"], inp["mean"], inp["basis"]) == "triton"
        out_k, dth_k, dim_k = _run("auto", inp, dtype, grad_out, images_grad=True)
        out_r, dth_r, dim_r = _run("reference", inp, dtype, grad_out, images_grad=True)
        tol = KERNEL_TOL if dtype == torch.float32 else BF16_TOL
        _assert_close(out_k, out_r, tol, f"forward on CUDA ({dtype})", seed)
        _assert_close(
            dth_k, dth_r, KERNEL_TOL, f"d theta on CUDA ({dtype})", seed, scale=_column_scale(dth_r)
        )
        _assert_close(
            dim_k, dim_r, tol, f"d images on CUDA ({dtype})", seed, scale=_max_scale(dim_r)
        )


# ---------------------------------------------------------------------------------------------
# Dispatch


class TestDispatch:
    def test_cpu_goes_to_reference(self):
        inp, seed = _draw(1, 3, 29, 31, 97, 7)
        assert select_backend(inp["images"], inp["theta"], inp["mean"], inp["basis"]) == "reference"
        out = stn_flatten(**inp)
        ref = stn_flatten_reference(**inp)
        assert torch.equal(out, ref), f"seed {seed}"

    def test_cpu_goes_to_reference_even_with_interpreter(self, monkeypatch):
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        inp, _ = _draw(1, 1, 29, 31, 97, 1)
        assert select_backend(inp["images"], inp["theta"], inp["mean"], inp["basis"]) == "reference"

    def test_deterministic_mode_goes_to_reference(self, monkeypatch):
        """On CUDA tensors (simulated: the device test is patched) deterministic mode takes the
        reference, and the kernel otherwise."""
        if not HAS_TRITON:
            pytest.skip("triton is not installed: the auto dispatch never picks the kernel")
        monkeypatch.setenv("TRITON_INTERPRET", "1")  # lets the kernel path accept CPU tensors
        monkeypatch.setattr(_dispatch, "_on_cuda", lambda t: True)
        inp, _ = _draw(1, 1, 29, 31, 97, 1)
        args = (inp["images"], inp["theta"], inp["mean"], inp["basis"])
        assert select_backend(*args) == "triton"
        was = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)
        try:
            assert select_backend(*args) == "reference"
        finally:
            torch.use_deterministic_algorithms(was)

    def test_unsupported_calls_go_to_reference(self, monkeypatch):
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        monkeypatch.setattr(_dispatch, "_on_cuda", lambda t: True)
        inp, _ = _draw(1, 1, 29, 31, 97, 1)
        im, th, mean, basis = inp["images"], inp["theta"], inp["mean"], inp["basis"]
        assert select_backend(im.double(), th.double(), mean, basis) == "reference"
        assert select_backend(im, th, mean, basis.clone().requires_grad_(True)) == "reference"

    def test_torch_func_transforms_go_to_reference(self, monkeypatch):
        """Under torch.func (functorch-wrapped tensors, whose memory a kernel cannot read) the
        auto dispatch takes the reference, and backend='triton' says why it cannot run."""
        if not HAS_TRITON:
            pytest.skip("triton is not installed: the auto dispatch never picks the kernel")
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        monkeypatch.setattr(_dispatch, "_on_cuda", lambda t: True)
        inp, seed = _draw(1, 3, 29, 31, 97, 7)
        grad_out = torch.randn(1, 3, 97)
        seen = []

        def loss(theta, backend):
            seen.append(
                select_backend(
                    inp["images"], theta, inp["mean"], inp["basis"], inp["mask"], backend="auto"
                )
            )
            out = stn_flatten(
                inp["images"], theta, inp["mean"], inp["basis"], inp["mask"], backend=backend
            )
            return (out * grad_out).sum()

        assert select_backend(inp["images"], inp["theta"], inp["mean"], inp["basis"]) == "triton"
        auto = torch.func.grad(loss)(inp["theta"], "auto")
        assert seen == ["reference"]
        _, expected, _ = _run("reference", inp, torch.float32, grad_out, images_grad=False)
        _assert_close(
            auto, expected, TOL[np.float32], "torch.func.grad", seed, scale=_column_scale(expected)
        )
        with pytest.raises(StnError, match="torch.func"):
            torch.func.grad(loss)(inp["theta"], "triton")

    def test_low_precision_theta_on_the_kernel(self, poison):
        """bfloat16 theta (a localiser's output under autocast): both paths read it as
        float32, so they agree as for float32 theta, and d theta comes back in bfloat16."""
        inp, seed = _draw(3, 3, 37, 41, 121, 7)
        inp["theta"] = inp["theta"].bfloat16()
        # Rounding theta moved the points: mask those now near a tap edge (see _draw).
        inp["mask"][_near_tap_edge(inp["theta"].float(), inp["mean"], inp["basis"])] = 0
        grad_out = torch.randn(3, 3, 121)
        out_k, dth_k, _ = _run("triton", inp, torch.float32, grad_out, images_grad=False)
        out_r, dth_r, _ = _run("reference", inp, torch.float32, grad_out, images_grad=False)
        assert dth_k.dtype == dth_r.dtype == torch.bfloat16
        _assert_close(out_k, out_r, KERNEL_TOL, "forward (bf16 theta)", seed)
        # Both gradients are float32 sums rounded to bf16: within one bf16 rounding.
        _assert_close(
            dth_k, dth_r, BF16_TOL, "d theta (bf16 theta)", seed, scale=_column_scale(dth_r)
        )

    def test_triton_on_cpu_without_interpreter_is_a_clear_error(self, monkeypatch):
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
        inp, _ = _draw(1, 1, 29, 31, 97, 1)
        expected = "TRITON_INTERPRET=1" if HAS_TRITON else "triton is not importable"
        with pytest.raises(StnError, match=expected):
            stn_flatten(**inp, backend="triton")

    @needs_triton
    def test_launcher_on_cpu_without_interpreter_is_a_clear_error(self, monkeypatch):
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
        from stn_core.sampler import triton_kernels

        inp, _ = _draw(1, 1, 29, 31, 97, 1)
        pose = triton_kernels.pack_pose(inp["theta"])
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
            triton_kernels.stn_fwd(
                inp["images"], pose, inp["theta"][:, 6:], inp["mean"], inp["basis"]
            )

    def test_unknown_backend(self):
        inp, _ = _draw(1, 1, 29, 31, 97, 1)
        with pytest.raises(StnError, match="backend must be one of"):
            stn_flatten(**inp, backend="cuda")

    def test_triton_float64_is_a_clear_error(self, monkeypatch):
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        inp, _ = _draw(1, 1, 29, 31, 97, 1)
        with pytest.raises(StnError, match="backend='triton' cannot run"):
            stn_flatten(
                inp["images"].double(),
                inp["theta"].double(),
                inp["mean"],
                inp["basis"],
                backend="triton",
            )

    def test_imports_and_runs_without_triton(self):
        """stn-core imports and computes with triton unimportable (it is an optional extra)."""
        code = textwrap.dedent(
            """
            import sys
            sys.modules["triton"] = None  # makes `import triton` raise ImportError
            import torch
            from stn_core.sampler import stn_flatten, triton_available
            assert not triton_available()
            out = stn_flatten(torch.rand(1, 1, 5, 5), torch.zeros(1, 6), torch.zeros(4, 3),
                              torch.zeros(4, 3, 0))
            assert out.shape == (1, 1, 4)
            try:
                stn_flatten(torch.rand(1, 1, 5, 5), torch.zeros(1, 6), torch.zeros(4, 3),
                            torch.zeros(4, 3, 0), backend="triton")
            except ValueError as e:
                assert "triton is not importable" in str(e), e
            else:
                raise AssertionError("backend='triton' without triton should raise")
            """
        )
        res = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
        )
        assert res.returncode == 0, res.stderr[-2000:]
