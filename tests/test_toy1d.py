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
    # half the tiny SGHMC (150 steps a chain, 10 kept): the sampler only has to run for
    # the table's columns and the posterior plot; W1 and matching keep the tiny budget.
    # One curve point fewer than the --match-only test (which covers the points between)
    bench.SIZES["tiny"] = dict(bench.SIZES["tiny"], warmup=100, thin=5)
    out = tmp_path / "r.json"
    rows = bench.main(["--size", "tiny", "--priors", "fg,gpig", "--w1-steps", "100",
                       "--curve-points", "1",
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
    # two outer steps: the fewest that run the warm critic's later steps (a reference
    # step costs 200 critic steps)
    rows = bench.main(["--steps", "2", "--hidden", "8", "--warm-steps", "5", "--eval-sets",
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


def test_uci_bnn_predictive_metrics_against_scipy():
    """The mixture log-likelihood (log-mean-exp over draws of N(y | f_s, var_n)) and the
    moment-matched one (N(y | mean, var_s + var_n), the reference's) against scipy, point
    by point; RMSE of the mean by hand."""
    import numpy as np
    from scipy.stats import norm

    bench = _bench("uci_bnn")
    rng = np.random.default_rng(0)
    f = rng.normal(3.0, 2.0, (40, 7)) + rng.normal(0, 1.0, 7)  # 40 draws at 7 test points
    y = rng.normal(3.0, 2.5, 7)
    var_n = 0.37
    got = bench.predictive_metrics(torch.tensor(f), torch.tensor(y), var_n)
    mix = np.mean([np.log(np.mean(norm.pdf(y[i], f[:, i], math.sqrt(var_n))))
                   for i in range(7)])
    mm = np.mean(norm.logpdf(y, f.mean(0), np.sqrt(f.var(0, ddof=1) + var_n)))
    assert got["ll"] == pytest.approx(mix, abs=1e-10)
    assert got["ll_moment"] == pytest.approx(mm, abs=1e-10)
    assert got["rmse"] == pytest.approx(np.sqrt(np.mean((f.mean(0) - y) ** 2)), abs=1e-12)
    assert got["ll"] != pytest.approx(got["ll_moment"], abs=1e-3)  # two different scores


def test_uci_bnn_first_split_runs_merge_to_the_whole_run(tmp_path, data_dir, capsys):
    """Splits run one per process (--first-split K --splits 1) and merged with --merge give
    the numbers of one run over the same splits; a split merged twice with different
    results is an error."""
    bench = _bench("uci_bnn")
    # each process fits its priors afresh (its own cache), as a resumed run would
    common = ["--data", str(data_dir / "uci" / "yacht"), "--budget", "tiny", "--priors",
              "fg,gpig", "--threads", "1"]
    whole = bench.main(common + ["--splits", "2", "--cache", str(tmp_path / "c_whole")])
    parts = []
    for k in (1, 0):
        out = tmp_path / f"s{k}.json"
        rows = bench.main(common + ["--first-split", str(k), "--json", str(out),
                                    "--cache", str(tmp_path / f"c{k}")])
        assert set(bench.per_split_of(rows["fg"])) == {k}
        parts.append(str(out))
    merged = bench.main(["--merge", *parts,
                         "--json", str(tmp_path / "m.json")])
    assert json.loads((tmp_path / "m.json").read_text()) == merged
    for prior in ("fg", "gpig"):
        for col in ("rmse", "ll", "ll_moment", "rmse_se", "ll_se", "rhat_max",
                    "rmse_split0", "ll_split1", "ll_moment_split1", "rhat_max_split0"):
            assert merged[prior][col] == pytest.approx(whole[prior][col], rel=1e-9), col
    assert "on RMSE in" in capsys.readouterr().out
    assert merged["fg"]["cfg_seed"] == 0 and merged["fg"]["cfg_hidden"] == 10
    clash = json.loads(Path(parts[0]).read_text())
    clash["fg"]["rmse_split1"] += 1.0
    (tmp_path / "clash.json").write_text(json.dumps(clash))
    with pytest.raises(ValueError, match="split 1 of fg"):
        bench.main(["--merge", parts[0], str(tmp_path / "clash.json")])
    # the same split again, only slower: not a clash
    rerun = json.loads(Path(parts[0]).read_text())
    rerun["fg"]["sample_s_split1"] += 5.0
    (tmp_path / "rerun.json").write_text(json.dumps(rerun))
    bench.main(["--merge", parts[0], str(tmp_path / "rerun.json")])
    # runs with other settings do not merge
    other = json.loads(Path(parts[1]).read_text())
    for prior in other:
        other[prior]["cfg_eta"] *= 2
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match="cfg_eta"):
        bench.main(["--merge", parts[0], str(tmp_path / "other.json")])
