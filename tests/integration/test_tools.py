"""The benchmark scripts still run (a smoke run each; no timing is asserted: benchmarks are
scripts that print figures, never timed tests)."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from tests.conftest import REPO


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.usefixtures("one_torch_thread")
def test_bench_stn_smoke(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = _tool("bench_stn").main(
        [
            "--device",
            "cpu",
            "--quick",
            "--variants",
            "eager",
            "--batch",
            "1",
            "3",
            "--reps",
            "2",
            "--warmup",
            "0",
            "--no-fit",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    figures = json.loads(out.read_text())
    rows = figures["rows"]
    assert [(r["B"], r["R"], r["variant"]) for r in rows] == [(1, 112, "eager"), (3, 112, "eager")]
    for r in rows:
        assert "error" not in r, r
        assert r["median_ms"] > 0 and math.isfinite(r["ratio_to_floor"])
        # The floor counts the image pixels the taps touch: more than none, at most all.
        assert 0 < r["touched_per_image"] <= 224 * 224
    assert figures["fit_landmarks"] is None
    printed = capsys.readouterr().out
    assert "eager" in printed and "x floor" in printed


@pytest.mark.usefixtures("one_torch_thread")
def test_bench_stn_fit_batch_smoke(tmp_path, capsys, monkeypatch):
    """--fit-only --fit-batch: fit_landmarks on synthetic faces (the in-process surface when
    the reference data is absent), with cpu_threads 1 and 2."""
    monkeypatch.setenv("STN_REFERENCE", str(tmp_path / "absent"))
    out = tmp_path / "fit.json"
    rc = _tool("bench_stn").main(
        ["--fit-only", "--fit-batch", "7", "--fit-repeats", "5", "--json", str(out)]
    )
    assert rc == 0
    figures = json.loads(out.read_text())
    assert figures["rows"] == [] and figures["fit_landmarks"] is None
    rows = figures["fit_landmarks_batch"]
    assert [(r["batch"], r["cpu_threads"]) for r in rows] == [(7, 1), (7, 2)]
    for r in rows:
        assert r["faces_per_s"] > 0 and r["repeats"] == 5
        # 1 px noise per axis: the fitted landmarks are about that far from the observed ones.
        assert 0.2 < r["mean_error_px"] < 2.0, r
    assert "synthetic surface" in capsys.readouterr().out


def test_bench_stn_synthetic_faces_are_the_model_projected():
    """The benchmark's faces: without noise, the model's landmarks at the drawn theta, inside
    the 224 x 224 image."""
    from types import SimpleNamespace

    import torch
    from stn_core.geometry import project_theta

    bench = _tool("bench_stn")
    model, _ = bench.fit_batch_model(
        SimpleNamespace(fit_model=None, reference=REPO / "absent", k=10)
    )
    noisy, clean, theta = bench.synthetic_landmark_faces(model, 50, seed=3, noise_px=0.0)
    assert torch.equal(noisy, clean) and clean.shape == (50, 21, 2)
    points, _ = project_theta(theta, model.mean.double(), model.basis.double())
    idx = torch.as_tensor(model.landmarks["aflw21"])
    torch.testing.assert_close(clean, points[:, idx])
    assert ((clean > 0) & (clean < 224)).all()


def test_bench_stn_floor_bytes_by_hand():
    """The memory-traffic floor, from the rule in the script's docstring, for a small case."""
    floor = _tool("bench_stn").floor_bytes(b=2, c=3, n=5, k=4, h=7, w=7, img_bytes=2, touched=11)
    model = 5 * 3 * 5 * 4
    forward = 11 * 3 * 2 + model + 2 * 5 * 4 + 2 * 10 * 4 + 2 * 3 * 5 * 2
    backward = 2 * 3 * 5 * 2 + 11 * 3 * 2 + model + 2 * 5 * 4 + 2 * 2 * 10 * 4
    assert floor == dict(forward=forward, backward=backward, total=forward + backward)


@pytest.mark.reference
def test_bench_real_model_and_error_convention(ref, tmp_path):
    """bench_real trains on the grid artifact it writes from model_112.mat: the same model as
    load_demo's; and its error path (network pixels -> photograph pixels) gives fit_landmarks'
    own error for the fitted theta seen through a 112-pixel input."""
    import numpy as np
    import torch

    from tests.tolerances import TOL

    ref("3dmmasstn/model_112.mat")
    bench = _tool("bench_real")
    reference = ref("3dmmasstn/demodata.mat").parents[1]
    model, photos, target = bench.load_demo(reference)
    grid = bench.write_grid_artifact(reference, tmp_path / "grid112.h5")
    assert bench.same_model(bench.load_grid_model(grid), model)

    fit = bench.fit_landmarks(model.double(), target, image_size=(224, 224))
    to_image = [bench.square_input(p, 112)[1] for p in photos]
    theta_112 = fit.theta.double().clone()
    theta_112[:, 3:5] = (theta_112[:, 3:5] + 0.5) / 2 - 0.5  # the inverse of to_image's map
    theta_112[:, 5] -= math.log(2.0)
    _, err = bench.errors_224(model, theta_112, to_image, target)
    rtol, atol = TOL[np.float64]
    torch.testing.assert_close(err.mean(1), fit.error_px.double(), rtol=rtol, atol=atol)


@pytest.mark.reference
@pytest.mark.usefixtures("one_torch_thread")
def test_bench_resynth_smoke(ref, tmp_path, capsys):
    """bench_resynth end to end at toy sizes: four source photos re-rendered, three
    localisers trained on the views (with their quality masks), the rendered faces and both,
    each scored on the two held-out photos."""
    ref("3dmmasstn/model_112.mat")
    reference = ref("3dmmasstn/demodata.mat").parents[1]
    out = tmp_path / "rs"
    args = ["--out", str(out), "--reference", str(reference), "--per-face", "2", "--steps", "2"]
    args += ["--synthetic", "16", "--mix", "8", "--batch-size", "4"]
    assert _tool("bench_resynth").main(args) == 0
    record = json.loads((out / "resynth.json").read_text())
    assert record["held_out"] == [5, 6] and record["sources"] == [1, 2, 3, 4]
    assert record["views"] == 8
    assert set(record["errors_px"]) == {"synthetic", "resynth", "mixed"}
    for errors in record["errors_px"].values():
        assert len(errors) == 2 and all(math.isfinite(e) and e > 0 for e in errors)
    views = [json.loads(line) for line in (out / "synth" / "manifest.jsonl").open()]
    assert len(views) == 8 and all(v.get("quality_mask") for v in views)
    assert "mixed" in capsys.readouterr().out
