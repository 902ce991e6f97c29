"""build_model and ``bfm-prep build-expression``: end to end on small files in the exact BFM
2009 / 3DDFA formats (and on the synthetic model), and bad inputs (exit 2, one line, no file)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from bfm_prep.artifact import read_model
from bfm_prep.build import build_model
from bfm_prep.errors import PrepError
from bfm_prep.model import EXPRESSION, IDENTITY
from bfm_prep.provenance import sha256_file

from tests.bfm_prep.cli_helpers import invoke as run_cli
from tests.conftest import reference_file
from tests.tolerances import ARTIFACT_RTOL, TOL

RTOL, ATOL = TOL[np.float64]

# --------------------------------------------------------------------------------------------
# small input files in the exact formats (units: BFM 2009 and 3DDFA store micrometres)

N_SIDE = 13  # 169 vertices
K_ID, K_COL, K_EXP = 12, 4, 7


def _grid(n):
    x, y = np.meshgrid(np.linspace(-60, 60, n), np.linspace(-75, 75, n))
    z = 40.0 * np.exp(-(x**2 + y**2) / 4000.0)
    V = np.stack([x.ravel(), y.ravel(), z.ravel()], 1)
    idx = np.arange(n * n).reshape(n, n)
    a, b = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel()
    c, d = idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    F = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    return V, F


def write_inputs(folder: Path, seed: int = 0) -> dict:
    """01_MorphableModel.mat, Model_Expression.mat, map_tddfa_to_basel.mat, one .anl file."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    V, F = _grid(N_SIDE)
    n = V.shape[0]
    # the expression model lacks a 'mouth interior' near the centre, and lists its vertices
    # in another order than the mesh (as 3DDFA does)
    interior = np.flatnonzero(np.hypot(V[:, 0], V[:, 1]) < 22)
    mapped = rng.permutation(np.setdiff1d(np.arange(n), interior))
    q, _ = np.linalg.qr(rng.normal(size=(3 * n, K_ID)))
    ev = np.sort(rng.uniform(1e3, 2e4, K_ID))[::-1]  # micrometres
    tq, _ = np.linalg.qr(rng.normal(size=(3 * n, K_COL)))
    w_exp = np.empty((3 * mapped.size, K_EXP))
    for k in range(K_EXP):
        f = rng.uniform(0.01, 0.05, 2)
        field = np.stack(
            [np.sin(f[0] * V[:, 0]), np.cos(f[1] * V[:, 1]), np.sin(f @ V[:, :2].T)], axis=1
        )
        w_exp[:, k] = (2000.0 * field[mapped]).reshape(-1)  # micrometres
    files = {
        "bfm": folder / "01_MorphableModel.mat",
        "expression": folder / "Model_Expression.mat",
        "mapping": folder / "map_tddfa_to_basel.mat",
        "lm5": folder / "Landmarks5.anl",
    }
    scipy.io.savemat(
        files["bfm"],
        {
            "shapeMU": (1000.0 * V).reshape(-1, 1).astype(np.float32),
            "shapePC": q.astype(np.float32),
            "shapeEV": ev.reshape(-1, 1).astype(np.float32),
            "texMU": rng.uniform(50, 200, (3 * n, 1)).astype(np.float32),
            "texPC": tq.astype(np.float32),
            "texEV": rng.uniform(5, 30, (K_COL, 1)).astype(np.float32),
            "tl": (F + 1).astype(np.float64),
        },
    )
    scipy.io.savemat(
        files["expression"],
        {
            "w_exp": w_exp.astype(np.float32),
            "mu_exp": np.zeros((3 * mapped.size, 1), np.float32),
            "sigma_exp": np.ones((K_EXP, 1), np.float32),
        },
    )
    scipy.io.savemat(
        files["mapping"], {"map_tddfa_to_basel": mapped.reshape(1, -1).astype(np.uint16)}
    )
    lm5 = np.array([0, 6, 84, 162, 168])
    files["lm5"].write_text("% five landmarks, 1-based\n" + "".join(f"{i + 1}\n" for i in lm5))
    truth = dict(V=V, F=F, mapped=mapped, q=q, ev=ev, w_exp=w_exp, lm5=lm5)
    return {k: str(v) for k, v in files.items()} | {"truth": truth}


@pytest.fixture
def inputs(tmp_path):
    return write_inputs(tmp_path / "in")


