"""The fused kernels compile for NVIDIA GPUs (ahead of time, no GPU needed), without spills.

The interpreter tests (test_fused_sampler.py) check the kernels' arithmetic on the CPU; the
interpreter runs the kernel bodies as Python and accepts programs that Triton's compiler
rejects (non-constexpr shapes, Python control flow over tensors, mixed types). Here every
launch family is lowered to PTX and assembled by triton's bundled ptxas for sm_90 (H100, H200)
and sm_80 (A100), with ``tools/triton_report.py``, and the cubin's resource usage is checked
against the assumptions of the launch settings: no register spills, and at least two resident
blocks per SM (the scattered image reads need latency hiding).

The compiler runs in a child process: a test process where triton was first imported under
``TRITON_INTERPRET=1`` (the interpreter tests set it) holds interpreted jit functions only.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

# One worker compiles all cases once (the fixture is module-scoped; make test runs xdist with
# --dist loadgroup).
pytestmark = pytest.mark.xdist_group("triton_compile")

HAS_TRITON = importlib.util.find_spec("triton") is not None
MIN_BLOCKS_PER_SM = 2
TOOLS = REPO / "tools"

# Every constexpr of each kernel takes each of its values in at least one case; BLOCK_K 4 is
# the largest tile (the most registers), BLOCK_K 1 the K <= 1 launch.
CASES = [
    (90, "forward", "fp32", dict(HAS_MASK=True, BLOCK_K=4)),
    (90, "forward", "bf16", dict(HAS_MASK=True, BLOCK_K=4)),
    (90, "forward", "fp32", dict(HAS_MASK=False, BLOCK_K=1)),
    (90, "backward", "fp32", dict(HAS_MASK=True, NEED_DIMG=True, BLOCK_K=4)),
    (90, "backward", "bf16", dict(HAS_MASK=True, NEED_DIMG=True, BLOCK_K=4)),
    (90, "backward", "bf16", dict(HAS_MASK=True, NEED_DIMG=False, BLOCK_K=4)),
    (90, "backward", "fp32", dict(HAS_MASK=False, NEED_DIMG=False, BLOCK_K=1)),
    (80, "forward", "bf16", dict(HAS_MASK=True, BLOCK_K=4)),
    (80, "backward", "bf16", dict(HAS_MASK=True, NEED_DIMG=True, BLOCK_K=4)),
]
CHILD = (
    "import json, sys; sys.path.insert(0, sys.argv[1]); import triton_report as r; "
    "ok, why = r.toolchain_available(); "
    "print(json.dumps(r.compile_cases(json.loads(sys.argv[2])) if ok else {'skip': why}))"
)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """The resource usage of every case, compiled in one child process."""
    if not HAS_TRITON:
        pytest.skip(
            "triton is not installed (pip install stn-core[triton]): the kernels cannot be compiled"
        )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path_factory.mktemp("triton-cache"))  # compile afresh
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "packages" / "stn-core" / "src"), env.get("PYTHONPATH", "")]
    )
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(TOOLS), json.dumps(CASES)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if isinstance(result, dict):
        pytest.skip(f"cannot compile for NVIDIA GPUs here: {result['skip']}")
    assert len(result) == len(CASES), result
    return result


@pytest.mark.parametrize(
    "case",
    range(len(CASES)),
    ids=[
        f"sm{a}-{k}-{i}-" + "-".join(f"{n}{int(v)}" for n, v in c.items()) for a, k, i, c in CASES
    ],
)
def test_compiles_without_spills(compiled, case):
    usage = compiled[case]
    assert "error" not in usage, usage["error"]
    assert usage["local"] == 0 and usage["stack"] == 0, f"register spills: {usage}"
    assert usage["regs"] > 0, usage
    assert usage["occupancy"] >= MIN_BLOCKS_PER_SM, (
        f"{usage['regs']} registers per thread x {usage['warps']} warps leave "
        f"{usage['occupancy']} block(s) per SM; retune BLOCK_N / BLOCK_K / num_warps in "
        "triton_kernels.py"
    )


def test_signature_covers_every_argument():
    """The report's signature builder types every kernel argument (a new argument would
    otherwise compile as a wrong type silently)."""
    if not HAS_TRITON:
        pytest.skip("triton is not installed (pip install stn-core[triton])")
    spec = importlib.util.spec_from_file_location("triton_report", TOOLS / "triton_report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    from stn_core.sampler import triton_kernels as tk

    for kernel in (tk._stn_fwd_kernel, tk._stn_bwd_kernel):
        sig = report.signature(kernel, {}, {"HAS_MASK": True})
        assert list(sig) == list(kernel.arg_names)
        pointers = [n for n in kernel.arg_names if n.endswith("_ptr")]
        assert len(pointers) >= 7 and all(sig[n] == "*fp32" for n in pointers)
        assert sig["HAS_MASK"] == "constexpr"
