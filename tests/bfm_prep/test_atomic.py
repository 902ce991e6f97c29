"""Atomic writing (bfm_prep.atomic): a failed or interrupted write leaves no file, no
temporary file and an existing file unchanged; written files follow the umask."""

from __future__ import annotations

import ast
import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from bfm_prep.artifact import write_model
from bfm_prep.atomic import atomic_file, atomic_h5, atomic_path, atomic_write_bytes
from bfm_prep.errors import PrepError

from tests.bfm_prep.test_artifact import random_model


class TestAtomicWrite:
    def test_interrupted_write_leaves_nothing(self, tmp_path):
        target = tmp_path / "out.h5"
        with pytest.raises(RuntimeError):
            with atomic_h5(target) as f:
                f.create_dataset("x", data=np.zeros(3))
                raise RuntimeError("interrupted")
        assert not target.exists()
        assert os.listdir(tmp_path) == []

    def test_written_file_follows_umask(self, tmp_path):
        old = os.umask(0o022)
        try:
            path = write_model(tmp_path / "m.h5", random_model(np.random.default_rng()))
        finally:
            os.umask(old)
        assert path.stat().st_mode & 0o777 == 0o644

    def test_existing_file_survives_failed_overwrite(self, tmp_path):
        m = random_model(np.random.default_rng())
        path = write_model(tmp_path / "m.h5", m)
        before = path.read_bytes()
        with pytest.raises(RuntimeError):
            with atomic_h5(path):
                raise RuntimeError("interrupted")
        assert path.read_bytes() == before


class TestEveryWriter:
    """The byte and file writers (pictures, meshes, pairs, the synthetic files) behave like the
    HDF5 one: all of them are :func:`atomic_path`."""

    def test_bytes_written_whole_into_a_new_folder(self, tmp_path):
        target = tmp_path / "new" / "deeper" / "x.png"
        assert atomic_write_bytes(target, b"\x89PNG data") == target
        assert target.read_bytes() == b"\x89PNG data"
        assert os.listdir(target.parent) == ["x.png"]

    @pytest.mark.parametrize("error", [RuntimeError("interrupted"), KeyboardInterrupt()])
    def test_failed_file_leaves_nothing_and_keeps_the_old_one(self, tmp_path, error):
        target = tmp_path / "x.obj"
        target.write_bytes(b"old")
        with pytest.raises(type(error)):
            with atomic_file(target) as f:
                f.write(b"half of a ne")
                raise error
        assert target.read_bytes() == b"old"
        assert os.listdir(tmp_path) == ["x.obj"]

    def test_temporary_file_is_beside_the_target_and_hidden(self, tmp_path):
        with atomic_path(tmp_path / "m.h5") as tmp:
            assert tmp.parent == tmp_path
            assert tmp.name.startswith(".m.h5.") and tmp.name.endswith(".tmp")
            tmp.write_bytes(b"x")
        assert os.listdir(tmp_path) == ["m.h5"]


# ---------------------------------------------------------------------------------------------
# no writer bypasses it

SRC = Path(__file__).resolve().parents[2] / "packages" / "bfm-prep" / "src" / "bfm_prep"
# Calls that write to their first argument, and the calls that write or replace files.
WRITE_TO_FIRST_ARGUMENT = {"savefig", "save", "savemat", "savez", "imsave"}
WRITING = {"write_text", "write_bytes", "os.replace", "os.rename", "shutil.move"}


def bypasses(source: str) -> list[str]:
    """The writes in ``source`` that do not go through bfm_prep.atomic: open() or h5py.File
    in a write mode, a file-system replace, or a save whose target is neither an in-memory
    buffer nor an atomic handle."""
    tree = ast.parse(source)
    safe = set()  # names bound to io.BytesIO() or to an atomic handle
    for node in ast.walk(tree):
        if isinstance(node, ast.withitem) and isinstance(node.optional_vars, ast.Name):
            if "atomic" in ast.unparse(node.context_expr):
                safe.add(node.optional_vars.id)
        if isinstance(node, ast.Assign) and "BytesIO" in ast.unparse(node.value):
            safe |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        qualified = ast.unparse(func)
        modes = [a.value for a in node.args[1:2] if isinstance(a, ast.Constant)]
        modes += [k.value.value for k in node.keywords if k.arg == "mode"]
        writes = any(set(str(m)) & set("wax+") for m in modes)
        first = node.args[0] if node.args else None
        if (
            (name in ("open", "File") and writes)
            or name in WRITING
            or qualified in WRITING
            or (
                name in WRITE_TO_FIRST_ARGUMENT
                and not (isinstance(first, ast.Name) and first.id in safe)
            )
        ):
            found.append(ast.unparse(node))
    return found


def test_every_output_file_goes_through_the_atomic_writer():
    found = [
        f"{path.relative_to(SRC)}: {call}"
        for path in sorted(SRC.rglob("*.py"))
        if path.name != "atomic.py"
        for call in bypasses(path.read_text(encoding="utf-8"))
    ]
    assert not found, "writes that bypass bfm_prep.atomic: " + "; ".join(found)


def test_the_check_sees_a_bypass():
    source = (
        "def f(p, fig, image):\n"
        "    open(p, 'w').write('x')\n"
        "    fig.savefig(p)\n"
        "    p.write_text('y')\n"
        "    os.replace(p, p)\n"
        "    name = p.name.replace('x', 'y')\n"
        "    buf = io.BytesIO()\n"
        "    image.save(buf)\n"
        "    with atomic_file(p) as f:\n"
        "        scipy.io.savemat(f, {})\n"
    )
    assert len(bypasses(source)) == 4, bypasses(source)