def cli_args(inp: dict, out: Path, *extra: str) -> list[str]:
    return [
        "build-expression",
        "--bfm",
        inp["bfm"],
        "--expression",
        inp["expression"],
        "--mapping",
        inp["mapping"],
        *extra,
        "--out",
        str(out),
    ]


# --------------------------------------------------------------------------------------------
# build_model


def test_build_model_scales_identity_transfers_expression_and_records_provenance(inputs):
    t = inputs["truth"]
    diag: dict = {}
    m = build_model(
        inputs["bfm"],
        inputs["expression"],
        inputs["mapping"],
        n_shape=K_ID,
        n_exp=K_EXP,
        landmarks={"lm5": inputs["lm5"]},
        diagnostics=diag,
    )
    n = t["V"].shape[0]
    assert m.shape_basis.shape == (n, 3, K_ID + K_EXP)
    assert m.shape_kind == [IDENTITY] * K_ID + [EXPRESSION] * K_EXP
    # identity: unit component times its standard deviation, micrometres -> mm
    expected_id = (t["q"] * t["ev"]).reshape(n, 3, K_ID) / 1000.0
    np.testing.assert_allclose(
        m.shape_basis[..., :K_ID], expected_id, rtol=TOL[np.float32][0] * 10, atol=1e-6
    )
    np.testing.assert_allclose(m.shape_std[:K_ID], t["ev"] / 1000.0, rtol=TOL[np.float32][0])
    np.testing.assert_allclose(m.shape_std[K_ID:], 1.0)  # 3DDFA components used as stored
    np.testing.assert_allclose(m.shape_mean, t["V"], rtol=TOL[np.float32][0], atol=1e-4)
    # expression: on mapped vertices close to the 3DDFA values (lambda = 1 smooths slightly)
    w = t["w_exp"].reshape(-1, 3, K_EXP) / 1000.0
    dev = np.linalg.norm(m.shape_basis[t["mapped"], :, K_ID:] - w, axis=1)
    assert dev.max() == pytest.approx(diag["mapped_max_deviation_mm"], rel=1e-5)
    # this grid's 12 mm spacing is a worst case for the soft data term (its pull on mapped
    # vertices grows with the spacing): measured rms 9 %, max 20 % of the displacement
    w_norm = np.linalg.norm(w, axis=1)
    assert np.sqrt((dev**2).mean()) < 0.15 * np.sqrt((w_norm**2).mean())
    assert dev.max() < 0.3 * w_norm.max()
    assert diag["n_extrapolated"] == n - t["mapped"].size
    # colour carried along, landmarks 0-based
    assert m.has_color and m.color_basis.shape == (n, 3, K_COL)
    np.testing.assert_array_equal(m.landmarks["lm5"], t["lm5"])
    # provenance: every input's SHA-256, every parameter
    ins = m.provenance["inputs"]
    for key, label in [
        ("bfm", "bfm"),
        ("expression", "expression"),
        ("mapping", "mapping"),
        ("lm5", "landmarks/lm5"),
    ]:
        assert ins[label]["sha256"] == sha256_file(inputs[key])
    p = m.provenance["parameters"]
    assert p["n_shape"] == K_ID and p["n_exp"] == K_EXP and p["expression_source"] == "3ddfa"
    assert "standard deviation" in p["identity_scaling"] and p["expression_scaling"]
    assert p["transfer"]["weight"] == 1.0 and p["transfer"]["n_mapped"] == t["mapped"].size


def test_build_model_hard_constraint_keeps_3ddfa_values_exactly(inputs):
    t = inputs["truth"]
    m = build_model(
        inputs["bfm"], inputs["expression"], inputs["mapping"], n_shape=2, n_exp=3, weight=math.inf
    )
    w = t["w_exp"].reshape(-1, 3, K_EXP)[:, :, :3].astype(np.float32).astype(np.float64) / 1000.0
    np.testing.assert_allclose(m.shape_basis[t["mapped"], :, 2:], w, rtol=RTOL, atol=ATOL)
    assert m.provenance["parameters"]["transfer"]["weight"] == "inf"


def write_coarsedata(folder: Path, truth: dict, n_comp: int, std: np.ndarray) -> tuple[Path, Path]:
    """An Exp_Pca.bin (int32 D, float32 mean 3V, D components of 3V) and a std_exp.txt, on
    the same vertices as the 3DDFA file, with unit-norm components."""
    n_src = truth["mapped"].size
    rng = np.random.default_rng(7)
    comps = rng.normal(size=(n_comp, 3 * n_src))
    comps /= np.linalg.norm(comps, axis=1, keepdims=True)
    bin_path, std_path = folder / "Exp_Pca.bin", folder / "std_exp.txt"
    with open(bin_path, "wb") as f:
        f.write(np.array([n_comp], dtype="<i4").tobytes())
        f.write(np.zeros(3 * n_src, dtype="<f4").tobytes())
        f.write(comps.astype("<f4").tobytes())
    std_path.write_text("\n".join(f"{x:.6f}" for x in std) + "\n")
    return bin_path, std_path


