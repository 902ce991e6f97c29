"""The dependency direction of ARCHITECTURE.md, checked by importing every module with the
forbidden packages made unimportable (in a fresh interpreter, so nothing is cached)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"blocked by the test: {{name}}")
sys.meta_path.insert(0, Block())
import importlib, pkgutil, {package}
names = [{package!r}] + [
    m.name for m in pkgutil.walk_packages({package}.__path__, {package!r} + ".")
]
for name in names:
    if name in {skip!r}:
        continue
    importlib.import_module(name)
print(len(names))
"""


def _import_all(package: str, blocked: set[str], skip: set[str] = frozenset()) -> int:
    code = BLOCKER.format(package=package, blocked=sorted(blocked), skip=sorted(skip))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"importing {package} needed a forbidden package:\n{proc.stderr}"
    return int(proc.stdout.strip().splitlines()[-1])


def test_stn_core_needs_only_torch_numpy_h5py():
    # triton is optional: only the kernel module imports it, and it is loaded lazily.
    n = _import_all(
        "stn_core",
        blocked={
            "scipy",
            "bfm_prep",
            "stn_train",
            "matplotlib",
            "triton",
            "igl",
            "trimesh",
            "typer",
            "PIL",
        },
        skip={"stn_core.sampler.triton_kernels"},
    )
    assert n > 10


def test_bfm_prep_does_not_import_torch():
    n = _import_all(
        "bfm_prep", blocked={"torch", "stn_core", "stn_train", "triton"}, skip={"bfm_prep.__main__"}
    )
    assert n > 10


@pytest.mark.parametrize("package", ["stn_core", "bfm_prep"])
def test_nothing_imports_stn_train(package):
    import importlib

    mod = importlib.import_module(package)
    for info in pkgutil.walk_packages(mod.__path__, package + "."):
        if info.name.endswith("__main__") or info.name.endswith("triton_kernels"):
            continue
        source = importlib.util.find_spec(info.name).origin
        with open(source, encoding="utf-8") as f:
            text = f.read()
        assert "import stn_train" not in text and "from stn_train" not in text, info.name
