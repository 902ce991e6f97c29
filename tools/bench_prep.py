#!/usr/bin/env python
"""Benchmark of the bfm-prep commands on the Basel-size synthetic model (a script, not a test).

Makes the synthetic model once (``bfm-prep synth --vertices 53490``, the Basel Face Model 2009
size: 53,490 vertices, 106,466 triangles, 199 identity components, 3DDFA-format expression
model with 29 components) in a temporary folder, then times each section's command in a
child process: wall time (median of ``--runs`` runs, after one untimed warm-up run that fills
the page cache), its CPU time (user + system), and peak memory (the child's peak resident
set size from ``os.wait4``'s rusage: the honest figure for the whole command, Python start-up
and imports included). The 1-minute load average is printed too: on a shared machine the wall
time grows with other work, the CPU time much less.

Sections (run all, or some with ``--only NAME[,NAME...]``):

- ``build-expression``: ``bfm-prep build-expression`` with all 199 identity and all 29
  expression components (target: under 10 s and 3 GB on a 2-core machine).
- ``uv``: ``bfm-prep uv-embed`` and ``bfm-prep uv-resample --res 224`` on that full model,
  separately and in one command (target for the two: under 10 s and 3 GB).
- ``asymmetric``: ``bfm-prep uv-embed --mesh`` on the synthetic mean mesh made imperfect like
  the real Basel mesh (:mod:`bfm_prep.synth_asymmetry`: every diagonal of one half flipped
  that can be, 40 triangles split on that half, 40 vertices removed on the other, every
  vertex moved by up to 0.3 mm, which leaves mutual nearest mirror partners for about 97 % of
  the vertices as on the Basel mesh; and again with 0.5 mm), with no partner list and with a
  published-style one (self-pairs, repeated vertices); target: under 10 s and 3 GB. Prints
  the checks and the layout's reflection error over the true pairs.

Each section is a function that takes the shared :class:`Context` and returns a list of
:class:`Result`.

Usage::

    python tools/bench_prep.py [--only build-expression,asymmetric] [--runs 3] [--vertices 53490]
                               [--json out/bench.json] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BASEL_VERTICES = 53490
GIB = 1024**3


def bfm_prep_cmd() -> list[str]:
    """The command line that runs bfm-prep with this interpreter."""
    return [sys.executable, "-m", "bfm_prep"]


@dataclass
class Result:
    """One timed command."""

    section: str
    label: str
    command: list[str]
    wall_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)  # user + system time of the child
    peak_rss_bytes: list[int] = field(default_factory=list)
    load_avg: list[float] = field(default_factory=list)  # 1-minute load average after each run
    target_s: float | None = None
    target_bytes: int | None = None
    notes: dict = field(default_factory=dict)

    @property
    def median_s(self) -> float:
        return statistics.median(self.wall_s)

    @property
    def peak_bytes(self) -> int:
        return max(self.peak_rss_bytes)

    @property
    def met(self) -> bool:
        ok = True
        if self.target_s is not None:
            ok &= self.median_s < self.target_s
        if self.target_bytes is not None:
            ok &= self.peak_bytes < self.target_bytes
        return ok

    @property
    def median_cpu_s(self) -> float:
        return statistics.median(self.cpu_s)

    def line(self) -> str:
        runs = ", ".join(f"{w:.2f}" for w in self.wall_s)
        t = (
            f"wall median {self.median_s:6.2f} s (runs: {runs}"
            f"; CPU median {self.median_cpu_s:.2f} s; load average "
            f"{max(self.load_avg):.1f})"
        )
        m = f"peak RSS {self.peak_bytes / GIB:5.2f} GiB"
        tgt = []
        if self.target_s is not None:
            tgt.append(f"< {self.target_s:g} s")
        if self.target_bytes is not None:
            tgt.append(f"< {self.target_bytes / GIB:g} GiB")
        verdict = f"  target {' and '.join(tgt)}: {'met' if self.met else 'MISSED'}" if tgt else ""
        return f"{self.section} / {self.label}: {t}, {m}{verdict}"


def run_measured(cmd: list[str], cwd: Path | None = None) -> tuple[float, int, str, float]:
    """Run ``cmd``; return (wall seconds, peak RSS bytes of that child, its output, its CPU
    seconds: user + system)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{text}")
    # ru_maxrss is in kilobytes on Linux, bytes on macOS
    rss = usage.ru_maxrss if sys.platform == "darwin" else usage.ru_maxrss * 1024
    return wall, int(rss), text, usage.ru_utime + usage.ru_stime