def test_build_model_with_coarsedata_scales_by_std(tmp_path, inputs):
    t = inputs["truth"]
    std = np.linspace(40000.0, 1000.0, 9)  # micrometres, like the real std_exp.txt
    bin_path, std_path = write_coarsedata(tmp_path, t, 9, std)
    m = build_model(
        inputs["bfm"], bin_path, inputs["mapping"], std_path, n_shape=2, n_exp=9, weight=math.inf
    )
    assert m.shape_kind == [IDENTITY] * 2 + [EXPRESSION] * 9
    np.testing.assert_allclose(m.shape_std[2:], std / 1000.0, rtol=TOL[np.float32][0])
    # a unit-norm component times its std: the transferred component's norm over the mapped
    # vertices is the std in mm (the hard constraint keeps mapped values exactly)
    norms = np.linalg.norm(m.shape_basis[t["mapped"], :, 2:].reshape(-1, 9), axis=0)
    np.testing.assert_allclose(norms, std / 1000.0, rtol=1e-5)
    p = m.provenance
    assert p["parameters"]["expression_source"] == "coarsedata"
    assert p["inputs"]["expression_std"]["sha256"] == sha256_file(std_path)
    with pytest.raises(PrepError, match="^n_exp 10 asks for more expression components"):
        build_model(inputs["bfm"], bin_path, inputs["mapping"], std_path, n_shape=2, n_exp=10)


@pytest.mark.reference
def test_all_79_coarsedata_components_with_the_real_std_file(tmp_path, inputs):
    # the real std_exp.txt (79 values); the basis itself is not available, so one in its
    # exact layout is written on the small test mesh
    std = np.loadtxt(reference_file("coarsedata/std_exp.txt")).reshape(-1)
    assert std.size == 79
    bin_path, _ = write_coarsedata(tmp_path, inputs["truth"], 79, std)
    m = build_model(
        inputs["bfm"],
        bin_path,
        inputs["mapping"],
        reference_file("coarsedata/std_exp.txt"),
        n_shape=K_ID,
        n_exp=79,
    )
    assert m.n_identity == K_ID and m.n_expression == 79
    np.testing.assert_allclose(m.shape_std[K_ID:], std / 1000.0, rtol=TOL[np.float32][0])


def test_build_model_without_expression_is_identity_only(inputs):
    m = build_model(inputs["bfm"], n_shape=3)
    assert m.shape_kind == [IDENTITY] * 3 and m.n_expression == 0
    assert m.provenance["parameters"]["expression_source"] is None
    with pytest.raises(PrepError, match="^n_exp 4 needs an expression model"):
        build_model(inputs["bfm"], n_shape=3, n_exp=4)


def write_bfm2017_with_expression(path: Path, truth: dict) -> Path:
    """The test mesh and identity model as a BFM 2017 .h5 with its own 4 expression components
    (standard deviations 2, sqrt(3), sqrt(2), 1 mm)."""
    n = truth["V"].shape[0]
    rng = np.random.default_rng(1)
    with h5py.File(path, "w") as f:
        f["shape/model/mean"] = truth["V"].reshape(-1).astype(np.float32)
        f["shape/model/pcaBasis"] = truth["q"].astype(np.float32)
        f["shape/model/pcaVariance"] = (truth["ev"] / 1000.0) ** 2
        f["shape/representer/cells"] = truth["F"].T.astype(np.uint32)
        eq, _ = np.linalg.qr(rng.normal(size=(3 * n, 4)))
        f["expression/model/mean"] = np.zeros(3 * n, np.float32)
        f["expression/model/pcaBasis"] = eq.astype(np.float32)
        f["expression/model/pcaVariance"] = np.array([4.0, 3.0, 2.0, 1.0])
    return path


