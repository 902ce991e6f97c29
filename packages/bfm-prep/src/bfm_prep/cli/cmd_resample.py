"""``bfm-prep uv-resample``: model.h5 + UV (uv.h5, BFM_UV.mat or computed) -> grid.h5."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from bfm_prep.cli.app import app
from bfm_prep.cli.options import check_outputs, option_words, parse_landmark_options, plural
from bfm_prep.errors import PrepError
from bfm_prep.provenance import input_record

# Without --uv the embedding is computed here; its advice to give mirror pairs goes through
# uv-embed, since this command has no --symmetry.
_OPTIONS = {"res": "--res", "symmetry": "--uv with a uv.h5 from bfm-prep uv-embed --symmetry"}

# Help text: one paragraph, no line breaks inside it (typer rewraps it to the terminal).
_HELP = (
    "Resample a model onto an R x R grid in its UV flattening.\n\n"
    "The mean, every shape component and the colour model are interpolated barycentrically; "
    "grid points off the mesh are marked outside and filled from the nearest point of the "
    "mesh; landmarks are mapped to the nearest grid vertex. Prints a summary and where the "
    "artifact is."
)


@app.command(
    "uv-resample",
    help=_HELP,
    short_help="Resample a model onto an R x R grid in its UV flattening.",
)
def uv_resample(
    model: Path = typer.Option(
        ..., "--model", help="The model artifact (bfm-prep build-expression).", show_default=False
    ),
    uv: Path | None = typer.Option(
        None,
        "--uv",
        help="The UV of the model's vertices: a uv.h5 from bfm-prep uv-embed, or the original's "
        "BFM_UV.mat (Basel 2009 mesh). Without it the embedding is computed here (automatic "
        "symmetry).",
        show_default=False,
    ),
    res: int = typer.Option(
        112,
        "--res",
        help="Grid size R (R x R vertices), 8 to 4096; 112 and 224 are the usual sizes.",
    ),
    landmarks: list[str] = typer.Option(
        [],
        "--landmarks",
        help="Extra landmark set NAME=FILE of source-mesh vertex indices (.anl 1-based, or an "
        "index list); repeat for more. The model's own landmarks are always carried.",
        show_default=False,
    ),
    out: Path = typer.Option(
        ..., "--out", help="The grid artifact to write (HDF5, atomic).", show_default=False
    ),
) -> None:
    """``bfm-prep uv-resample`` (help text: ``_HELP``)."""
    # lazy: the resampling needs scipy (and without --uv the embedding libigl); imported here,
    # --help and the other commands go without them
    from bfm_prep.artifact import read_model, write_grid
    from bfm_prep.io.landmarks import load_landmarks
    from bfm_prep.resample import check_res, resample_to_grid

    t0 = time.perf_counter()
    lm_files = parse_landmark_options(landmarks)
    check_outputs(
        ("--out", out),
        inputs=[("--model", model), ("--uv", uv), *(("--landmarks", p) for p in lm_files.values())],
    )
    src = read_model(model)
    with option_words(**_OPTIONS):
        # Before any work: R in range, stating the memory the grid would need (which depends
        # on the number of components, known now).
        check_res(res, src.n_components, src.color_basis.shape[2] if src.has_color else 0)
        extra = {name: load_landmarks(p, n_vertices=src.n_vertices) for name, p in lm_files.items()}
        uv_array, uv_source, uv_checks = _load_uv(uv, src)
        t_uv = time.perf_counter()
        grid = resample_to_grid(src, uv_array, res, landmarks=extra)
    m = grid.model
    inputs = dict(src.provenance.get("inputs", {}))
    inputs["model"] = input_record(model)
    if uv is not None:
        inputs["uv"] = input_record(uv)
    for name, p in lm_files.items():
        inputs[f"landmarks_{name}"] = input_record(p)
    m.provenance["inputs"] = inputs
    params = m.provenance["parameters"]
    params["uv_source"] = uv_source
    params["landmark_files"] = {k: str(v) for k, v in lm_files.items()}
    if uv_checks:
        params["embedding_checks"] = uv_checks
    path = write_grid(out, grid)
    t1 = time.perf_counter()

    c = params["checks"]
    print(
        f"Source: {src.n_vertices} vertices, {len(src.faces)} triangles, "
        f"{src.n_identity} identity + {src.n_expression} expression components"
        + (f", {plural(src.color_basis.shape[2], 'colour component')}" if src.has_color else "")
    )
    print(f"UV: {uv_source} ({t_uv - t0:.1f} s)")
    print(
        f"Grid: {res} x {res} = {res * res} vertices, {len(m.faces)} triangles; "
        f"{plural(c['n_outside'], 'grid point')} outside the mesh (filled from the nearest mesh "
        f"point, at most {c['max_fill_distance_cells']:.2f} grid cells away)"
    )
    print(
        f"Orientation: {100 * c['orientation_agreement']:.2f}% of grid triangles agree with the "
        f"source normal; {plural(c['source_flipped_uv'], 'source triangle')} flipped in UV"
    )
    lms = ", ".join(f"{k} ({v.size})" for k, v in sorted(m.landmarks.items())) or "none"
    print(f"Landmarks: {lms}")
    print(f"Wrote {path.resolve()} in {t1 - t0:.1f} s (resampling {t1 - t_uv:.1f} s)")


def _load_uv(uv: Path | None, model) -> tuple:
    """(uv (N, 2), description, embedding checks) from --uv, or from the embedding itself."""
    # lazy: as in uv_resample, and the embedding (libigl) only without --uv
    from bfm_prep.artifact import FORMAT_UV, read_format, read_uv
    from bfm_prep.io.bfm_uv import load_bfm_uv

    if uv is None:
        from bfm_prep.embedding import embed_model

        emb = embed_model(model)
        return emb.uv, "computed here (symmetric Tutte embedding, automatic symmetry)", emb.checks
    if uv.is_dir():
        raise PrepError(f"--uv {uv}: is a folder, not a file; pass the uv.h5 or BFM_UV.mat itself.")
    if not uv.is_file():
        raise PrepError(f"--uv {uv}: no such file; check the path.")
    fmt = read_format(uv)
    if fmt == FORMAT_UV:
        emb = read_uv(uv)
        if len(emb.uv) != model.n_vertices:
            raise PrepError(
                f"--uv {uv}: the embedding has {len(emb.uv)} vertices but the model "
                f"has {model.n_vertices}; pass the embedding of this model's mesh."
            )
        if emb.faces.shape != model.faces.shape or not (emb.faces == model.faces).all():
            raise PrepError(
                f"--uv {uv}: the embedding's triangles differ from the model's; pass "
                "the embedding computed from this model (bfm-prep uv-embed --model)."
            )
        return emb.uv, f"{uv} (stn-uv-embedding)", emb.checks
    if fmt is not None:
        raise PrepError(
            f"--uv {uv}: an HDF5 file of format {fmt!r}; pass a uv.h5 from "
            "bfm-prep uv-embed or BFM_UV.mat."
        )
    return load_bfm_uv(uv, n_vertices=model.n_vertices), f"{uv} (BFM_UV.mat, as is)", {}