def time_command(result: Result, runs: int, warmup: bool = True) -> Result:
    if warmup:
        run_measured(result.command)
    for _ in range(runs):
        wall, rss, text, cpu = run_measured(result.command)
        result.wall_s.append(wall)
        result.cpu_s.append(cpu)
        result.peak_rss_bytes.append(rss)
        result.load_avg.append(os.getloadavg()[0])
    result.notes.setdefault("last_output", text.strip().splitlines()[-6:])
    return result


@dataclass
class Context:
    """What the sections share: the work folder and the synthetic model, made once."""

    workdir: Path
    vertices: int
    runs: int
    _synth: dict | None = None

    def synth(self) -> dict:
        """Paths of the synthetic input files (made on first use)."""
        if self._synth is None:
            folder = self.workdir / "synth"
            marker = folder / ".bench_vertices"  # a kept --workdir is reused
            t0 = time.perf_counter()
            if marker.is_file() and marker.read_text().strip() == str(self.vertices):
                print(f"synthetic model ({self.vertices} vertices) reused from {folder}")
            else:
                cmd = [
                    *bfm_prep_cmd(),
                    "synth",
                    str(folder),
                    "--seed",
                    "0",
                    "--vertices",
                    str(self.vertices),
                ]
                wall, rss, _, _ = run_measured(cmd)
                marker.write_text(f"{self.vertices}\n")
                print(
                    f"synthetic model ({self.vertices} vertices) made in {wall:.1f} s "
                    f"(peak RSS {rss / GIB:.2f} GiB) in {folder}",
                    flush=True,
                )
            self._synth = {
                "folder": folder,
                "bfm": folder / "01_MorphableModel.mat",
                "expression": folder / "Model_Expression.mat",
                "mapping": folder / "map_tddfa_to_basel.mat",
                "aflw21": folder / "Landmarks21_BFM.anl",
                "ibug68": folder / "Landmarks68_BFM.anl",
                "seconds": time.perf_counter() - t0,
            }
            missing = [
                str(p)
                for k, p in self._synth.items()
                if isinstance(p, Path) and k != "folder" and not p.is_file()
            ]
            if missing:
                raise SystemExit(f"bfm-prep synth did not write: {', '.join(missing)}")
        return self._synth

    def model(self) -> Path:
        """The full model artifact (all identity and expression components), made on first
        use; for sections that start from it (the UV steps)."""
        path = self.workdir / "model_full.h5"
        if not path.is_file():
            s = self.synth()
            run_measured(build_expression_cmd(s, path))
        return path


# ---------------------------------------------------------------------------------------------
# sections


def build_expression_cmd(s: dict, out: Path, n_shape: int = 199, n_exp: int = 29) -> list[str]:
    return [
        *bfm_prep_cmd(),
        "build-expression",
        "--bfm",
        str(s["bfm"]),
        "--expression",
        str(s["expression"]),
        "--mapping",
        str(s["mapping"]),
        "--landmarks",
        f"aflw21={s['aflw21']}",
        "--landmarks",
        f"ibug68={s['ibug68']}",
        "--n-shape",
        str(n_shape),
        "--n-exp",
        str(n_exp),
        "--out",
        str(out),
    ]


def bench_build_expression(ctx: Context) -> list[Result]:
    """build-expression with all 199 identity and 29 expression components."""
    s = ctx.synth()
    out = ctx.workdir / "bench_model.h5"
    r = Result(
        section="build-expression",
        label="199 identity + 29 expression components, colour carried along",
        command=build_expression_cmd(s, out),
        target_s=10.0,
        target_bytes=3 * GIB,
    )
    time_command(r, ctx.runs)
    r.notes["artifact_bytes"] = out.stat().st_size
    return [r]