def test_bfm2017_own_expression_model_refuses_a_second_one(tmp_path, inputs):
    path = write_bfm2017_with_expression(tmp_path / "model2017.h5", inputs["truth"])
    m = build_model(path, n_shape=3, n_exp=2)
    assert m.shape_kind == [IDENTITY] * 3 + [EXPRESSION] * 2
    np.testing.assert_allclose(m.shape_std[3:], [2.0, np.sqrt(3.0)], rtol=TOL[np.float32][0])
    assert m.provenance["parameters"]["expression_source"] == "bfm2017"
    with pytest.raises(PrepError, match="has its own expression model"):
        build_model(path, inputs["expression"], inputs["mapping"], n_shape=3, n_exp=2)


# --------------------------------------------------------------------------------------------
# the CLI, end to end


def test_cli_end_to_end_writes_the_artifact_it_describes(inputs, tmp_path, capsys):
    out = tmp_path / "res" / "model.h5"
    code, stdout, stderr = run_cli(
        cli_args(
            inputs,
            out,
            "--n-shape",
            str(K_ID),
            "--n-exp",
            str(K_EXP),
            "--landmarks",
            f"lm5={inputs['lm5']}",
        ),
        capsys,
    )
    assert code == 0, stderr
    assert f"Wrote {out.resolve()}" in stdout
    assert f"{K_ID} identity + {K_EXP} expression" in stdout
    m = read_model(out)
    ref = build_model(
        inputs["bfm"],
        inputs["expression"],
        inputs["mapping"],
        n_shape=K_ID,
        n_exp=K_EXP,
        landmarks={"lm5": inputs["lm5"]},
    )
    np.testing.assert_allclose(
        m.shape_basis,
        ref.shape_basis,
        rtol=ARTIFACT_RTOL,
        atol=ARTIFACT_RTOL * np.abs(ref.shape_basis).max(),
    )
    assert m.shape_kind == ref.shape_kind
    np.testing.assert_array_equal(m.faces, ref.faces)
    np.testing.assert_array_equal(m.landmarks["lm5"], ref.landmarks["lm5"])
    assert m.provenance["inputs"]["bfm"]["sha256"] == sha256_file(inputs["bfm"])
    assert m.provenance["parameters"]["n_exp"] == K_EXP
    assert [p.name for p in out.parent.iterdir()] == ["model.h5"]  # no temporary left


