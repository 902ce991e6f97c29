"""``bfm-prep uv-resample``: model.h5 + UV (uv.h5, BFM_UV.mat or computed) -> grid.h5."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from bfm_prep.cli.app import app
from bfm_prep.cli.options import check_out_path, parse_landmark_options
from bfm_prep.errors import PrepError


@app.command("uv-resample")
def uv_resample(
    model: Path = typer.Option(
        ..., "--model", help="The model artifact (bfm-prep build-expression).",
        show_default=False),
    uv: Path | None = typer.Option(
        None, "--uv",
        help="The UV of the model's vertices: a uv.h5 from bfm-prep uv-embed, or the original's "
        "BFM_UV.mat (Basel 2009 mesh). Without it the embedding is computed here (automatic "
        "symmetry).",
        show_default=False),
    res: int = typer.Option(112, "--res", help="Grid size R (R x R vertices), at least 8; 112 "
                                                "and 224 are the usual sizes."),
    landmarks: list[str] = typer.Option(
        [], "--landmarks",
        help="Extra landmark set NAME=FILE of source-mesh vertex indices (.anl 1-based, or an "
        "index list); repeat for more. The model's own landmarks are always carried.",
        show_default=False),
    out: Path = typer.Option(..., "--out", help="The grid artifact to write (HDF5, atomic).",
                             show_default=False),
) -> None:
    """Resample a model onto an R x R grid in its UV flattening: mean, every shape component and
    the colour model interpolated barycentrically; grid points off the mesh marked outside and
    filled from the nearest point of the mesh; landmarks mapped to the nearest grid vertex."""
    from bfm_prep.artifact import input_record, read_model, write_grid
    from bfm_prep.io.landmarks import load_landmarks
    from bfm_prep.resample import MIN_RES, resample_to_grid

    t0 = time.perf_counter()
    check_out_path(out)
    if res < MIN_RES:
        raise PrepError(f"--res {res} is too small; use R >= {MIN_RES} (112 and 224 are usual).")
    lm_files = parse_landmark_options(landmarks)
    src = read_model(model)
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
    print(f"Source: {src.n_vertices} vertices, {len(src.faces)} triangles, "
          f"{src.n_identity} identity + {src.n_expression} expression components"
          + (f", {src.color_basis.shape[2]} colour components" if src.has_color else ""))
    print(f"UV: {uv_source} ({t_uv - t0:.1f} s)")
    print(f"Grid: {res} x {res} = {res * res} vertices, {len(m.faces)} triangles; "
          f"{c['n_outside']} grid points outside the mesh (filled from the nearest mesh point, "
          f"at most {c['max_fill_distance_cells']:.2f} grid cells away)")
    print(f"Orientation: {100 * c['orientation_agreement']:.2f}% of grid triangles agree with the "
          f"source normal; {c['source_flipped_uv']} source triangles flipped in UV")
    lms = ", ".join(f"{k} ({v.size})" for k, v in sorted(m.landmarks.items())) or "none"
    print(f"Landmarks: {lms}")
    print(f"Wrote {path.resolve()} in {t1 - t0:.1f} s (resampling {t1 - t_uv:.1f} s)")


def _load_uv(uv: Path | None, model) -> tuple:
    """(uv (N, 2), description, embedding checks) from --uv, or from the embedding itself."""
    from bfm_prep.artifact import FORMAT_UV, read_format, read_uv
    from bfm_prep.io.bfm_uv import load_bfm_uv

    if uv is None:
        from bfm_prep.embedding import embed_model

        emb = embed_model(model)
        return emb.uv, "computed here (symmetric Tutte embedding, automatic symmetry)", emb.checks
    if not uv.is_file():
        raise PrepError(f"--uv {uv}: no such file; check the path.")
    fmt = read_format(uv)
    if fmt == FORMAT_UV:
        emb = read_uv(uv)
        if len(emb.uv) != model.n_vertices:
            raise PrepError(f"--uv {uv}: the embedding has {len(emb.uv)} vertices but the model "
                            f"has {model.n_vertices}; pass the embedding of this model's mesh.")
        if emb.faces.shape != model.faces.shape or not (emb.faces == model.faces).all():
            raise PrepError(f"--uv {uv}: the embedding's triangles differ from the model's; pass "
                            "the embedding computed from this model (bfm-prep uv-embed --model).")
        return emb.uv, f"{uv} (stn-uv-embedding)", emb.checks
    if fmt is not None:
        raise PrepError(f"--uv {uv}: an HDF5 file of format {fmt!r}; pass a uv.h5 from "
                        "bfm-prep uv-embed or BFM_UV.mat.")
    return load_bfm_uv(uv, n_vertices=model.n_vertices), f"{uv} (BFM_UV.mat, as is)", {}
