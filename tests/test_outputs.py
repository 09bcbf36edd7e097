"""Run-folder extras: plots (matplotlib) and ArviZ export, when those extras are there."""

from __future__ import annotations

import numpy as np
import pytest
from test_cli import LINREG

import ppl
from ppl.plots import write_plots


@pytest.fixture(scope="module")
def fits():
    rng = np.random.default_rng(0)
    x = rng.normal(size=30)
    data = {"x": x, "y": 1 + 2 * x + 0.5 * rng.normal(size=30), "x_new": np.linspace(-2, 2, 9)}
    m = ppl.compile(LINREG)
    nuts = m.fit(data, infer="nuts", samples=60, warmup=60, chains=2, seed=0)
    svi = m.fit(data, infer="svi", steps=100, lr=0.05, samples=50, seed=0)
    return nuts, svi


def test_plots(fits, tmp_path):
    pytest.importorskip("matplotlib")
    nuts, svi = fits
    covariates = {k: v for k, v in nuts.kwargs.items() if k != "y"}
    assert write_plots(nuts, tmp_path, covariates, ["y_new"]) == ["trace.png",
                                                                 "predictive_y_new.png"]
    # nothing predicted, no predictive plot
    assert write_plots(nuts, tmp_path, covariates, []) == ["trace.png"]
    assert write_plots(svi, tmp_path, svi.kwargs)[0] == "elbo.png"
    for name in ("trace.png", "predictive_y_new.png", "elbo.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_of_a_network_input_and_of_a_point_estimate(tmp_path):
    # a one-column input (x_new: real[M, 1]) is a 1-D input for the predictive plot; a
    # map fit's draws are copies of the estimate: no trace plot
    pytest.importorskip("matplotlib")
    m = ppl.compile("model R(x: real[N, 1], y: real[N], xn: real[M, 1], yn: real[M]?) {\n"
                    "  a ~ Normal(0, 1)\n  s ~ HalfNormal(1)\n  y ~ Normal(a * x[:, 0], s)\n"
                    "  yn ~ Normal(a * xn[:, 0], s)\n}\n")
    data = {"x": [[0.0], [1.0], [2.0]], "y": [0.1, 0.9, 2.1], "xn": [[0.5], [1.5]]}
    fit = m.fit(data, infer="map", steps=20, samples=20, seed=0)
    inputs = {k: v for k, v in fit.kwargs.items() if k != "y"}
    assert write_plots(fit, tmp_path, inputs, ["yn"]) == ["elbo.png", "predictive_yn.png"]


def test_no_predictive_plot_for_an_output_of_no_points(fits, tmp_path):
    # x_new of length 0: y_new has no points, so there is no band to draw (it was an
    # empty figure)
    pytest.importorskip("matplotlib")
    nuts, _ = fits
    m = ppl.compile(LINREG)
    data = {k: v.numpy() for k, v in nuts.kwargs.items() if k in ("x", "y")}
    fit = m.fit({**data, "x_new": np.zeros(0)}, infer="nuts", samples=20, warmup=20,
                chains=1, seed=0)
    covariates = {k: v for k, v in fit.kwargs.items() if k != "y"}
    assert write_plots(fit, tmp_path, covariates, ["y_new"]) == ["trace.png"]
    assert not (tmp_path / "predictive_y_new.png").exists()


def test_arviz_export_round_trip(fits, tmp_path):
    pytest.importorskip("arviz_base")
    xr = pytest.importorskip("xarray")
    nuts, _ = fits
    dt = nuts.to_inference_data()
    post = dt["posterior"]
    assert post["beta"].shape == (2, 60)
    assert post["y_new"].shape == (2, 60, 9)
    np.testing.assert_allclose(post["beta"].values, nuts.chains["beta"].numpy())
    np.testing.assert_allclose(dt["observed_data"]["y"].values, nuts.kwargs["y"].numpy())
    pytest.importorskip("h5netcdf")
    dt.to_netcdf(tmp_path / "posterior.nc")
    back = xr.open_datatree(tmp_path / "posterior.nc")
    np.testing.assert_allclose(back["posterior"]["alpha"].values, nuts.chains["alpha"].numpy())


# --- predicting from a run of a model edited since (Model.predict_run, bdl predict) ---

REG = """\
model Reg(x: real[N, 1], y: real[N], xn: real[M, 1], yn: real[M]?) {
  f = mlp(1, 8, 1)
  param s: real = 0.0
  y ~ Normal(f(x)[:, 0], exp(s))
  yn ~ Normal(f(xn)[:, 0], exp(s))
}
"""


@pytest.fixture(scope="module")
def reg_run(tmp_path_factory):
    """A fitted network regression saved as a run folder, and new data for it."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 1))
    data = {"x": x.tolist(), "y": np.sin(2 * x[:, 0]).tolist(), "xn": [[0.0]]}
    folder = tmp_path_factory.mktemp("reg") / "run"
    ppl.compile(REG, "reg.bdl").fit(data, "map(steps=30, lr=0.05)", seed=0).save(folder)
    return folder, {**data, "xn": [[2.0]]}


def test_predict_run_uses_the_saved_network_weights(reg_run):
    import torch

    folder, new = reg_run
    pred = ppl.compile(REG, "reg.bdl").predict_run(folder, new, seed=0)["yn"][:, 0]
    p = torch.load(folder / "params.pt")
    f2 = p["f$$$net.2.weight"] @ torch.tanh(p["f$$$net.0.weight"] * 2.0
                                            + p["f$$$net.0.bias"][:, None]) + p["f$$$net.2.bias"]
    # yn | xn=2 is f(2) plus noise of sd exp(s): its mean is the saved network's f(2)
    # within 4 standard errors (freshly initialised weights would be far off)
    assert abs(pred.mean().item() - f2.item()) < 4 * pred.std().item() / len(pred) ** 0.5
    assert abs(pred.std().item() - torch.exp(p["s"]).item()) < 0.1 * torch.exp(p["s"]).item()


@pytest.mark.parametrize("edit, message", [
    # the network renamed: none of its weights were saved
    (("f = mlp(1, 8, 1)", "g = mlp(1, 8, 1)"),
     "network 'g' has no saved weights (4 tensors)"),
    # another hidden size: three saved weights have other shapes (the output bias not)
    (("mlp(1, 8, 1)", "mlp(1, 4, 1)"),
     "network 'f' has 3 weights of another shape (net.0.weight: [8, 1] in the run, [4, 1] "
     "here, ...)"),
    # a param added
    (("param s: real = 0.0", "param s: real = 0.0\n  param t: real = 1.0"),
     "param 't' has no saved value"),
])
def test_predict_run_refuses_a_changed_model_whose_params_were_not_fitted(reg_run, edit,
                                                                          message):
    from ppl.io.run_folder import RunFolderError

    folder, new = reg_run
    src = REG.replace(*edit).replace("f(x", "g(x" if "g =" in edit[1] else "f(x")
    with pytest.raises(RunFolderError) as e:
        ppl.compile(src, "reg.bdl").predict_run(folder, new, seed=0)
    assert str(e.value) == (
        f"reg.bdl has changed since the run in {folder}, and the run's fitted parameters "
        f"do not fit it: {message}. Predicting would start those from fresh, untrained "
        "values; re-run 'bdl run' on reg.bdl to fit the model as it is now")


def test_predict_run_keeps_a_change_that_every_saved_param_still_fits(reg_run):
    folder, new = reg_run
    edited = ppl.compile(REG.replace("yn ~ Normal(f(xn)[:, 0], exp(s))",
                                     "yn ~ Normal(f(xn)[:, 0] + 100, exp(s))"), "reg.bdl")
    with pytest.warns(UserWarning, match="has changed since the run"):
        shifted = edited.predict_run(folder, new, seed=0)["yn"]
    same = ppl.compile(REG, "reg.bdl").predict_run(folder, new, seed=0)["yn"]
    # the same seed and weights: exactly the edit's shift
    np.testing.assert_allclose((shifted - same).numpy(), 100.0, atol=1e-6)


def test_params_problems_names_each_network_once():
    import torch

    from ppl.infer.predict import params_problems

    saved = {"g$$$a": torch.zeros(2), "g$$$b": torch.zeros(3), "g$$$c": torch.zeros(1),
             "AutoNormal.locs.z": torch.zeros(1)}
    # a guide's params are not the model's; a weight the network lacks now is another
    # architecture (martingale_np's weights read by a cnp)
    assert params_problems({"g$$$a": (2,), "g$$$b": (3,)}, saved) == [
        "network 'g' of the run has 1 weight this one does not (c): another architecture"]
    assert params_problems({"g$$$a": (2,), "g$$$b": (3,), "g$$$c": (1,)}, saved) == []
    assert params_problems({"g$$$a": (2,), "g$$$b": (3,), "g$$$c": (1,), "g$$$d": (1,),
                            "z": ()}, saved) == [
        "network 'g' has 1 weight the run did not save (d)", "param 'z' has no saved value"]


def test_predict_run_refuses_a_construct_given_a_new_option(tmp_path):
    src = ("model D(pixels: real[N, 4], label: int[N]?) {\n"
           "  m = monotone_dbm(visible=categorical(4, 2), hidden=[categorical(3, 2)],\n"
           "                   label=categorical(1, 3), margin=0.01)\n"
           "  pixels ~ m.visible\n  label ~ m.label\n}\n")
    pixels = np.random.default_rng(0).integers(0, 2, size=(6, 4)).astype(float).tolist()
    ppl.compile(src, "d.bdl").fit({"pixels": pixels, "label": [0, 1, 2, 0, 1, 2]},
                                  "map(steps=2)", seed=0).save(tmp_path / "run")
    gain = ppl.compile(src.replace("margin=0.01", "margin=0.01, evidence_gain=4"), "d.bdl")
    with pytest.raises(ValueError, match=r"do not fit it: network 'm' has 1 weight the run "
                                         r"did not save \(gain_visible\)\. "):
        gain.predict_run(tmp_path / "run", {"pixels": pixels}, seed=0)