def test_a_terminated_command_leaves_no_temporary_file(tmp_path):
    """SIGTERM in the middle of writing a file (here the synthetic model's first .mat): the
    command exits 143 and leaves neither the file nor its temporary file."""
    out = tmp_path / "synth"
    script = f"""
import os, signal, time
import scipy.io
real = scipy.io.savemat
def savemat_then_killed(f, *a, **k):
    real(f, *a, **k)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)
scipy.io.savemat = savemat_then_killed
from bfm_prep.cli import main
main(["synth", {str(out)!r}, "--vertices", "500", "--n-shape", "2", "--n-color", "2",
      "--n-exp", "2"])
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == 143, proc.stderr
    assert out.is_dir() and os.listdir(out) == []


# ---------------------------------------------------------------------------------------------
# temporary files left by a killed writer (SIGKILL, a power cut): the next write removes them

DAY = 24 * 3600


def _temporary(folder: Path, name: str, age_s: float = DAY) -> Path:
    p = folder / name
    p.write_bytes(b"\0" * 4096)
    t = time.time() - age_s
    os.utime(p, (t, t))
    return p


def test_next_write_removes_the_stale_temporaries_of_its_target_only(tmp_path):
    stale = [_temporary(tmp_path, ".m.h5.abcd1234.tmp"), _temporary(tmp_path, ".m.h5.x_9y8z7w.tmp")]
    kept = [
        _temporary(tmp_path, ".m.h5.efgh5678.tmp", age_s=5),  # being written right now
        _temporary(tmp_path, ".n.h5.abcd1234.tmp"),  # another target's
        _temporary(tmp_path, ".m.h5.notes.tmp"),  # not the writer's pattern
        _temporary(tmp_path, "m.h5.abcd1234.tmp"),  # not hidden: not the writer's
        _temporary(tmp_path, ".m.h5.abcd1234.tmp.bak"),
        _temporary(tmp_path, ".xm.h5.abcd1234.tmp"),
    ]
    # An old temporary file that a live process still writes (HDF5 locks the files it
    # writes; a stopped job keeps its lock) is kept too.
    busy = _temporary(tmp_path, ".m.h5.lock5678.tmp")
    kept.append(busy)
    with open(busy, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        write_model(tmp_path / "m.h5", random_model(np.random.default_rng()))
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)
    assert sorted(os.listdir(tmp_path)) == sorted(["m.h5", *(p.name for p in kept)])


def test_a_killed_writer_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    target = tmp_path / "m.h5"
    script = f"""
import os, signal
import h5py
import numpy as np
real = h5py.Group.create_dataset
def then_killed(self, *a, **k):
    out = real(self, *a, **k)
    self.file.flush()
    os.kill(os.getpid(), signal.SIGKILL)
    return out
h5py.Group.create_dataset = then_killed
from bfm_prep.artifact import write_model
from tests.bfm_prep.test_artifact import random_model
write_model({str(target)!r}, random_model(np.random.default_rng(0)))
"""
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=120, cwd=repo
    )
    assert proc.returncode == -9, proc.stderr
    left = os.listdir(tmp_path)
    assert len(left) == 1 and left[0].startswith(".m.h5.") and left[0].endswith(".tmp"), left
    t = time.time() - DAY
    os.utime(tmp_path / left[0], (t, t))
    write_model(target, random_model(np.random.default_rng(1)))
    assert os.listdir(tmp_path) == ["m.h5"]


# ---------------------------------------------------------------------------------------------
# commands that write several files write all of them or none


def test_uv_embed_leaves_none_of_its_three_files_when_one_fails(tmp_path, run_cli, monkeypatch):
    import bfm_prep.artifact

    from tests.bfm_prep.test_embed_cli import write_ply
    from tests.bfm_prep.test_symmetry import face_grid

    def fails(path, emb):
        raise PrepError("the artifact failed.")

    monkeypatch.setattr(bfm_prep.artifact, "write_uv", fails)
    V, F, _ = face_grid(eyes=True)
    mesh = write_ply(tmp_path / "face.ply", V, F)
    res = run_cli(
        "uv-embed",
        "--mesh",
        mesh,
        "--out",
        tmp_path / "u.h5",
        "--plot",
        tmp_path / "u.png",
        "--save-pairs",
        tmp_path / "pairs.txt",
    )
    assert res.returncode == 2 and "the artifact failed" in res.stderr, res.stderr
    assert os.listdir(tmp_path) == ["face.ply"]


def test_synth_leaves_none_of_its_files_when_one_fails(tmp_path, monkeypatch):
    import scipy.io
    from bfm_prep.synth import write_synthetic

    real = scipy.io.savemat
    calls = []

    def third_fails(f, *a, **k):
        calls.append(f)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real(f, *a, **k)

    monkeypatch.setattr(scipy.io, "savemat", third_fails)
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "README.txt").write_text("an earlier run\n")
    with pytest.raises(OSError, match="No space left"):
        write_synthetic(tmp_path / "s", n_vertices=500, n_shape=2, n_color=2, n_exp=2)
    assert os.listdir(tmp_path / "s") == ["README.txt"]
    assert (tmp_path / "s" / "README.txt").read_text() == "an earlier run\n"