def bench_uv(ctx: Context, res: int = 224) -> list[Result]:
    """uv-embed, then uv-resample at R = 224, on the full 199 + 29 component model; and the
    two in one process (uv-resample without --uv embeds first), the figure the target is for."""
    model = ctx.model()
    uv = ctx.workdir / "bench_uv.h5"
    grid = ctx.workdir / f"bench_grid{res}.h5"
    embed = Result(
        section="uv",
        label="uv-embed (symmetry + Tutte)",
        command=[*bfm_prep_cmd(), "uv-embed", "--model", str(model), "--out", str(uv)],
    )
    time_command(embed, ctx.runs)
    resample = Result(
        section="uv",
        label=f"uv-resample --uv, R = {res}",
        command=[
            *bfm_prep_cmd(),
            "uv-resample",
            "--model",
            str(model),
            "--uv",
            str(uv),
            "--res",
            str(res),
            "--out",
            str(grid),
        ],
    )
    time_command(resample, ctx.runs)
    both = Result(
        section="uv",
        label=f"uv-embed + uv-resample in one command, R = {res}",
        command=[
            *bfm_prep_cmd(),
            "uv-resample",
            "--model",
            str(model),
            "--res",
            str(res),
            "--out",
            str(grid),
        ],
        target_s=10.0,
        target_bytes=3 * GIB,
    )
    time_command(both, ctx.runs)
    both.notes["separate_commands_sum_s"] = embed.median_s + resample.median_s
    return [embed, resample, both]


def asymmetric_mesh(ctx: Context, radius: float) -> dict:
    """The Basel-size synthetic mean mesh made imperfect (see the module docstring): a PLY
    file, a partner list and the true partners, written once per radius."""
    # lazy: only this section builds a mesh in this process (the others run commands)
    from bfm_prep import synth_asymmetry as sa
    from bfm_prep.mesh_export import export_mesh
    from bfm_prep.synth_mesh import face_surface, make_param_mesh

    folder = ctx.workdir / f"asym_{ctx.vertices}_{radius:g}"
    files = {
        "mesh": folder / "face.ply",
        "pairs": folder / "symlist.txt",
        "truth": folder / "truth.npy",
    }
    if all(p.is_file() for p in files.values()):
        return files
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pm = make_param_mesh(ctx.vertices)
    vertices, _ = face_surface(pm)
    rng = np.random.default_rng(0)
    m = sa.ImperfectMesh.from_mirrored(vertices, pm.faces)
    m = sa.flip_diagonals(m, 1, rng=rng)
    m = sa.split_triangles(m, 40, 1, rng=rng)
    m = sa.remove_vertices(m, 40, -1, rng=rng)
    m = sa.jitter(m, radius, rng=rng)
    export_mesh(files["mesh"], m.vertices, m.faces)
    listed = sa.partner_list(m, rng=rng, repeats=200, duplicates=100)
    files["pairs"].write_text("".join(f"{a} {b}\n" for a, b in listed.tolist()))
    np.save(files["truth"], m.partner)
    print(
        f"asymmetric mesh ({len(m.vertices)} vertices, {len(m.faces)} triangles; {m.edits}) "
        f"made in {time.perf_counter() - t0:.1f} s in {folder}",
        flush=True,
    )
    return files


def layout_report(uv_path: Path, files: dict) -> dict:
    """The embedding's checks and its reflection error over the true pairs, in UV units and
    as a multiple of the mesh's own asymmetry there (the largest 3D residual of a true pair
    times the layout's median UV per mm)."""
    # lazy: as in asymmetric_mesh
    from bfm_prep.artifact import read_uv
    from bfm_prep.io.mesh import load_mesh
    from bfm_prep.mirror_plane import reflect_points

    emb = read_uv(uv_path)
    v, f = load_mesh(files["mesh"])
    partner = np.load(files["truth"])
    i = np.flatnonzero(partner > np.arange(len(partner)))
    j = partner[i]
    uv = emb.uv
    err = np.linalg.norm(uv[i] - np.column_stack([1.0 - uv[j, 0], uv[j, 1]]), axis=1)
    r3 = np.linalg.norm(reflect_points(v[j], emb.plane) - v[i], axis=1)
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    scale = float(
        np.median(
            np.linalg.norm(uv[e[:, 0]] - uv[e[:, 1]], axis=1)
            / np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1)
        )
    )
    level = scale * float(r3.max())
    c = emb.checks
    keys = (
        "flipped_triangles",
        "symmetry_error",
        "boundary_error",
        "line_error",
        "n_pairs",
        "n_unpaired",
        "n_pairs_released",
        "n_line_vertices",
        "mirror_residual_rms_mm",
        "mirror_residual_max_mm",
    )
    out = {k: c[k] for k in keys}
    out.update(
        true_pairs=len(i),
        true_pair_error_p99=float(np.quantile(err, 0.99)),
        true_pair_error_max=float(err.max()),
        asymmetry_level=level,
        exactly_reflected=float((err < 1e-9).mean()),
    )
    return out


