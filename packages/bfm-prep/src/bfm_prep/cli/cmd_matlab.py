"""``bfm-prep import-matlab``: the original 3DMM-STN's resampled model.mat -> grid.h5."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from bfm_prep.cli.app import app
from bfm_prep.cli.options import check_outputs, option_words, parse_landmark_options
from bfm_prep.provenance import input_record

# Help text: no line breaks inside a paragraph (typer rewraps it to the terminal).
_HELP = (
    "Convert the original MATLAB project's resampled model into the UV-grid format, "
    "so its users can switch without the licensed Basel model. Mean and components "
    "are taken over exactly (the original stored them pre-scaled: std is recorded as "
    "1)."
)


@app.command(
    "import-matlab",
    help=_HELP,
    short_help="Convert the original MATLAB project's resampled model to a UV grid.",
)
def import_matlab(
    model_mat: Path = typer.Argument(
        ...,
        help="The original's resampled model, e.g. model_112.mat "
        "(nverts, shapeMU, shapePC, faces).",
        show_default=False,
    ),
    out: Path = typer.Option(
        ..., "--out", help="The grid artifact to write (HDF5, atomic).", show_default=False
    ),
    n_identity: int | None = typer.Option(
        None,
        "--n-identity",
        help="How many of the K components are identity; the rest are expression. (Default: "
        "K / 2, the split of the original's model_112.mat: 5 identity + 5 expression.)",
        show_default=False,
    ),
    landmarks: list[str] = typer.Option(
        [],
        "--landmarks",
        help="Landmark set NAME=FILE of grid vertex indices (.anl 1-based, e.g. "
        "aflw21=Landmarks21_112.anl); repeat for more.",
        show_default=False,
    ),
    inside: Path | None = typer.Option(
        None,
        "--inside",
        help="Optional mask of the grid points on the source mesh: .npy or text, R*R values 0/1 "
        "in grid order. (Default: all inside; the original stores no mask.)",
        show_default=False,
    ),
) -> None:
    """``bfm-prep import-matlab`` (help text: ``_HELP``)."""
    # lazy: the import needs scipy (MATLAB files, the grid's UV); imported here, --help and
    # the other commands go without it
    from bfm_prep.artifact import write_grid
    from bfm_prep.io.landmarks import load_landmarks
    from bfm_prep.matlab_import import import_matlab_model, load_inside_mask

    t0 = time.perf_counter()
    lm_files = parse_landmark_options(landmarks)
    check_outputs(
        ("--out", out),
        inputs=[
            ("MODEL_MAT", model_mat),
            ("--inside", inside),
            *(("--landmarks", p) for p in lm_files.values()),
        ],
    )
    with option_words(n_identity="--n-identity", inside="--inside"):
        grid = import_matlab_model(model_mat, n_identity=n_identity)
        n = grid.res * grid.res
        if inside is not None:
            grid.inside = load_inside_mask(inside, n)
            grid.model.provenance["inputs"]["inside"] = input_record(inside)
    m = grid.model
    m.landmarks = {name: load_landmarks(p, n_vertices=n) for name, p in lm_files.items()}
    for name, p in lm_files.items():
        m.provenance["inputs"][f"landmarks_{name}"] = input_record(p)
    m.provenance["parameters"]["landmark_files"] = {k: str(v) for k, v in lm_files.items()}
    m.validate()
    path = write_grid(out, grid)

    p = m.provenance["parameters"]
    print(f"Grid: {grid.res} x {grid.res} = {n} vertices, {len(m.faces)} triangles ({p['faces']})")
    print(
        f"Shape components: {m.n_identity} identity + {m.n_expression} expression ({p['scaling']})"
    )
    print(
        f"Inside: {int(grid.inside.sum())} of {n}; landmarks: "
        + (", ".join(f"{k} ({v.size})" for k, v in sorted(m.landmarks.items())) or "none")
    )
    print(f"Wrote {path.resolve()} in {time.perf_counter() - t0:.1f} s")
