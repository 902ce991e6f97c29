"""``bfm-prep uv-embed``: the symmetric Tutte embedding of a mean shape -> uv.h5."""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import typer

from bfm_prep.cli.app import app
from bfm_prep.cli.options import check_outputs, option_words, plural
from bfm_prep.errors import PrepError
from bfm_prep.provenance import input_record

# Help text: no line breaks inside a paragraph (typer rewraps it to the terminal).
_HELP = (
    "Flatten a face mesh onto the unit square, mirror-symmetrically (u grows with the "
    "model's x, v with its y; the symmetry line on u = 0.5; holes stay open). See "
    "docs/uv-embedding.md."
)


@app.command(
    "uv-embed",
    help=_HELP,
    short_help="Flatten a face mesh onto the unit square, mirror-symmetrically.",
)
def uv_embed(
    model: Path | None = typer.Option(
        None,
        "--model",
        help="A model artifact (bfm-prep build-expression); its mean shape is flattened.",
        show_default=False,
    ),
    mesh: Path | None = typer.Option(
        None,
        "--mesh",
        help="Or a .ply/.obj triangle mesh to flatten (vertex order kept).",
        show_default=False,
    ),
    symmetry: str = typer.Option(
        "auto",
        "--symmetry",
        help="'auto': the exact mirror pairing of a mirrored triangulation, else pairs from the "
        "shape (mutual nearest partners; some vertices may have none); 'exact' or 'geometry': "
        "only that one; or a PAIRS_FILE: one 'i j' per line, 0-based vertex indices of mirror "
        "partners, 'i i' for a vertex on the midline (a published partner list with repeated "
        "vertices is fine; see docs/uv-embedding.md).",
    ),
    weights: str = typer.Option(
        "cotangent",
        "--weights",
        help="Edge weights: 'cotangent' (conformal; falls back to mean-value if triangles flip) "
        "or 'mean-value'.",
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        help="The UV embedding artifact to write (HDF5, atomically).",
        show_default=False,
    ),
    plot: Path | None = typer.Option(
        None, "--plot", help="Also draw the UV layout to this PNG.", show_default=False
    ),
    save_pairs: Path | None = typer.Option(
        None,
        "--save-pairs",
        help="Also write the mirror pairs found, as a PAIRS_FILE.",
        show_default=False,
    ),
) -> None:
    """``bfm-prep uv-embed`` (help text: ``_HELP``)."""
    # lazy: the embedding needs scipy and libigl, --mesh also trimesh (0.8 s to import) and
    # --plot matplotlib, each imported only when given; so --help, the other commands and a
    # plain uv-embed go without them
    from bfm_prep.artifact import read_model, write_uv
    from bfm_prep.atomic import all_or_nothing
    from bfm_prep.embedding import embed_mesh
    from bfm_prep.symmetry import METHODS

    t0 = time.perf_counter()
    if (model is None) == (mesh is None):
        raise PrepError("uv-embed: give exactly one of --model model.h5 or --mesh FILE.ply|.obj.")
    check_outputs(
        ("--out", out),
        ("--plot", plot),
        ("--save-pairs", save_pairs),
        inputs=[
            ("--model", model),
            ("--mesh", mesh),
            ("--symmetry", None if symmetry in METHODS else Path(symmetry)),
        ],
    )
    if weights not in ("cotangent", "mean-value"):
        raise PrepError(f"--weights {weights!r}: use 'cotangent' or 'mean-value'.")
    inputs = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if model is not None:
                m = read_model(model)
                v, f = m.shape_mean, m.faces
                inputs["model"] = input_record(model)
                name = str(model)
            else:
                from bfm_prep.io.mesh import load_mesh

                v, f = load_mesh(mesh)
                inputs["mesh"] = input_record(mesh)
                name = str(mesh)
            sym_arg = symmetry
            if symmetry not in METHODS:
                p = Path(symmetry)
                if p.is_dir():
                    raise PrepError(
                        f"--symmetry {symmetry!r}: is a folder, not a file; pass 'auto', "
                        "'exact', 'geometry' or a PAIRS_FILE."
                    )
                if not p.is_file():
                    raise PrepError(
                        f"--symmetry {symmetry!r}: not 'auto' and no such file; pass 'auto', "
                        "'exact', 'geometry' or a PAIRS_FILE."
                    )
                inputs["symmetry_pairs"] = input_record(p)
                sym_arg = p
            with option_words(symmetry="--symmetry"):
                emb = embed_mesh(v, f, sym_arg, weights=weights, name=name)
        finally:
            for w in caught:
                print(f"bfm-prep: warning: {w.message}", file=sys.stderr)
    emb.provenance["inputs"] = inputs
    c = emb.checks
    params = emb.provenance["parameters"]
    # All three written together: a failure on the way leaves none of them.
    with all_or_nothing():
        if save_pairs is not None:
            from bfm_prep.symmetry import write_pairs

            exact = c["symmetry_exact"]
            write_pairs(save_pairs, emb.mirror, None if exact else emb.symmetry_line)
        if plot is not None:
            from bfm_prep.pictures.uv_layout import plot_uv_layout

            plot_uv_layout(emb, plot, v, title=f"UV layout of {Path(name).name}")
        path = write_uv(out, emb)
    seconds = time.perf_counter() - t0

    holes = (
        f", {plural(c['n_holes'], 'hole')} (closed by a virtual fan vertex for the solve, "
        "open in UV)"
        if c["n_holes"]
        else ", no holes"
    )
    print(f"Mesh: {c['n_vertices']} vertices, {c['n_faces']} triangles{holes}")
    for line in _symmetry_report(params["symmetry"], params["pairing"], c):
        print(line)
    clamped = plural(c["clamped_weights"], "non-positive cotangent weight")
    print(f"Weights: {params['weights']} ({clamped} raised to the floor)")
    print(
        f"Checks: flipped triangles {c['flipped_triangles']}; "
        f"symmetry error {c['symmetry_error']:.3g}; "
        f"boundary error {c['boundary_error']:.3g}; line error {c['line_error']:.3g}"
    )
    if c["flipped_triangles"]:
        n_flip = c["flipped_triangles"]
        print(
            f"bfm-prep: warning: {plural(n_flip, 'triangle')} {'is' if n_flip == 1 else 'are'} "
            "flipped in UV; see the picture (--plot) and docs/uv-embedding.md.",
            file=sys.stderr,
        )
    names = [str(path.resolve())] + [str(p) for p in (save_pairs, plot) if p is not None]
    wrote = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    print(
        f"Wrote {wrote} in {seconds:.1f} s (symmetry {c['time_symmetry_s']:.2f} s, "
        f"solve {c['time_solve_s']:.2f} s)"
    )


