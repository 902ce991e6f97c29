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

Each section is a function that takes the shared :class:`Context` and returns a list of
:class:`Result`.

Usage::

    python tools/bench_prep.py [--only build-expression] [--runs 3] [--vertices 53490]
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


SECTIONS: dict[str, Callable[[Context], list[Result]]] = {
    "build-expression": bench_build_expression,
    "uv": bench_uv,
}


# ---------------------------------------------------------------------------------------------


def machine() -> dict:
    try:
        import numpy as np

        np_version = np.__version__
    except ImportError:  # pragma: no cover
        np_version = None
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
