"""The network-prior benchmark scripts at tiny sizes: benchmarks/toy1d.py (METHODS.md §1's
1-D toy) and benchmarks/prior_fit_speed.py (reference vs warm-started critic)."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from ppl.runtime import network_priors as npr

ROOT = Path(__file__).resolve().parents[1]


def _bench(name):
    spec = importlib.util.spec_from_file_location(f"{name}_bench", ROOT / "benchmarks" /
                                                  f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BDL_CACHE_DIR", str(tmp_path / "cache"))
    npr._MEMO.clear()
    yield
    npr._MEMO.clear()


def test_toy1d_data_has_the_gap_and_the_gp_noise():
    """64 inputs in [-10, -4] ∪ [4, 10]; y - f has the noise variance 0.1 (chi-square
    tolerance: the variance of a 64-sample variance is 2 sigma^4 / 63)."""
    bench = _bench("toy1d")
    d = bench.make_data(0)
    assert d["x"].shape == (64,) and bool((d["x"].abs() >= 4).all())
    assert bool((d["x"].abs() <= 10).all())
    assert bool((d["x"][1:] >= d["x"][:-1]).all())
    resid = (d["y"] - d["f"]).var().item()
    assert abs(resid - 0.1) < 4 * 0.1 * math.sqrt(2 / 63)


def test_toy1d_tiny_run_tables_plots_and_w1(tmp_path):
    bench = _bench("toy1d")
    out = tmp_path / "r.json"
    rows = bench.main(["--size", "tiny", "--priors", "fg,gpig", "--w1-steps", "100",
                       "--curve-points", "2",
                       "--out", str(tmp_path / "figs"), "--json", str(out)])
    assert json.loads(out.read_text()) == rows
    for name in ("fg", "gpig"):
        assert {"train_rmse", "gap_rmse", "w1", "fit_s", "sample_s", "rhat_max"} <= set(rows[name])
        assert all(math.isfinite(v) for v in rows[name].values())
    # matching moves the prior towards the GP even at 30 outer steps of a 1x20 net
    assert rows["gpig"]["w1"] < rows["fg"]["w1"]
    assert rows["fg"]["fit_s"] == 0.0 and rows["gpig"]["fit_s"] > 0.0
    for png in ("w1_curve.png", "prior_bands.png", "posterior_bands.png"):
        assert (tmp_path / "figs" / png).stat().st_size > 5000


def test_toy1d_match_only_reports_the_fall_from_the_fits_start(tmp_path):
    """--match-only: matched priors fitted through the BDL program without SGHMC; w1_start
    is the fresh-critic W1 of the starting psi (FG for tiny) and w1_drop_start its ratio."""
    bench = _bench("toy1d")
    rows = bench.main(["--size", "tiny", "--priors", "gpig,gpih", "--match-only",
                       "--gpih-min-shape", "1", "--w1-steps", "50", "--curve-points", "2"])
    for name in ("gpig", "gpih"):
        row = rows[name]
        assert "train_rmse" not in row and "rhat_max" not in row and row["fit_s"] > 0
        assert row["skipped_steps"] == 0
        # matching moves each prior towards the GP: its fitted W1 is below its start's
        assert row["w1"] < row["w1_start"]
        assert row["w1_drop_start"] == pytest.approx(row["w1_start"] / row["w1"])


def test_toy1d_paper_size_is_the_reference_matching_setting():
    """METHODS §1: 200-point grid, 512 samples, 800 outer steps, RMSprop lr 0.01, psi from
    the reference code's raw rho = 1; the generated BDL carries the options and compiles."""
    bench = _bench("toy1d")
    s = bench.SIZES["paper"]
    assert (s["points"], s["fsamples"], s["steps"], s["lr"]) == (200, 512, 800, 0.01)
    assert s["init_scale"] == pytest.approx(math.log1p(math.e))
    src = bench.prior_source("gpig", s, 0, "rbf(lengthscale=0.6, variance=1)", inputs="x_meas",
                             measure="grid", points=s["points"], lr=s["lr"])
    assert "init_scale=1.3132616" in src and "share_samples=true" in src
    import ppl

    ppl.compile(bench.SOURCE.replace("HIDDEN", "[50, 50, 50]").replace("PRIOR", src)
                .replace("NOISE", "0.3"))


def test_benchmarks_refuse_cuda_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for name, args in (("toy1d", []), ("prior_fit_speed", [])):
        with pytest.raises(SystemExit, match="CUDA is not available"):
            _bench(name).main(args + ["--device", "cuda"])


def test_prior_fit_speed_tiny_run(tmp_path):
    bench = _bench("prior_fit_speed")
    out = tmp_path / "s.json"
    rows = bench.main(["--steps", "3", "--hidden", "8", "--warm-steps", "5", "--eval-sets",
                       "2", "--w1-steps", "20", "--json", str(out)])
    assert json.loads(out.read_text()) == rows
    assert set(rows) == {"fg", "reference", "warm"}
    assert {"speedup", "w1_minus_reference", "w1_diff_se"} <= set(rows["warm"])
    assert all(math.isfinite(rows[k]["w1"]) for k in ("fg", "reference", "warm"))


def test_uci_bnn_tiny_budget_rows_and_columns(tmp_path, data_dir):
    """benchmarks/uci_bnn.py end to end on yacht at a smoke budget: the issue's JSON rows
    and columns, and predictions in original units (RMSE below the targets' spread)."""
    import numpy as np

    bench = _bench("uci_bnn")
    folder = data_dir / "uci" / "yacht"
    out = tmp_path / "u.json"
    rows = bench.main(["--data", str(folder), "--budget", "tiny", "--priors", "fg,gpih",
                       "--threads", "1", "--cache", str(tmp_path / "c"), "--json", str(out)])
    assert set(json.loads(out.read_text())) == {"fg", "gpih"}
    y = np.loadtxt(folder / "data.txt")[:, int(np.loadtxt(folder / "index_target.txt"))]
    for row in rows.values():
        assert {"rmse", "rmse_se", "ll", "ll_se", "fit_s", "sample_s"} <= set(row)
        assert 0 < row["rmse"] < 1.5 * y.std()
        assert math.isfinite(row["ll"])
    assert rows["gpih"]["fit_s"] > 0 and rows["fg"]["fit_s"] == 0