def test_cli_console_script_runs(inputs, tmp_path):
    out = tmp_path / "model.h5"
    r = subprocess.run(
        [sys.executable, "-m", "bfm_prep", *cli_args(inputs, out, "--n-exp", "2")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert out.is_file() and "Wrote" in r.stdout


def test_cli_on_the_synthetic_model(tmp_path, capsys):
    from bfm_prep.synth import write_synthetic

    files = write_synthetic(
        tmp_path / "synth", seed=0, n_vertices=2000, n_shape=20, n_color=5, n_exp=12
    )
    out = tmp_path / "model.h5"
    code, stdout, stderr = run_cli(
        [
            "build-expression",
            "--bfm",
            str(files["bfm"]),
            "--expression",
            str(files["expression"]),
            "--mapping",
            str(files["mapping"]),
            "--landmarks",
            f"aflw21={files['aflw21']}",
            "--landmarks",
            f"ibug68={files['ibug68']}",
            "--n-shape",
            "20",
            "--n-exp",
            "12",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 0, stderr
    m = read_model(out)
    assert m.n_identity == 20 and m.n_expression == 12 and m.color_basis.shape[2] == 5
    assert sorted(m.landmarks) == ["aflw21", "ibug68"]
    assert np.isfinite(m.shape_basis).all()
    # every vertex got an expression displacement, the mouth interior included
    p = m.provenance["parameters"]["transfer"]
    assert p["n_unconstrained"] == 0 and p["n_extrapolated"] > 0
    assert p["n_mapped"] + p["n_extrapolated"] == m.n_vertices


# --------------------------------------------------------------------------------------------
# bad inputs: exit status 2, one line naming the problem, no output file


def _assert_refused(code, stdout, stderr, out: Path, match: str):
    assert code == 2, (code, stdout, stderr)
    lines = stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("bfm-prep: error:")]
    assert len(errors) == 1 and errors == lines[-1:], stderr
    assert "Traceback" not in stderr
    assert match in errors[0], errors[0]
    assert not out.exists()
    assert not list(out.parent.glob(".*.tmp")) if out.parent.exists() else True


@pytest.mark.parametrize(
    "case, match",
    [
        ("missing_bfm", "no such file"),
        ("missing_mapping", "no such file"),
        ("n_shape_too_large", "--n-shape 13 asks"),
        ("n_exp_too_large", "--n-exp 8 asks"),
        ("mapping_length", "entries but the expression model has"),
        ("mapping_out_of_range", "map_tddfa_to_basel"),
        ("bfm_is_text", "01_MorphableModel.mat"),
        ("bfm_is_expression_file", "shapeMU"),
        ("expression_is_mapping", "w_exp"),
        ("expression_without_mapping", "needs --mapping"),
        (
            "n_exp_without_expression",
            "--n-exp 3 needs an expression model: pass --expression and --mapping (or --n-exp 0 "
            "for an identity-only model).",
        ),
        ("bad_landmark_option", "expected NAME=FILE"),
        ("bad_weight", "--data-weight"),
        ("negative_n_shape", "non-negative"),
    ],
)
def test_cli_bad_inputs_exit_2_with_one_line_and_no_file(case, match, inputs, tmp_path, capsys):
    out = tmp_path / "o" / "model.h5"
    out.parent.mkdir()
    inp = dict(inputs)
    extra: list[str] = []
    if case == "missing_bfm":
        inp["bfm"] = str(tmp_path / "nope.mat")
    elif case == "missing_mapping":
        inp["mapping"] = str(tmp_path / "nope_map.mat")
    elif case == "n_shape_too_large":
        extra = ["--n-shape", str(K_ID + 1)]
    elif case == "n_exp_too_large":
        extra = ["--n-exp", str(K_EXP + 1)]
    elif case == "mapping_length":
        m = scipy.io.loadmat(inp["mapping"])["map_tddfa_to_basel"]
        inp["mapping"] = str(tmp_path / "short_map.mat")
        scipy.io.savemat(inp["mapping"], {"map_tddfa_to_basel": m[:, :-3]})
    elif case == "mapping_out_of_range":
        m = scipy.io.loadmat(inp["mapping"])["map_tddfa_to_basel"].copy()
        m[0, 0] = N_SIDE * N_SIDE  # one past the last vertex
        inp["mapping"] = str(tmp_path / "bad_map.mat")
        scipy.io.savemat(inp["mapping"], {"map_tddfa_to_basel": m})
    elif case == "bfm_is_text":
        inp["bfm"] = str(tmp_path / "01_MorphableModel.mat")
        Path(inp["bfm"]).write_text("this is not a MATLAB file\n" * 20)
    elif case == "bfm_is_expression_file":
        inp["bfm"] = inp["expression"]
    elif case == "expression_is_mapping":
        inp["expression"] = inp["mapping"]
    elif case == "expression_without_mapping":
        argv = [
            "build-expression",
            "--bfm",
            inp["bfm"],
            "--expression",
            inp["expression"],
            "--out",
            str(out),
        ]
    elif case == "n_exp_without_expression":
        argv = ["build-expression", "--bfm", inp["bfm"], "--n-exp", "3", "--out", str(out)]
    elif case == "bad_landmark_option":
        extra = ["--landmarks", inp["lm5"]]
    elif case == "bad_weight":
        extra = ["--data-weight", "-1"]
    elif case == "negative_n_shape":
        extra = ["--n-shape", "-1"]
    if case not in ("expression_without_mapping", "n_exp_without_expression"):
        argv = cli_args(inp, out, *extra)
    code, stdout, stderr = run_cli(argv, capsys)
    _assert_refused(code, stdout, stderr, out, match)


def test_cli_out_is_a_folder(inputs, tmp_path, capsys):
    code, stdout, stderr = run_cli(cli_args(inputs, tmp_path), capsys)
    assert code == 2 and "is a folder" in stderr and len(stderr.strip().splitlines()) == 1
    assert list(tmp_path.glob(".*.tmp")) == []


def test_cli_failed_build_keeps_an_existing_artifact(inputs, tmp_path, capsys):
    out = tmp_path / "model.h5"
    assert run_cli(cli_args(inputs, out, "--n-exp", "2"), capsys)[0] == 0
    before = sha256_file(out)
    code, _, stderr = run_cli(cli_args(inputs, out, "--n-shape", "999"), capsys)
    assert code == 2 and sha256_file(out) == before


def _wording_case(case: str, inp: dict, folder: Path) -> tuple[list[str], str]:
    """(the options after ``build-expression``, the exact sentence of the error) of a case whose
    error the library raises naming its own parameters."""
    bfm, expr, mapping = inp["bfm"], inp["expression"], inp["mapping"]
    if case in ("coarsedata_without_std", "coarsedata_n_exp_too_large"):
        std = np.linspace(40000.0, 1000.0, 9)
        bin_path, std_path = write_coarsedata(folder, inp["truth"], 9, std)
        if case == "coarsedata_without_std":
            return (
                ["--bfm", bfm, "--expression", bin_path, "--mapping", mapping],
                f"{bin_path}: is a CoarseData Exp_Pca.bin, which needs its standard deviations; "
                "pass std_exp.txt with --expression-std.",
            )
        return (
            ["--bfm", bfm, "--expression", bin_path, "--mapping", mapping]
            + ["--expression-std", std_path, "--n-exp", "10"],
            f"--n-exp 10 asks for more expression components than the 9 in {bin_path}; pass at "
            "most 9.",
        )
    if case.startswith("bfm2017"):
        h5 = write_bfm2017_with_expression(folder / "model2017.h5", inp["truth"])
        if case == "bfm2017_own_expression":
            return (
                ["--bfm", h5, "--expression", expr, "--mapping", mapping],
                f"{h5}: this BFM 2017/2019 file has its own expression model, which replaces the "
                "3DDFA/CoarseData one; drop --expression, --mapping and --expression-std.",
            )
        return (
            ["--bfm", h5, "--n-shape", "3", "--n-exp", "5"],
            f"--n-exp 5 asks for more expression components than the 4 in {h5}; pass at most 4.",
        )
    if case == "bfm2009_without_colour":
        d = scipy.io.loadmat(bfm)
        no_colour = folder / "no_colour.mat"
        scipy.io.savemat(no_colour, {k: d[k] for k in ("shapeMU", "shapePC", "shapeEV", "tl")})
        return (
            ["--bfm", no_colour, "--n-color", "2"],
            f"{no_colour}: has no colour model (texMU, texPC, texEV); drop --n-color.",
        )
    if case == "expression_is_text":
        text = folder / "expr.mat"
        text.write_text("hello, this is text")
        return (
            ["--bfm", bfm, "--expression", text, "--mapping", mapping],
            f"{text}: is neither a 3DDFA Model_Expression.mat (no MATLAB header) nor a CoarseData "
            "Exp_Pca.bin (no plausible int32 component count in its first 4 bytes); pass one of "
            "those two files to --expression.",
        )
    std_txt = folder / "std_exp.txt"
    std_txt.write_text("1 2 3\n")
    return {
        "n_color_too_large": (
            ["--bfm", bfm, "--n-color", str(K_COL + 1)],
            f"--n-color {K_COL + 1} asks for more colour components than the {K_COL} in {bfm}; "
            f"pass at most {K_COL}.",
        ),
        "n_color_negative": (
            ["--bfm", bfm, "--n-color", "-1"],
            "--n-color must be a non-negative integer, got -1.",
        ),
        "mapping_without_expression": (
            ["--bfm", bfm, "--mapping", mapping],
            f"{mapping}: --mapping was given without --expression.",
        ),
        "std_without_expression": (
            ["--bfm", bfm, "--expression-std", std_txt],
            f"{std_txt}: --expression-std was given without --expression.",
        ),
        "expression_without_mapping": (
            ["--bfm", bfm, "--expression", expr],
            f"{expr}: an expression model needs --mapping (the mesh vertex of each "
            "expression-model vertex, e.g. map_tddfa_to_basel.mat).",
        ),
        "bad_landmark_name": (
            ["--bfm", bfm, "--landmarks", f"9x={inp['lm5']}"],
            "Landmark set name '9x' is not valid; use letters, digits and _ "
            "(e.g. --landmarks ibug68=FILE).",
        ),
    }[case]


@pytest.mark.parametrize(
    "case",
    [
        "n_color_too_large",
        "n_color_negative",
        "mapping_without_expression",
        "std_without_expression",
        "expression_without_mapping",
        "bad_landmark_name",
        "coarsedata_without_std",
        "coarsedata_n_exp_too_large",
        "bfm2017_own_expression",
        "bfm2017_n_exp_too_large",
        "bfm2009_without_colour",
        "expression_is_text",
    ],
)
def test_cli_says_its_options_where_the_library_names_parameters(case, inputs, tmp_path, capsys):
    """The library names its parameters (n_exp, mapping_path); the command says the same
    sentence with its options, exactly."""
    folder = tmp_path / "case"
    folder.mkdir()
    options, sentence = _wording_case(case, inputs, folder)
    out = tmp_path / "o" / "model.h5"
    code, stdout, stderr = run_cli(["build-expression", *options, "--out", out], capsys)
    _assert_refused(code, stdout, stderr, out, f"bfm-prep: error: {sentence}")