def _symmetry_report(method: str, st: dict, c: dict) -> list[str]:
    """The lines that say how the mirror pairs were found (the pairing's report, ``st``) and
    what the embedding kept of them (its checks, ``c``)."""
    n = c["n_vertices"]
    residual = (
        f"mirror residual rms {c['mirror_residual_rms_mm']:.3g}, max "
        f"{c['mirror_residual_max_mm']:.3g} (mesh units, mm)"
    )
    line = plural(c["n_line_vertices"], "vertex", "vertices")
    if c["symmetry_exact"]:
        return [
            f"Symmetry ({method}): {plural(c['n_pairs'], 'mirror pair')}, {line} on the "
            f"symmetry line; {residual}"
        ]
    if method == "pairs+geometry":
        how = "the pairs do not map the mesh onto itself; read as a partner list"
    else:
        how = (
            "the triangulation is not mirrored (the exact search tried "
            f"{plural(st.get('seeds_tried', 0), 'seed')}); pairs from the shape"
        )
    out = [
        f"Symmetry ({method}: {how}): "
        f"{plural(c['n_pairs'], 'mirror pair')} ({100.0 * 2 * c['n_pairs'] / n:.1f}% of the "
        f"vertices), {line} on the midline, {c['n_unpaired']} without a partner",
        f"  pairs: median residual {st.get('residual_median_mm', 0.0):.3g}, p99 "
        f"{st.get('residual_p99_mm', 0.0):.3g}; {residual}",
    ]
    if method == "pairs+geometry":
        out.append(
            f"  list: {st['n_listed']} lines, {st['n_duplicate_pairs']} listed twice, "
            f"{plural(st['n_self_pairs'], 'self-pair')} (the midline), "
            f"{plural(st['n_repeated_vertices'], 'vertex', 'vertices')} in more than one pair "
            f"({plural(st['n_dropped_repeats'], 'pair')} dropped: each vertex keeps its best "
            f"mirror image), {st['n_unlisted']} unlisted, "
            f"{st['n_dropped_boundary_mismatch']} joining the boundary to the inside dropped"
        )
    else:
        out.append(
            f"  {st['n_mutual']} mutual nearest partners, {st['n_by_tolerance']} more within "
            f"{st['tolerance_mm']:.3g} mm; {100.0 * st['supported_fraction']:.1f}% of the "
            "vertices agree with their neighbours' partners"
        )
    out.append(
        f"  dropped: {st['n_dropped_on_line']} with a vertex on the midline, "
        f"{st['n_dropped_same_side']} within one half, {st['n_dropped_boundary_order']} "
        f"crossing along a boundary; {plural(c['n_pairs_released'], 'pair')} released where "
        "the reflection would flip triangles"
    )
    return out
