"""Compile the fused STN kernels ahead of time for NVIDIA GPUs and report their resources.

No GPU is needed: Triton lowers each kernel to PTX and its bundled ``ptxas`` assembles the
cubin for the chosen architecture; ``cuobjdump --dump-resource-usage`` then gives the registers
per thread, the local memory (register spills) and the shared memory of every variant. This
is how the launch settings in ``stn_core/sampler/triton_kernels.py`` were chosen, and the test
suite uses it to check that every kernel variant compiles (``tests/stn_core/
test_triton_compile.py``): the Triton interpreter, which runs the kernels on the CPU, accepts
some programs that the compiler rejects.

Usage (from the repository root)::

    PYTHONPATH=packages/stn-core/src python tools/triton_report.py            # sm_80 and sm_90
    PYTHONPATH=packages/stn-core/src python tools/triton_report.py --arch 90 --block-k 1 4 16

Occupancy is the number of resident blocks per SM allowed by registers alone (65,536 32-bit
registers per SM, allocated per warp in units of 256): at least 2 keeps latency hidden for the
kernels' scattered image reads.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "packages" / "stn-core" / "src"))

REGISTERS_PER_SM = 65536
ARCHS = (80, 90)
IMAGE_DTYPES = ("fp32", "bf16")


def tool_path(name: str) -> Path:
    """A binary shipped in triton's NVIDIA backend (ptxas, cuobjdump)."""
    import triton

    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name


def toolchain_available() -> tuple[bool, str]:
    """(True, "") when triton, its NVIDIA backend and its binaries are here; else (False, why)."""
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return False, (
            "TRITON_INTERPRET is set: triton's jit functions are interpreted in this "
            "process; run without it"
        )
    try:
        import triton  # noqa: F401
        from triton.backends.compiler import GPUTarget  # noqa: F401
    except Exception as exc:  # not installed, or an unusable build
        return False, f"triton is not importable ({type(exc).__name__}: {exc})"
    for name in ("ptxas", "cuobjdump"):
        path = tool_path(name)
        if not (path.is_file() and os.access(path, os.X_OK)):
            return False, f"triton's bundled {name} is missing ({path})"
    return True, ""


def signature(kernel, pointer_types: dict, constexprs: dict) -> dict:
    """Argument types as Triton's launcher would specialise them for typical tensors."""
    sig = {}
    for name in kernel.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = pointer_types.get(name, "*fp32")
        else:
            sig[name] = "i32"  # sizes and strides of tensors under 2**31 elements
    return sig


def compile_kernel(
    kernel, arch: int, pointer_types: dict, constexprs: dict, num_warps: int
) -> dict:
    """Compile one variant to a cubin for ``sm_<arch>``; return its resource usage.

    Returns dict(regs, local, shared, stack, occupancy) (bytes for memories; occupancy as in
    the module docstring). Raises triton's CompilationError if the kernel does not compile.
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if not isinstance(kernel, triton.runtime.jit.JITFunction):
        raise RuntimeError(
            "the kernels were built for the Triton interpreter (triton was "
            "imported under TRITON_INTERPRET=1); compile in a fresh process"
        )
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # silence triton 3.9's notice
    src = ASTSource(kernel, signature(kernel, pointer_types, constexprs), constexprs)
    compiled = triton.compile(
        src, target=GPUTarget("cuda", arch, 32), options=dict(num_warps=num_warps)
    )
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        report = subprocess.run(
            [str(tool_path("cuobjdump")), "--dump-resource-usage", str(cubin)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    line = next(ln for ln in report.splitlines() if "REG:" in ln)
    usage = {
        key.lower(): int(val) for key, val in re.findall(r"\b(REG|LOCAL|SHARED|STACK):(\d+)", line)
    }
    regs_per_warp = -(-usage["reg"] * 32 // 256) * 256
    usage["occupancy"] = REGISTERS_PER_SM // (regs_per_warp * num_warps)
    return dict(
        regs=usage["reg"],
        local=usage["local"],
        shared=usage["shared"],
        stack=usage["stack"],
        occupancy=usage["occupancy"],
    )


def variants(block_ks=None):
    """Every launch variant of the two kernels: (name, kernel, pointer types, constexprs, warps)."""
    from stn_core.sampler import triton_kernels as tk

    block_ks = block_ks or sorted({tk._block_k(k) for k in (1, 2, 3, 10, 199)})
    for img, has_mask, bk in itertools.product(IMAGE_DTYPES, (True, False), block_ks):
        yield (
            f"forward  {img} mask={int(has_mask)} BLOCK_K={bk}",
            tk._stn_fwd_kernel,
            {"img_ptr": "*" + img, "out_ptr": "*" + img},
            dict(HAS_MASK=has_mask, BLOCK_N=tk.FWD_BLOCK_N, BLOCK_K=bk),
            tk.FWD_NUM_WARPS,
        )
    for img, has_mask, dimg, bk in itertools.product(
        IMAGE_DTYPES, (True, False), (True, False), block_ks
    ):
        yield (
            f"backward {img} mask={int(has_mask)} d_img={int(dimg)} BLOCK_K={bk}",
            tk._stn_bwd_kernel,
            {"img_ptr": "*" + img, "grad_ptr": "*" + img},
            dict(HAS_MASK=has_mask, NEED_DIMG=dimg, BLOCK_N=tk.BWD_BLOCK_N, BLOCK_K=bk),
            tk.BWD_NUM_WARPS,
        )


def compile_cases(cases) -> list[dict]:
    """Compile each ``(arch, "forward" | "backward", "fp32" | "bf16", constexprs)`` case.

    Returns one dict per case: the resource usage of :func:`compile_kernel` plus ``warps``, or
    ``{"error": message}`` when the variant does not exist or does not compile.
    """
    out = []
    for arch, kernel, image, constexprs in cases:
        found = None
        for name, fn, ptrs, consts, warps in variants(block_ks=[constexprs["BLOCK_K"]]):
            if (
                name.startswith(kernel)
                and ptrs["img_ptr"] == "*" + image
                and all(consts[k] == v for k, v in constexprs.items())
            ):
                found = fn, ptrs, consts, warps
                break
        if found is None:
            out.append(dict(error=f"no {kernel} variant with {image} and {constexprs}"))
            continue
        try:
            out.append(dict(compile_kernel(found[0], arch, *found[1:]), warps=found[3]))
        except Exception as exc:  # reported per case by the caller
            out.append(dict(error=f"{type(exc).__name__}: {exc}"))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--arch",
        type=int,
        nargs="+",
        default=list(ARCHS),
        help="compute capabilities, e.g. 80 (A100), 90 (H100, H200); default 80 90",
    )
    p.add_argument(
        "--block-k",
        type=int,
        nargs="+",
        default=None,
        help="BLOCK_K values (powers of two; default: those the launchers use)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    ok, why = toolchain_available()
    if not ok:
        print(f"cannot compile: {why}.", file=sys.stderr)
        return 2
    print(f"| {'arch':<6} | {'variant':<44} | regs | spills (local B) | shared B | blocks/SM |")
    print(f"| {'-' * 6} | {'-' * 44} | ---- | ---------------- | -------- | --------- |")
    rows = []
    for arch in args.arch:
        for name, kernel, ptrs, consts, warps in variants(args.block_k):
            u = compile_kernel(kernel, arch, ptrs, consts, warps)
            rows.append(dict(arch=arch, variant=name, **u))
            print(
                f"| sm_{arch:<3} | {name:<44} | {u['regs']:>4} | {u['local']:>16} | "
                f"{u['shared']:>8} | {u['occupancy']:>9} |",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
