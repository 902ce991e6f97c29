"""``bfm-prep build-expression``: identity + transferred expression components -> model.h5."""

from __future__ import annotations

import math
import sys
import time
import warnings
from pathlib import Path

import typer

from bfm_prep.cli.app import app
from bfm_prep.cli.options import check_outputs, option_words, parse_landmark_options, plural
from bfm_prep.errors import PrepError

# The build's parameters, said in its errors as this command's options.
_OPTIONS = {
    "n_shape": "--n-shape",
    "n_exp": "--n-exp",
    "n_color": "--n-color",
    "expression_path": "--expression",
    "mapping_path": "--mapping",
    "expression_std_path": "--expression-std",
    "std_path": "--expression-std",
    "landmarks": "--landmarks",
}


def _parse_weight(text: str) -> float:
    try:
        w = float(text)
    except ValueError:
        raise PrepError(f"--data-weight {text!r}: expected a positive number or 'inf'.") from None
    if not w > 0:
        raise PrepError(f"--data-weight {text!r}: expected a positive number or 'inf'.")
    return w


# Help text: paragraphs separated by a blank line, no line breaks inside a paragraph (typer
# rewraps each paragraph to the terminal; a break inside one would cut a sentence).
_HELP = (
    "Build a model: BFM identity + expression components transferred to every vertex.\n\n"
    "Identity components are scaled by their standard deviations (coefficients follow "
    "N(0, 1)); each expression component is transferred to every Basel vertex and "
    "extrapolated into the mouth interior by Laplacian-preserving least squares (one sparse "
    "factorisation for all components); the colour model and the landmark sets are carried "
    "along. Prints a summary and where the artifact is."
)


@app.command(
    "build-expression",
    help=_HELP,
    short_help="Build a model: BFM identity + expression components on every vertex.",
)
def build_expression(
    bfm: Path = typer.Option(
        ...,
        "--bfm",
        help="Basel Face Model: 2009 01_MorphableModel.mat (MATLAB v5 or v7.3) or 2017/2019 .h5 "
        "(recognised by content; a 2017 file's own expression model is used).",
        show_default=False,
    ),
    expression: Path | None = typer.Option(
        None,
        "--expression",
        help="Expression model to transfer: 3DDFA Model_Expression.mat or CoarseData "
        "Exp_Pca.bin (recognised by content). Needs --mapping. Not with a BFM 2017 file that "
        "has its own expression model.",
        show_default=False,
    ),
    mapping: Path | None = typer.Option(
        None,
        "--mapping",
        help="map_tddfa_to_basel.mat: the 0-based Basel vertex of each expression-model vertex.",
        show_default=False,
    ),
    expression_std: Path | None = typer.Option(
        None,
        "--expression-std",
        help="std_exp.txt: standard deviations of the CoarseData components (they are scaled "
        "by them so coefficients follow N(0, 1)).",
        show_default=False,
    ),
    n_shape: int = typer.Option(
        5, "--n-shape", help="Identity components to keep, 0 up to all (199 in BFM 2009)."
    ),
    n_exp: int | None = typer.Option(
        None,
        "--n-exp",
        help="Expression components to keep, up to all the model has (29 3DDFA, 79 CoarseData). "
        "(Default: 5 with an expression model, else 0.)",
        show_default=False,
    ),
    n_color: int | None = typer.Option(
        None,
        "--n-color",
        help="Colour components to carry along. (Default: all the file has.)",
        show_default=False,
    ),
    landmarks: list[str] = typer.Option(
        [],
        "--landmarks",
        help="A landmark set NAME=FILE (.anl, 1-based, or an index list); repeat for more, "
        "e.g. --landmarks aflw21=Landmarks21_BFM.anl --landmarks ibug68=Landmarks68_BFM.anl.",
        show_default=False,
    ),
    data_weight: str = typer.Option(
        "1",
        "--data-weight",
        help="lambda in min |L d|^2 + lambda |S d - w|^2 (the transfer's least squares). 1 is "
        "the stated objective; 'inf' keeps the expression values on mapped vertices exactly "
        "and only extrapolates the others.",
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        help="The model artifact to write (HDF5, written atomically).",
        show_default=False,
    ),
) -> None:
    """``bfm-prep build-expression`` (help text: ``_HELP``)."""
    # lazy: the build needs scipy and libigl; imported here, --help and the other commands go
    # without them
    from bfm_prep.artifact import write_model
    from bfm_prep.build import build_model

    t0 = time.perf_counter()
    weight = _parse_weight(data_weight)
    lm = parse_landmark_options(landmarks)
    check_outputs(
        ("--out", out),
        inputs=[
            ("--bfm", bfm),
            ("--expression", expression),
            ("--mapping", mapping),
            ("--expression-std", expression_std),
            *(("--landmarks", p) for p in lm.values()),
        ],
    )
    diag: dict = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with option_words(**_OPTIONS):
                model = build_model(
                    bfm,
                    expression_path=expression,
                    mapping_path=mapping,
                    expression_std_path=expression_std,
                    n_shape=n_shape,
                    n_exp=n_exp,
                    landmarks=lm,
                    n_color=n_color,
                    weight=weight,
                    diagnostics=diag,
                )
        finally:  # each warning on one line, also when the build fails
            for w in caught:
                print(f"bfm-prep: warning: {w.message}", file=sys.stderr)
    path = write_model(out, model)
    seconds = time.perf_counter() - t0

    p = model.provenance.get("parameters", {})
    print(
        f"Model: {model.n_vertices} vertices, {model.faces.shape[0]} triangles, "
        f"{p.get('bfm_format')} identity model"
    )
    print(
        f"Shape components: {model.n_identity} identity + {model.n_expression} expression "
        f"(source: {p.get('expression_source') or 'none'}), each scaled by its std"
    )
    if diag:
        w = "inf" if math.isinf(weight) else f"{weight:g}"
        print(
            f"Expression transfer: {plural(diag['n_mapped'], 'mapped vertex', 'mapped vertices')}, "
            f"{diag['n_extrapolated']} extrapolated, lambda = {w}, mapped-vertex deviation "
            f"max {diag['mapped_max_deviation_mm']:.3g} mm / rms "
            f"{diag['mapped_rms_deviation_mm']:.3g} mm"
        )
    colour = plural(model.color_basis.shape[2], "component") if model.has_color else "none"
    lms = ", ".join(f"{k} ({v.size})" for k, v in sorted(model.landmarks.items())) or "none"
    print(f"Colour model: {colour}; landmarks: {lms}")
    print(f"Wrote {path.resolve()} in {seconds:.1f} s")