def bench_asymmetric(ctx: Context) -> list[Result]:
    """uv-embed on the imperfect Basel-size mesh: no list (0.3 and 0.5 mm of noise) and a
    partner list (0.3 mm)."""
    results = []
    for radius, with_list in ((0.3, False), (0.3, True), (0.5, False)):
        files = asymmetric_mesh(ctx, radius)
        uv = ctx.workdir / f"asym_uv_{radius:g}_{int(with_list)}.h5"
        extra = ["--symmetry", str(files["pairs"])] if with_list else []
        r = Result(
            section="asymmetric",
            label=f"uv-embed --mesh, noise {radius:g} mm, "
            + ("a partner list" if with_list else "no partner list"),
            command=[
                *bfm_prep_cmd(),
                "uv-embed",
                "--mesh",
                str(files["mesh"]),
                *extra,
                "--out",
                str(uv),
            ],
            target_s=10.0,
            target_bytes=3 * GIB,
        )
        time_command(r, ctx.runs)
        r.notes["checks"] = layout_report(uv, files)
        ck = r.notes["checks"]
        print(
            f"  checks: flipped {ck['flipped_triangles']}; symmetry error over the pairs "
            f"{ck['symmetry_error']:.2g}; boundary error {ck['boundary_error']:.2g}; line "
            f"error {ck['line_error']:.2g}; {ck['n_pairs']} pairs, {ck['n_unpaired']} without "
            f"a partner ({ck['n_pairs_released']} released), {ck['n_line_vertices']} on the "
            f"midline; mirror residual rms {ck['mirror_residual_rms_mm']:.2f} mm, max "
            f"{ck['mirror_residual_max_mm']:.2f} mm; over the {ck['true_pairs']} true pairs: "
            f"{100 * ck['exactly_reflected']:.1f}% reflected exactly, error p99 "
            f"{ck['true_pair_error_p99']:.2g}, max {ck['true_pair_error_max']:.2g} (the "
            f"mesh's asymmetry: {ck['asymmetry_level']:.2g})",
            flush=True,
        )
        results.append(r)
    return results


SECTIONS: dict[str, Callable[[Context], list[Result]]] = {
    "build-expression": bench_build_expression,
    "uv": bench_uv,
    "asymmetric": bench_asymmetric,
}


# ---------------------------------------------------------------------------------------------


def machine() -> dict:
    np_version = np.__version__
    return {
        "python": platform.python_version(),
        "numpy": np_version,
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpus": os.cpu_count(),
        "system": f"{platform.system()} {platform.release()}",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--only",
        action="append",
        default=None,
        metavar="NAME[,NAME]",
        help=f"sections to run (default: all): {', '.join(SECTIONS)}",
    )
    ap.add_argument("--runs", type=int, default=3, help="timed runs per command (default 3)")
    ap.add_argument(
        "--vertices",
        type=int,
        default=BASEL_VERTICES,
        help=f"synthetic model size (default {BASEL_VERTICES}, the Basel size)",
    )
    ap.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="folder for the synthetic model and outputs (default: a new temp folder)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = ap.parse_args(argv)

    names = [n for item in (args.only or list(SECTIONS)) for n in item.split(",") if n]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    if args.runs < 1:
        ap.error("--runs must be at least 1")

    own_dir = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="bench_prep_")) if own_dir else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = Context(workdir=workdir, vertices=args.vertices, runs=args.runs)
    info = machine()
    print(
        f"bench_prep: {info['cpus']} CPUs, {info['system']}, Python {info['python']}, "
        f"numpy {info['numpy']}; {args.runs} timed runs per command",
        flush=True,
    )
    results: list[Result] = []
    try:
        for name in names:
            for r in SECTIONS[name](ctx):
                results.append(r)
                print(r.line(), flush=True)
    finally:
        if own_dir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        elif args.keep or not own_dir:
            print(f"work folder kept: {workdir}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "machine": info,
            "vertices": args.vertices,
            "runs": args.runs,
            "results": [
                asdict(r)
                | {
                    "median_s": r.median_s,
                    "median_cpu_s": r.median_cpu_s,
                    "peak_bytes": r.peak_bytes,
                    "met": r.met,
                }
                for r in results
            ],
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str))
        print(f"figures written to {args.json}")
    return 0 if all(r.met for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
